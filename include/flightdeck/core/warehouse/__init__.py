"""The warehouse database: catalog, deliveries, quarantine, dataset versions, the gates' and monitoring's records.

SQLite by default, any SQLAlchemy URL (e.g. ``postgresql+psycopg://...``) otherwise.
Tables are created by ``flightdeck init`` (and brought up to date whenever a process first
opens the warehouse: :func:`migrate`); they only ever gain columns. Values always travel as
bound parameters. Every SQL statement of FlightDeck lives here or in
:mod:`flightdeck.serving.predictions` (the prediction store).

- :mod:`.schema`: the tables;
- :mod:`.store`: connecting, migrating, and the writes and generic reads;
- :mod:`.queries`: the named reads the stages and apps need;
- :mod:`.pages`: the reads behind the FlightDeck pages of the Airflow UI.
"""

from flightdeck.core.warehouse import pages, queries
from flightdeck.core.warehouse.schema import (
    catalog,
    dataset_versions,
    deliveries,
    fingerprints,
    gate_results,
    label_orphans,
    metadata,
    monitoring_metrics,
    promotions,
    quarantine,
    retraining,
    scoring_runs,
    serving_requests,
    shadow_predictions,
    test_evidence,
)
from flightdeck.core.warehouse.store import (
    connect,
    create_databases,
    drop_databases,
    fetch_all,
    fetch_first,
    fetch_scalar,
    get_batch,
    list_batches,
    migrate,
    now,
    quarantine_counts,
    record_dataset_version,
    record_delivery,
    record_serving_requests,
    record_serving_requests_once,
    replace_quarantine,
    replace_rows,
    select_rows,
    to_json,
    update_batch,
    upsert_batch,
)

__all__ = [
    "catalog", "connect", "create_databases", "dataset_versions", "deliveries", "drop_databases", "fetch_all",
    "fetch_first", "fetch_scalar", "fingerprints", "gate_results", "get_batch", "label_orphans", "list_batches",
    "metadata", "migrate", "monitoring_metrics", "now", "pages", "promotions", "quarantine",
    "quarantine_counts", "queries", "record_dataset_version", "record_delivery", "record_serving_requests",
    "record_serving_requests_once",
    "replace_quarantine", "replace_rows", "retraining", "scoring_runs", "select_rows", "serving_requests",
    "shadow_predictions", "test_evidence", "to_json", "update_batch", "upsert_batch",
]
