"""Time splits that never share a timestamp, and the leakage checks on them (pure functions)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from flightdeck.data import split


# ---------------------------------------------------------------- time_split and leakage
def _times(n_hours: int) -> pd.Series:
    """1 to 4 rows per hour over ``n_hours`` hours, so timestamps repeat."""
    hours = pd.date_range("2013-03-01 10:00", periods=n_hours, freq="h", tz="UTC")
    return pd.Series(np.repeat(hours, [1 + i % 4 for i in range(n_hours)]))


def test_time_split_never_puts_one_timestamp_in_two_splits_and_respects_ratios():
    frame = pd.DataFrame({"time_hour": _times(200)})
    frame["row"] = range(len(frame))
    splits = split.time_split(frame, "time_hour", (0.8, 0.1, 0.1))

    assert sum(len(s) for s in splits.values()) == len(frame)
    stamps = {n: set(s["time_hour"]) for n, s in splits.items()}
    assert not stamps["train"] & stamps["validation"] and not stamps["validation"] & stamps["test"]
    assert splits["train"]["time_hour"].max() < splits["validation"]["time_hour"].min()
    assert splits["validation"]["time_hour"].max() < splits["test"]["time_hour"].min()
    for name, ratio in zip(split.SPLITS, (0.8, 0.1, 0.1), strict=True):
        assert abs(len(splits[name]) / len(frame) - ratio) < 0.02, (name, len(splits[name]))


def test_time_split_needs_three_distinct_timestamps():
    frame = pd.DataFrame({"time_hour": _times(2)})
    with pytest.raises(ValueError, match="at least 3 distinct"):
        split.time_split(frame, "time_hour", (0.8, 0.1, 0.1))


def _flights(n: int, seed: int = 0) -> pd.DataFrame:
    """A curated-looking frame: unique keys, one flight per hour, random features and label."""
    rng = np.random.default_rng(seed)
    ts = pd.Series(pd.date_range("2013-03-01 10:00", periods=n, freq="h", tz="UTC"))
    return pd.DataFrame(
        {
            "year": 2013,
            "month": 3,
            "day": 1,
            "carrier": "UA",
            "flight": np.arange(1, n + 1),
            "origin": "JFK",
            "sched_dep_time": 1000,
            "time_hour": ts,
            "sched_arr_time": rng.integers(0, 2359, n),
            "dest": rng.choice(["IAH", "ORD", "MIA"], n),
            "distance": rng.uniform(100, 2500, n),
            "hour": rng.integers(5, 23, n),
            "dep_weekday": rng.integers(0, 7, n),
            "day_of_year": rng.integers(1, 365, n),
            "tailnum": [f"p_{i}" for i in range(n)],
            "departed_late": pd.array(rng.integers(0, 2, n), dtype="Int8"),
        }
    )


@pytest.fixture
def clean_splits() -> dict[str, pd.DataFrame]:
    return split.time_split(_flights(300), "time_hour", (0.8, 0.1, 0.1))


def test_check_leakage_finds_nothing_in_clean_time_splits(flights_spec, clean_splits):
    """Control: independent random features, disjoint keys and times give no problems."""
    assert split.check_leakage(clean_splits, flights_spec) == []


def test_check_leakage_detects_an_entity_key_shared_between_splits(flights_spec, clean_splits):
    again = (
        clean_splits["train"]
        .iloc[[0]]
        .assign(time_hour=clean_splits["test"]["time_hour"].max() + pd.Timedelta(hours=1))
    )
    splits = {**clean_splits, "test": pd.concat([clean_splits["test"], again], ignore_index=True)}
    assert split.check_leakage(splits, flights_spec) == [
        "1 entity keys appear in both train and test"
    ]


def test_check_leakage_detects_overlapping_time_ranges(flights_spec, clean_splits):
    late = clean_splits["train"].copy()
    late.loc[late.index[-1], "time_hour"] = clean_splits["validation"]["time_hour"].max()
    problems = split.check_leakage({**clean_splits, "train": late}, flights_spec)
    assert "train and validation overlap in time_hour" in problems


def test_check_leakage_detects_a_feature_equal_to_the_target(flights_spec, clean_splits):
    train = clean_splits["train"].copy()
    train["distance"] = train["departed_late"].astype("float64")
    problems = split.check_leakage({**clean_splits, "train": train}, flights_spec)
    assert problems == ["feature 'distance' correlates 1.000 with the target: leakage?"]
