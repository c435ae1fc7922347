"""The warehouse's tables: one SQLAlchemy metadata, migrated together (``flightdeck init``, :func:`migrate`)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

catalog = sa.Table(
    "fd_catalog", metadata,
    sa.Column("spec_name", sa.String(64), primary_key=True),
    sa.Column("batch_id", sa.String(64), primary_key=True, comment="sha256 of the delivered file"),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("file_name", sa.String(512), nullable=False),
    sa.Column("source_uri", sa.Text, nullable=False),
    sa.Column("raw_uri", sa.Text, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("batch_date", sa.String(10)),
    sa.Column("spec_version", sa.String(32), nullable=False),
    sa.Column("schema_json", sa.Text),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ingested_at", sa.DateTime(timezone=True)),
    sa.Column("dag_id", sa.String(250)),
    sa.Column("run_id", sa.String(250)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("rows_in", sa.BigInteger),
    sa.Column("rows_accepted", sa.BigInteger),
    sa.Column("rows_quarantined", sa.BigInteger),
    sa.Column("staged_uri", sa.Text),
    sa.Column("profile_uri", sa.Text),
    sa.Column("validation_uri", sa.Text),
    sa.Column("validation_success", sa.Boolean),
    sa.Column("curated_at", sa.DateTime(timezone=True)),
    sa.Index("ix_fd_catalog_run", "spec_name", "run_id"),
    sa.Index("ix_fd_catalog_status", "spec_name", "status"),
)

deliveries = sa.Table(
    "fd_deliveries", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("spec_name", sa.String(64), nullable=False),
    sa.Column("file_name", sa.String(512), nullable=False),
    sa.Column("source_uri", sa.Text, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(250)),
    sa.Column("outcome", sa.String(16), nullable=False, comment="new | duplicate"),
    sa.Index("ix_fd_deliveries_sha", "spec_name", "sha256"),
)

quarantine = sa.Table(
    "fd_quarantine", metadata,
    sa.Column("spec_name", sa.String(64), primary_key=True),
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("row_number", sa.BigInteger, primary_key=True, comment="1-based data row in the file"),
    sa.Column("reason", sa.String(32), primary_key=True),
    sa.Column("column_name", sa.String(512), primary_key=True, comment="column, or the key columns joined by ','"),
    sa.Column("entity_key", sa.Text),
    sa.Column("value", sa.Text),
    sa.Column("payload", sa.Text, comment="the row as delivered, JSON, PII pseudonymised"),
    sa.Column("run_id", sa.String(250)),
    sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=False),
)

dataset_versions = sa.Table(
    "fd_dataset_versions", metadata,
    sa.Column("spec_name", sa.String(64), primary_key=True),
    sa.Column("version_id", sa.String(64), primary_key=True, comment="hash of the split contents"),
    sa.Column("run_id", sa.String(250)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("manifest_uri", sa.Text, nullable=False),
    sa.Column("train_rows", sa.BigInteger),
    sa.Column("validation_rows", sa.BigInteger),
    sa.Column("test_rows", sa.BigInteger),
    sa.Column("train_end", sa.DateTime(timezone=True)),
    sa.Column("validation_end", sa.DateTime(timezone=True)),
    sa.Column("test_end", sa.DateTime(timezone=True)),
)


test_evidence = sa.Table(
    "fd_test_evidence", metadata,
    sa.Column("model_name", sa.String(250), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True, comment="'' for evidence about a code version"),
    sa.Column("test_id", sa.String(16), primary_key=True, comment="ML Test Score id, e.g. data_1, infra_7"),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("section", sa.String(16), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False, comment="automated | manual"),
    sa.Column("outcome", sa.String(16), nullable=False, comment="pass | fail | not_run | error"),
    sa.Column("metrics", sa.Text, comment="JSON"),
    sa.Column("threshold", sa.Text, comment="JSON"),
    sa.Column("artifact_uri", sa.Text),
    sa.Column("detail", sa.Text),
    sa.Column("dag_id", sa.String(250)),
    sa.Column("run_type", sa.String(32), comment="scheduled | asset_triggered | manual | backfill | ci | attestation"),
    sa.Column("code_version", sa.String(64)),
    sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_fd_test_evidence_code", "model_name", "code_version", "test_id"),
)

gate_results = sa.Table(
    "fd_gate_results", metadata,
    sa.Column("model_name", sa.String(250), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("gate", sa.String(32), primary_key=True),
    sa.Column("hard", sa.Boolean, nullable=False),
    sa.Column("passed", sa.Boolean, nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("threshold", sa.Float),
    sa.Column("detail", sa.Text),
    sa.Column("figures", sa.Text, comment="JSON"),
    sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
)

promotions = sa.Table(
    "fd_promotions", metadata,
    sa.Column("model_name", sa.String(250), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True, comment="gate run id, or rollback-<timestamp>"),
    sa.Column("action", sa.String(16), primary_key=True, comment="promote | reject | rollback"),
    sa.Column("spec_name", sa.String(64), nullable=False),
    sa.Column("decided_by", sa.String(250), nullable=False, comment="dag_id/run_id, or the user"),
    sa.Column("previous_champion", sa.String(32)),
    sa.Column("ml_test_score", sa.Float),
    sa.Column("sections", sa.Text, comment="JSON: section -> score"),
    sa.Column("gates", sa.Text, comment="JSON: gate -> passed, value, threshold"),
    sa.Column("reasons", sa.Text),
    sa.Column("report_uri", sa.Text),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
)

shadow_predictions = sa.Table(
    "fd_shadow_predictions", metadata,
    sa.Column("model_name", sa.String(250), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("row_id", sa.BigInteger, primary_key=True, comment="position in the canary sample"),
    sa.Column("entity_key", sa.Text, nullable=False, comment="JSON of the spec's entity key"),
    sa.Column("score", sa.Float),
    sa.Column("champion_version", sa.String(32)),
    sa.Column("champion_score", sa.Float),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
)


monitoring_metrics = sa.Table(
    "fd_monitoring_metrics", metadata,
    sa.Column("spec_name", sa.String(64), primary_key=True),
    sa.Column("check_name", sa.String(32), primary_key=True,
              comment="invariants | drift | score_drift | skew | stability | staleness | performance | "
                      "dependencies | decay"),
    sa.Column("metric", sa.String(64), primary_key=True, comment="e.g. psi, ks, roc_auc, rows_per_s"),
    sa.Column("subject", sa.String(250), primary_key=True, comment="feature, slice (column=value), or '' for all"),
    sa.Column("partition_date", sa.String(10), primary_key=True,
              comment="the scored partition, or the as-of date of a run-level check"),
    sa.Column("window", sa.String(16), primary_key=True, comment="partition | rolling | run"),
    sa.Column("value", sa.Float),
    sa.Column("threshold", sa.Float),
    sa.Column("status", sa.String(16), nullable=False, comment="ok | warn | alert | no_labels | insufficient | error"),
    sa.Column("rows", sa.BigInteger, comment="rows the figure is computed on"),
    sa.Column("model_name", sa.String(250)),
    sa.Column("model_version", sa.String(32)),
    sa.Column("run_id", sa.String(250), nullable=False, comment="the monitoring run that measured it"),
    sa.Column("detail", sa.Text),
    sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_fd_monitoring_metrics_run", "spec_name", "run_id"),
    sa.Index("ix_fd_monitoring_metrics_check", "spec_name", "check_name", "partition_date"),
)

label_orphans = sa.Table(
    "fd_label_orphans", metadata,
    sa.Column("spec_name", sa.String(64), primary_key=True),
    sa.Column("partition_date", sa.String(10), primary_key=True),
    sa.Column("entity_key", sa.Text, primary_key=True, comment="JSON of the spec's entity key"),
    sa.Column("reason", sa.String(16), primary_key=True, comment="unknown_key | duplicate"),
    sa.Column("occurrences", sa.Integer, nullable=False, comment="times the key was delivered"),
    sa.Column("batch_ids", sa.Text, comment="JSON list of the labels batches that carried it"),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)

retraining = sa.Table(
    "fd_retraining", metadata,
    sa.Column("spec_name", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True, comment="the monitoring run that decided"),
    sa.Column("as_of", sa.String(10), nullable=False, comment="the data date the decision is about"),
    sa.Column("action", sa.String(16), nullable=False, comment="retrain | cooldown"),
    sa.Column("reasons", sa.Text, nullable=False, comment="JSON list of {check, metric, subject, value, threshold}"),
    sa.Column("model_version", sa.String(32), comment="the champion that was watched"),
    sa.Column("cooldown_until", sa.String(10)),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
)

fingerprints = sa.Table(
    "fd_fingerprints", metadata,
    sa.Column("spec_name", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("kind", sa.String(128), primary_key=True, comment="packages | schema:<source>"),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("content", sa.Text, nullable=False, comment="JSON: package -> version, or column -> type"),
    sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
)

scoring_runs = sa.Table(
    "fd_scoring_runs", metadata,
    sa.Column("spec_name", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True, comment="the scoring (Airflow) run id"),
    sa.Column("partition_date", sa.String(10), primary_key=True),
    sa.Column("predictions_table", sa.String(64), nullable=False),
    sa.Column("model_name", sa.String(250)),
    sa.Column("model_version", sa.String(32)),
    sa.Column("status", sa.String(16), nullable=False, comment="running | published | failed | invalid"),
    sa.Column("rows", sa.BigInteger),
    sa.Column("unknown_categories", sa.Text, comment="JSON: feature -> values the model never saw"),
    sa.Column("input_uri", sa.Text),
    sa.Column("input_fingerprint", sa.String(128)),
    sa.Column("details", sa.Text, comment="JSON: threshold, prior, history, validation"),
    sa.Column("error", sa.Text),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Index("ix_fd_scoring_runs_partition", "spec_name", "partition_date"),
)

serving_requests = sa.Table(
    "fd_serving_requests", metadata,
    sa.Column("request_id", sa.String(128), primary_key=True, comment="generated, or the client's X-Request-ID"),
    sa.Column("row_number", sa.Integer, primary_key=True, comment="1-based row of the request; 0: a rejected request"),
    sa.Column("spec_name", sa.String(64), nullable=False),
    sa.Column("endpoint", sa.String(32), nullable=False, comment="/predict | /invocations | queue"),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("input_hash", sa.String(64), nullable=False,
              comment="sha256 of the row as canonical JSON (sorted keys); of the whole body when rejected"),
    sa.Column("model_version", sa.String(32), comment="the version that scored the row (none when rejected)"),
    sa.Column("entity_key", sa.Text, comment="JSON of the spec's entity key"),
    sa.Column("score", sa.Float),
    sa.Column("label", sa.SmallInteger),
    sa.Column("latency_ms", sa.Float, nullable=False, comment="the whole request, received to answered"),
    sa.Column("status", sa.String(16), nullable=False, comment="ok | invalid | unavailable | error"),
    sa.Column("error", sa.Text),
    sa.Index("ix_fd_serving_requests_spec", "spec_name", "received_at"),
)
