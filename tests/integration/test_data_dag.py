"""The data DAG on a few days of real flights, through Airflow's dag.test()."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.slow


def test_data_dag_ingests_replayed_days_and_publishes_splits(airflow_db, home, dags, flights_spec):
    from flightdeck.core import warehouse
    from flightdeck.core.settings import Settings
    from flightdeck.core.storage import open_store
    from flightdeck.data import replay

    settings = Settings.from_env()
    landed = replay.replay(flights_spec, open_store(settings.landing_uri), date(2013, 3, 1), date(2013, 3, 4))
    run = dags["flights_data"].test()
    assert run.state == "success", [(ti.task_id, ti.state) for ti in run.get_task_instances()]

    engine = warehouse.connect(settings.warehouse_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(warehouse.catalog.c.status, warehouse.catalog.c.rows_in,
                                      warehouse.catalog.c.rows_accepted,
                                      warehouse.catalog.c.rows_quarantined)).all()
        versions = conn.execute(sa.select(warehouse.dataset_versions)).mappings().all()
    assert len(rows) == len(landed) == 8
    assert {r.status for r in rows} == {"curated"}
    assert all(r.rows_in == r.rows_accepted + r.rows_quarantined for r in rows)
    assert sum(r.rows_in for r in rows) == 2 * sum(d.rows for d in landed if d.source == "schedule")
    assert len(versions) == 1 and versions[0]["train_rows"] > versions[0]["validation_rows"] > 0
    lake = Path(settings.lake_uri)
    assert len(list((lake / "raw" / "flights").rglob("*.csv"))) == 8
    assert len(list((lake / "curated" / "flights").glob("batch_date=*/data.parquet"))) == 4
    assert not list((Path(settings.landing_uri) / "flights").glob("*.csv")), "landed files archived"


def test_second_use_case_runs_from_its_spec_alone(airflow_db, home, dags):
    """weather.yaml has no code of its own: its DAG is generated and runs end to end."""
    from flightdeck.core import warehouse
    from flightdeck.core.settings import Settings
    from flightdeck.core.spec import load_spec
    from flightdeck.core.storage import open_store
    from flightdeck.data import replay

    settings = Settings.from_env()
    spec = load_spec(settings.specs_dir / "weather.yaml")
    landed = replay.replay(spec, open_store(settings.landing_uri), date(2013, 7, 1), date(2013, 7, 3))
    run = dags["weather_data"].test()
    assert run.state == "success", [(ti.task_id, ti.state) for ti in run.get_task_instances()]
    batches = warehouse.list_batches(warehouse.connect(settings.warehouse_url), "weather")
    assert len(batches) == len(landed) == 6
    assert {b["status"] for b in batches} == {"curated"}
    assert all(b["rows_in"] == b["rows_accepted"] + b["rows_quarantined"] for b in batches)
