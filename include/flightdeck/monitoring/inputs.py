"""What the checks read: published prediction partitions, their scores and samples, the curated
rows they were scored from, and the models that scored them (one load per version).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from flightdeck.core import lake
from flightdeck.core.context import StageContext
from flightdeck.serving import predictions
from flightdeck.serving.champion import ServingModel, load_serving_model

REFERENCE_ROWS = 20_000


DRIFT_ROWS = 100_000


def published_partitions(ctx: StageContext) -> dict[str, dict[str, Any]]:
    """Partition -> the scoring run row that published what the predictions table holds now."""
    return predictions.latest_published(ctx.engine, ctx.name)


def read_predictions(ctx: StageContext, partition: str) -> pd.DataFrame:
    """The published predictions of one partition: the entity key, score, label, version, feature hash."""
    return predictions.partition_rows(ctx.engine, ctx.spec, partition)


def read_scores(ctx: StageContext, partition: str) -> np.ndarray:
    """Only the published scores of one partition (what stability and score drift need)."""
    return predictions.partition_scores(ctx.engine, ctx.spec, partition)


def read_prediction_sample(ctx: StageContext, partition: str, rows: int) -> pd.DataFrame:
    """A deterministic sample of ``rows`` published rows (:func:`flightdeck.serving.predictions.partition_sample`)."""
    return predictions.partition_sample(ctx.engine, ctx.spec, partition, rows)


def read_curated(ctx: StageContext, partition: str) -> pd.DataFrame | None:
    key = lake.curated(ctx.name, partition)
    if not ctx.lake.exists(key):
        return None
    return lake.read_parquet(ctx.lake, key, ctx.workdir)


def key_frame(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Entity-key columns as strings, so keys typed differently by each store compare equal."""
    out = pd.DataFrame(index=frame.index)
    for k in keys:
        values = frame[k]
        if pd.api.types.is_datetime64_any_dtype(values):
            out[k] = pd.to_datetime(values, utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S")
        elif pd.api.types.is_float_dtype(values) and values.dropna().eq(values.dropna().round()).all():
            out[k] = values.astype("Int64").astype(str)
        else:
            out[k] = values.astype(str)
    return out


class ModelCache:
    """Serving models by version, loaded once per monitoring run (also versions no longer promoted)."""

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self._models: dict[str, ServingModel] = {}

    def get(self, version: str) -> ServingModel:
        if version not in self._models:
            self._models[version] = load_serving_model(self.ctx.spec, self.ctx.settings, version=version,
                                                       pii_key=self.ctx.pii_key, workdir=self.ctx.workdir,
                                                       require_promoted=False)
        return self._models[version]

