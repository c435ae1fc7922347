"""FlightDeck's vectorised expectations give GX's own results, on real flights with failures.

GX validates the same chunks with the same suite (declared + reviewed) for reference; every
per-chunk result and the merged report must be identical, failures included.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flightdeck.data import fast_expectations, validate
from flightdeck.data.replay import load_replay_source

KEY = ["year", "month", "day", "carrier", "flight", "origin", "sched_dep_time"]
CHUNK = 4000


@pytest.fixture(scope="module")
def suite(flights_spec) -> list[dict[str, Any]]:
    return validate.load_expectations(flights_spec, "schedule")


@pytest.fixture(scope="module")
def broken_flights(flights_spec) -> pd.DataFrame:
    """16,000 real schedule rows, typed as staged, with failures of every kind in several chunks."""
    raw = load_replay_source(flights_spec)[list(flights_spec.features_source.columns)].iloc[:16000]
    frame = raw.copy().reset_index(drop=True)
    for name, col in flights_spec.features_source.columns.items():
        if col.type in ("int", "float"):
            values = pd.to_numeric(frame[name].replace("NA", None))
            frame[name] = values.astype("Int64") if col.type == "int" else values.astype("float64")
        elif col.type == "timestamp":
            frame[name] = pd.to_datetime(frame[name], utc=True)
        else:
            frame[name] = frame[name].replace("NA", None).astype("str")
    frame.loc[[5, 70, 9001], "month"] = 13  # critical range, in chunks 1 and 3
    frame.loc[[8, 12001], "tailnum"] = None  # optional: the reviewed not-null 'mostly'
    frame.loc[[9, 10, 12002], "distance"] = np.nan  # required: critical not-null
    frame.loc[[11, 4500], "origin"] = "XYZ"  # unseen category
    frame.loc[12, KEY] = frame.loc[13, KEY].to_numpy()  # a duplicate key inside chunk 1
    frame.loc[8500, KEY] = frame.loc[8501, KEY].to_numpy()  # ... and inside chunk 3
    frame.loc[14, "flight"] = pd.NA  # a key column missing
    frame.loc[20:400, "hour"] = 2  # the reviewed hour band, 'mostly' 0.95 on chunk 1 alone
    frame.loc[4001:4003, "sched_dep_time"] = [-5, 2400, 99999]
    return frame


def _chunks(frame: pd.DataFrame) -> list[pd.DataFrame]:
    return [frame.iloc[i:i + CHUNK] for i in range(0, len(frame), CHUNK)]


def _json(report: dict[str, Any]) -> str:
    return json.dumps(report, sort_keys=True, default=str)


def test_every_vectorised_result_is_gx_s_result_chunk_by_chunk(suite, broken_flights):
    """For each supported expectation and each chunk: same success, counts, percentages,
    example values, value counts and row indexes as GX computes."""
    supported = [e for e in suite if fast_expectations.supports(e)]
    assert {e["type"] for e in supported} == set(fast_expectations.SUPPORTED) - {
        "expect_column_values_to_be_unique"}
    run = validate._gx_validator(supported)
    failing = 0
    for chunk in _chunks(broken_flights):
        theirs = run(chunk)["results"]
        slots = validate._suite_slots(supported, theirs)
        for j, e in enumerate(supported):
            ours = fast_expectations.gx_result(fast_expectations.evaluate(e, chunk))
            gx = theirs[slots[j]]
            assert (ours["success"], ours["result"]) == (gx["success"], gx["result"]), e
            failing += not gx["success"]
    assert failing >= 8, "the broken rows must make expectations fail in several chunks"


def test_single_column_uniqueness_matches_gx_with_missing_values_and_repeats(broken_flights):
    e = {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "flight"}}
    chunk = broken_flights.iloc[:300]
    gx = validate._gx_validator([e])(chunk)["results"][0]
    ours = fast_expectations.gx_result(fast_expectations.evaluate(e, chunk))
    assert not gx["success"] and gx["result"]["missing_count"] == 1
    assert (ours["success"], ours["result"]) == (gx["success"], gx["result"])


@pytest.mark.parametrize("opened", [False, True], ids=["chunk list", "re-readable source"])
def test_vectorised_report_equals_the_gx_only_report(suite, broken_flights, opened):
    """The merged report (hard failures, warnings, examples, cross-chunk duplicates) is unchanged."""
    chunks = _chunks(broken_flights)
    repeated = broken_flights.iloc[[100]].copy()  # a key of chunk 1 again, in a fifth chunk
    chunks.append(repeated)
    gx = validate.validate_chunks(chunks, suite, engine="gx")
    ours = validate.validate_chunks((lambda: iter(chunks)) if opened else chunks, suite)
    assert _json(ours) == _json(gx)
    assert not gx["success"]
    failed = {(f["expectation"], f["kwargs"].get("column")) for f in gx["hard_failures"]}
    assert {("expect_column_values_to_be_between", "month"), ("expect_column_values_to_not_be_null", "distance"),
            ("expect_column_values_to_be_in_set", "origin"),
            ("expect_compound_columns_to_be_unique", None)} <= failed
    compound = next(r for r in gx["gx_result"]["results"]
                    if r["expectation_config"]["type"] == "expect_compound_columns_to_be_unique")
    assert compound["result"]["cross_chunk_duplicates"] == 1
    assert compound["result"]["unexpected_count"] == 4 + 1


def test_a_chunk_the_vectorised_path_cannot_evaluate_is_validated_by_gx(suite, broken_flights, caplog):
    """A range on a text column (first chunk) or a column missing from a later chunk: GX decides."""
    text_range = {"type": "expect_column_values_to_be_between", "severity": "critical",
                  "kwargs": {"column": "carrier", "min_value": 0, "max_value": 5}}
    chunks = _chunks(broken_flights)
    with caplog.at_level(logging.WARNING, logger="flightdeck.data.validate"):
        ours = validate.validate_chunks(chunks, [*suite, text_range])
    assert "disagrees with GX" in caplog.text
    assert _json(ours) == _json(validate.validate_chunks(chunks, [*suite, text_range], engine="gx"))

    missing = [*chunks[:2], chunks[2].drop(columns=["dest"]), chunks[3]]
    for source in (missing, lambda: iter(missing)):
        assert _json(validate.validate_chunks(source, suite)) == _json(
            validate.validate_chunks(missing, suite, engine="gx"))


def test_an_unknown_engine_is_refused(suite):
    with pytest.raises(ValueError, match="engine: expected 'gx' or 'vectorised'"):
        validate.validate_chunks([], suite, engine="fast")
