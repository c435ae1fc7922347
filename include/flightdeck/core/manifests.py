"""What each task pushes to XCom: small JSON-able manifests (counts, ids, URIs; never data).

The stage runners return these and the operators push them unchanged, so a DAG's
downstream task (and a person reading the task's XCom in the UI) can rely on the keys.
"""

from __future__ import annotations

from typing import Any, TypedDict


class IngestManifest(TypedDict):
    """``ingest``: landed files claimed, and what became of their rows."""

    spec: str
    run_id: str
    claimed: int
    duplicates: list[str]
    batches: int
    rejected: int
    rows_in: int
    rows_accepted: int
    rows_quarantined: int


class ProfileManifest(TypedDict):
    spec: str
    run_id: str
    profiled: int


class ValidateManifest(TypedDict):
    """``validate``: batches that passed their hard expectations, and warnings raised."""

    spec: str
    run_id: str
    validated: int
    warnings: int


class CurateManifest(TypedDict):
    """``wrangle``: curated partitions (re)written, their rows and how many carry a label."""

    spec: str
    run_id: str
    partitions: int
    rows: int
    labelled: int


class DatasetManifest(TypedDict):
    """``split``: the published dataset version and its split sizes."""

    spec: str
    version_id: str
    manifest_uri: str
    train_rows: int
    validation_rows: int
    test_rows: int


class TrainManifest(TypedDict):
    """``train``: the MLflow run of the chosen model and what it was trained on."""

    spec: str
    mlflow_run_id: str
    model_uri: str
    chosen: str
    dataset_version: str
    window: list[str | None]
    features: list[str]
    prediction_fingerprint: str
    trigger: str
    validation: dict[str, float]
    test: dict[str, float]
    training_window: list[str]


class RegisterManifest(TypedDict):
    """``register``: the registered version and the alias it got."""

    spec: str
    registered_model: str
    version: str
    alias: str
    mlflow_run_id: str


class ScoreManifest(TypedDict):
    """``score`` (one mapped task per partition): what was published with which version."""

    spec: str
    partition: str
    rows: int
    empty: bool
    model_version: str
    model_uri: str
    table: str
    unknown_categories: dict[str, int]
    timings: dict[str, float]
    validation: dict[str, Any]


class MonitorManifest(TypedDict):
    """``monitor``: figure counts by status, the alerts (at most 50) and the evidence recorded."""

    spec: str
    run_id: str
    as_of: str
    champion: str | None
    partitions: dict[str, list[str]]
    figures: int
    status: dict[str, int]
    alerts: list[dict[str, Any]]
    errors: dict[str, str]
    evidence: list[dict[str, Any]]
