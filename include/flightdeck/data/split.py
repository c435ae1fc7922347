"""Time-based splitting with a leakage check; the test split is the frozen holdout."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flightdeck.core.errors import Rejected
from flightdeck.core.spec import DatasetSpec

SPLITS = ("train", "validation", "test")


class LeakageError(Rejected, ValueError):
    """The splits would leak information between each other or from the target."""


def time_split(frame: pd.DataFrame, event_time: str, ratios: tuple[float, float, float]) -> dict[str, pd.DataFrame]:
    """Split by event time so that every validation row is later than every training row, and so on.

    Boundaries fall between distinct timestamps, so no timestamp is in two splits; each
    split gets about its ratio of rows.
    """
    if frame.empty:
        raise ValueError("nothing to split: no labelled rows")
    ts = frame[event_time]
    counts = ts.value_counts().sort_index()
    if len(counts) < 3:
        raise ValueError(f"need at least 3 distinct {event_time} values to split, got {len(counts)}")
    share = counts.cumsum().to_numpy() / len(frame)
    times = counts.index
    first_cut = min(int(np.searchsorted(share, ratios[0])) + 1, len(times) - 2)
    second_cut = min(max(int(np.searchsorted(share, ratios[0] + ratios[1])) + 1, first_cut + 1), len(times) - 1)
    b1, b2 = times[first_cut], times[second_cut]
    return {"train": frame[ts < b1], "validation": frame[(ts >= b1) & (ts < b2)], "test": frame[ts >= b2]}


def check_leakage(splits: dict[str, pd.DataFrame], spec: DatasetSpec) -> list[str]:
    """Problems that would leak: shared keys, overlapping time ranges, target-derived features."""
    problems = []
    key = list(spec.entity_key)
    hashed = {n: set(pd.util.hash_pandas_object(s[key], index=False)) for n, s in splits.items()}
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        shared = len(hashed[a] & hashed[b])
        if shared:
            problems.append(f"{shared} entity keys appear in both {a} and {b}")
        if not splits[a].empty and not splits[b].empty:
            if splits[a][spec.event_time].max() >= splits[b][spec.event_time].min():
                problems.append(f"{a} and {b} overlap in {spec.event_time}")
    forbidden = set(spec.leakage_columns) | {spec.target.column, spec.target.name}
    bad = sorted(forbidden & set(spec.features))
    if bad:
        problems.append(f"target-derived columns among features: {bad}")
    train = splits["train"]
    y = train[spec.target.name].astype("float64")
    if y.nunique() > 1:
        for feature in (f for f in spec.features if f in train.columns):  # joined/history ones come later
            col = train[feature]
            if pd.api.types.is_numeric_dtype(col) and col.nunique() > 1:
                corr = abs(col.astype("float64").corr(y))
                if corr > 0.95:
                    problems.append(f"feature {feature!r} correlates {corr:.3f} with the target: leakage?")
    return problems
