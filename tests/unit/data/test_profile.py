"""Profiles of frames and of chunks: counts, missing shares, top values, correlations (pure functions)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from flightdeck.data import profile


# ---------------------------------------------------------------- profile
def test_profile_frame_counts_missing_top_values_and_label_correlation():
    frame = pd.DataFrame(
        {
            "distance": [100.0, 200.0, np.nan, 400.0, 500.0],
            "carrier": ["UA", "UA", "B6", None, "UA"],
            "late": [0, 0, 1, 1, 1],
            "early": [1, 1, 0, 0, 0],
            "_row_number": [1, 2, 3, 4, 5],
        }
    )
    prof = profile.profile_frame(frame, label="late")

    assert prof["rows"] == 5
    assert set(prof["columns"]) == {"distance", "carrier", "late", "early"}, (
        "internal _columns are skipped"
    )
    dist = prof["columns"]["distance"]
    assert (dist["count"], dist["missing"], dist["missing_ratio"]) == (5, 1, 0.2)
    assert (dist["min"], dist["max"], dist["median"], dist["type_class"]) == (
        100.0,
        500.0,
        300.0,
        "numeric",
    )
    carrier = prof["columns"]["carrier"]
    assert carrier["type_class"] == "categorical" and carrier["distinct"] == 2
    assert carrier["top_values"] == [{"value": "UA", "count": 3}, {"value": "B6", "count": 1}]
    assert prof["label"] == {"name": "late", "positive_rate": 0.6}
    assert prof["label_correlations"]["early"] == -1.0
    assert 0 < prof["label_correlations"]["distance"] < 1



def test_profile_of_chunks_matches_profile_of_whole_frame():
    """Streaming the profile chunk by chunk gives the same exact statistics as one pass."""
    from flightdeck.data.profile import profile_chunks, profile_frame

    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"x": rng.normal(10, 2, 3000), "y": rng.integers(0, 50, 3000).astype("float64"),
                          "c": rng.choice(["a", "b", "c"], 3000), "label": rng.integers(0, 2, 3000)})
    frame.loc[::7, "x"] = np.nan
    whole = profile_frame(frame, label="label")
    chunked = profile_chunks((frame.iloc[i:i + 700] for i in range(0, 3000, 700)), label="label")
    assert chunked["rows"] == whole["rows"] == 3000
    for col in ("x", "y", "c"):
        a, b = whole["columns"][col], chunked["columns"][col]
        for key in ("count", "missing", "distinct", "min", "max", "top_values", "median", "p01", "p99"):
            assert a.get(key) == b.get(key), (col, key)
        for key in ("mean", "std"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-9)
    assert chunked["correlations"]["x"]["y"] == pytest.approx(whole["correlations"]["x"]["y"], abs=1e-6)
    assert chunked["label_correlations"]["x"] == pytest.approx(frame["x"].corr(frame["label"]), abs=1e-6)


def test_sorted_unique_is_numpy_unique_on_key_hashes():
    """The sort-based distinct count gives np.unique's sorted distinct values, repeats included."""
    import numpy as np
    from flightdeck.data.profile import sorted_unique

    hashes = np.random.default_rng(0).integers(0, 2**63, 50_000, dtype=np.uint64)
    hashes = np.concatenate([hashes, hashes[:700], np.empty(0, np.uint64)])
    assert np.array_equal(sorted_unique(hashes), np.unique(hashes))
    assert sorted_unique(np.empty(0, np.uint64)).size == 0
