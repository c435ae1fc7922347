"""Drift (Monitor 4-5 inputs): each feature and the score of a serving partition against the
champion's training reference, PSI with a KS or chi-squared test.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from flightdeck.core import lake
from flightdeck.core.context import StageContext
from flightdeck.data import drift
from flightdeck.monitoring.figures import Figure, status_of
from flightdeck.monitoring.inputs import DRIFT_ROWS, REFERENCE_ROWS
from flightdeck.serving.champion import ServingModel


def reference_sample(ctx: StageContext, model: ServingModel) -> pd.DataFrame:
    """Features and scores of a sample of the version's training split, cached in the lake per version."""
    key = lake.reference(ctx.name, model.version)
    if ctx.lake.exists(key):
        return lake.read_parquet(ctx.lake, key, ctx.workdir)
    dataset = model.resolved.dataset_version
    if dataset is None:
        raise ValueError(f"{model.model_uri} has no flightdeck.data_snapshot tag: its training data is unknown")
    train = lake.read_parquet(ctx.lake, lake.dataset_split(ctx.name, dataset, "train"), ctx.workdir)
    if len(train) > REFERENCE_ROWS:
        train = train.sample(REFERENCE_ROWS, random_state=ctx.spec.training.seed)
    X = model.feature_matrix(train)
    sample = X.copy()
    sample["_score"] = model.predict_matrix(X)
    lake.write_parquet(ctx.lake, key, sample, ctx.workdir)
    return sample


def check_drift(ctx: StageContext, model: ServingModel, curated: pd.DataFrame, scores: np.ndarray,
                partition: str) -> list[Figure]:
    """Drift of every monitored feature and of the scores, against the version's training reference."""
    cfg = ctx.spec.monitoring.drift
    reference = reference_sample(ctx, model)
    if len(curated) > DRIFT_ROWS:  # a uniform sample measures PSI as well and keeps memory flat
        curated = curated.sample(DRIFT_ROWS, random_state=ctx.spec.training.seed)
    current = model.feature_matrix(curated)
    figures = feature_drift_figures("drift", ctx, model, reference, current, partition=partition)
    sd = drift.score_drift(reference["_score"].to_numpy(), scores, bins=cfg.bins, min_rows=cfg.min_rows,
                           psi_alert=ctx.spec.monitoring.score_psi_alert, p_value=cfg.p_value)
    figures.append(Figure("score_drift", "psi", sd.psi, sd.status, ctx.spec.monitoring.score_psi_alert,
                          partition=partition, rows=sd.current_rows, model_version=model.version, detail=sd.to_dict()))
    return figures


def feature_drift_figures(check: str, ctx: StageContext, model: ServingModel, reference: pd.DataFrame,
                          current: pd.DataFrame, partition: str = "",
                          detail: dict[str, Any] | None = None) -> list[Figure]:
    """PSI per monitored feature of ``current`` against ``reference``, and how many features are in alert."""
    cfg = ctx.spec.monitoring.drift
    wanted = list(cfg.features) or model.layout.columns
    numeric = [c for c in model.layout.numeric if c in wanted]
    categorical = [c for c in model.layout.categorical if c in wanted]
    results = drift.feature_drift(reference, current, numeric, categorical, psi_warn=cfg.psi_warn,
                                  psi_alert=cfg.psi_alert, p_value=cfg.p_value, min_rows=cfg.min_rows,
                                  bins=cfg.bins)
    v = model.version
    figures = [Figure(check, "psi", r.psi, r.status, cfg.psi_alert, subject=r.feature, partition=partition,
                      rows=r.current_rows, model_version=v, detail=r.to_dict()) for r in results]
    alerts = [r.feature for r in results if r.status == "alert"]
    judged = [r for r in results if r.status != "insufficient"]
    overall = ("insufficient" if not judged else
               status_of(len(alerts) >= cfg.alert_features, bool(alerts) or any(r.status == "warn" for r in results)))
    figures.append(Figure(check, "features_in_alert", float(len(alerts)), overall, float(cfg.alert_features),
                          partition=partition, rows=len(current), model_version=v,
                          detail={**(detail or {}), "alert": alerts,
                                  "warn": [r.feature for r in results if r.status == "warn"]}))
    return figures
