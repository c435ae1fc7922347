"""The version under judgement: loaded from the registry the way scoring will load it
(``models:/<name>/<version>``), with its lineage, its frozen dataset version rebuilt by the
training feature code, and the champion it is compared with.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flightdeck.core import registry
from flightdeck.core.context import StageContext
from flightdeck.core.errors import Rejected
from flightdeck.core.registry import CHAMPION, PREVIOUS_CHAMPION, alias_version
from flightdeck.training import features
from flightdeck.training import pipeline as training


class GateError(Rejected, RuntimeError):
    """The gates cannot judge (no such version, no challenger...)."""


@dataclass
class Candidate:
    """Everything the checks look at, loaded once per gate run."""

    ctx: StageContext
    name: str
    version: str
    tags: dict[str, str]
    training_run_id: str
    data: training.PreparedData
    layout: features.FeatureLayout
    leaderboard: list[dict[str, Any]]
    out_dir: Path
    model: Any = None
    load_error: str | None = None
    load_seconds: float = 0.0
    proba: dict[str, np.ndarray] = field(default_factory=dict)
    champion_version: str | None = None
    champion_model: Any = None
    champion_layout: features.FeatureLayout | None = None
    champion_error: str | None = None
    champion_test: np.ndarray | None = None
    canary_rows: pd.Index | None = None

    @property
    def spec(self) -> Any:
        return self.ctx.spec

    @property
    def gates(self) -> Any:
        return self.ctx.spec.gates

    def require_model(self) -> Any:
        if self.model is None:
            raise GateError(f"version {self.version} of {self.name} could not be loaded: {self.load_error}")
        return self.model

    def y(self, split: str) -> np.ndarray:
        return self.data.y[split].to_numpy(dtype=int)


def registry_client(ctx: StageContext) -> Any:
    """The MLflow client of the spec's registry (its store made ready first)."""
    return registry.mlflow_client(ctx.settings.mlflow_tracking_uri)


def load_pyfunc(name: str, ref: str) -> Any:
    """Load a registered model as scoring does: ``models:/<name>/<version>`` or ``models:/<name>@<alias>``."""
    import mlflow

    sep = "@" if not ref.isdigit() else "/"
    return mlflow.pyfunc.load_model(f"models:/{name}{sep}{ref}")


def run_json(client: Any, run_id: str, path: str) -> Any:
    import mlflow

    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                tracking_uri=mlflow.get_tracking_uri())
    return json.loads(Path(local).read_text())


def feature_layout(raw: dict[str, list[str]]) -> features.FeatureLayout:
    return features.FeatureLayout(tuple(raw["numeric"]), tuple(raw["categorical"]))


def load_candidate(ctx: StageContext, version: str, out_dir: Path) -> Candidate:
    """Load a version, its lineage and its frozen splits; the champion to compare with, if any."""
    client = registry_client(ctx)
    name = ctx.spec.registered_model_name
    import mlflow

    try:
        mv = client.get_model_version(name, version)
    except mlflow.exceptions.MlflowException as exc:
        raise GateError(f"{name} has no version {version}: {exc}") from None
    tags = dict(mv.tags)
    if "flightdeck.data_snapshot" not in tags:
        raise GateError(f"version {version} of {name} has no flightdeck.data_snapshot tag: not registered by "
                        "the training DAG, so its lineage cannot be checked")
    manifest = training.dataset_manifest(ctx, tags["flightdeck.data_snapshot"])
    window = training.parse_window_tag(tags.get("flightdeck.window_param"))
    data = training.prepare_data(ctx, manifest, window, check=False)
    run_id = mv.run_id or tags.get("flightdeck.training_run_id", "")
    layout = feature_layout(run_json(client, run_id, "evaluation/feature_layout.json"))
    leaderboard = list(run_json(client, run_id, "evaluation/leaderboard.json"))
    cand = Candidate(ctx, name, str(version), tags, run_id, data, layout, leaderboard, out_dir)
    started = time.perf_counter()
    try:
        cand.model = load_pyfunc(name, cand.version)
    except Exception as exc:  # noqa: BLE001 - any load failure is a finding, reported by the canary
        cand.load_error = f"{type(exc).__name__}: {exc}"
    cand.load_seconds = time.perf_counter() - started
    if cand.model is not None:
        for split in ("validation", "test"):
            try:
                X = features.select_features(data.frames[split], layout)
                cand.proba[split] = np.asarray(cand.model.predict(X), dtype=np.float64).reshape(-1)
            except Exception as exc:  # noqa: BLE001 - a model that cannot predict is rejected, not crashed on
                cand.load_error = f"predict on {split} failed: {type(exc).__name__}: {exc}"
                cand.model = None
                break
    champion = alias_version(client, name, CHAMPION)
    if champion == cand.version:  # re-judging the serving version: compare with the one it replaced
        champion = alias_version(client, name, PREVIOUS_CHAMPION)
    cand.champion_version = champion
    if champion is not None:
        try:
            cand.champion_model = load_pyfunc(name, champion)
            ch = client.get_model_version(name, champion)
            cand.champion_layout = feature_layout(run_json(client, ch.run_id, "evaluation/feature_layout.json"))
            X = features.select_features(data.frames["test"], cand.champion_layout)
            scores = np.asarray(cand.champion_model.predict(X), dtype=np.float64).reshape(-1)
            bad = int((~np.isfinite(scores)).sum())
            if bad:
                raise ValueError(f"the champion emits {bad} non-finite scores on this test split")
            cand.champion_test = scores
        except Exception as exc:  # noqa: BLE001 - reported by the regression gate
            cand.champion_error = f"{type(exc).__name__}: {exc}"
    return cand

