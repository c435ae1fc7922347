"""The spec's declared expectations and GX validation of frames and chunks (pure functions)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from flightdeck.core.spec import load_spec
from flightdeck.data import validate

FLIGHTS_SPEC = Path(__file__).resolve().parents[3] / "include" / "specs" / "flights.yaml"


# ---------------------------------------------------------------- validate
def _schedule_rows() -> pd.DataFrame:
    """Six typed schedule rows as staged (real flights of 2013-03-01)."""
    rows = [
        (2159, 56, "B6", 11, "N706JB", "JFK", "FLL", 1069.0, 21, 59, "2013-03-02T02:00:00Z"),
        (2358, 438, "B6", 707, "N794JB", "JFK", "SJU", 1598.0, 23, 58, "2013-03-02T04:00:00Z"),
        (2245, 2354, "B6", 608, "N328JB", "JFK", "PWM", 273.0, 22, 45, "2013-03-02T03:00:00Z"),
        (500, 648, "US", 1117, "N177US", "EWR", "CLT", 529.0, 5, 0, "2013-03-01T10:00:00Z"),
        (515, 810, "UA", 475, "N527UA", "EWR", "IAH", 1400.0, 5, 15, "2013-03-01T10:00:00Z"),
        (530, 827, "UA", 1714, None, "LGA", "IAH", 1416.0, 5, 30, "2013-03-01T10:00:00Z"),
    ]
    cols = [
        "sched_dep_time",
        "sched_arr_time",
        "carrier",
        "flight",
        "tailnum",
        "origin",
        "dest",
        "distance",
        "hour",
        "minute",
        "time_hour",
    ]
    frame = pd.DataFrame(rows, columns=cols)
    frame.insert(0, "year", 2013)
    frame.insert(1, "month", 3)
    frame.insert(2, "day", 1)
    for c in load_spec(FLIGHTS_SPEC).features_source.columns_of_type("int"):
        frame[c] = frame[c].astype("Int64")
    frame["time_hour"] = pd.to_datetime(frame["time_hour"], utc=True)
    return frame


@pytest.fixture(scope="module")
def declared(flights_spec):
    return validate.declared_expectations(flights_spec, "schedule")


def test_declared_expectations_follow_the_spec(declared):
    """Not-null only for required columns, ranges for bounded numbers, a set for quarantined
    categories, compound uniqueness of the entity key; all critical."""
    by_type: dict[str, list] = {}
    for e in declared:
        by_type.setdefault(e["type"], []).append(e["kwargs"])
    not_null = {k["column"] for k in by_type["expect_column_values_to_not_be_null"]}
    assert "tailnum" not in not_null and {"year", "origin", "time_hour"} <= not_null
    assert {"column": "month", "min_value": 1, "max_value": 12} in by_type[
        "expect_column_values_to_be_between"
    ]
    assert by_type["expect_column_values_to_be_in_set"] == [
        {"column": "origin", "value_set": ["EWR", "JFK", "LGA"]}
    ]
    assert by_type["expect_compound_columns_to_be_unique"] == [
        {"column_list": ["year", "month", "day", "carrier", "flight", "origin", "sched_dep_time"]}
    ]
    assert {e["severity"] for e in declared} == {"critical"}


def test_validate_frame_passes_a_clean_frame_and_fails_a_critical_break(declared):
    """Clean rows pass; month 13 breaks a critical range: success False, summary names 'month'."""
    clean = validate.validate_frame(_schedule_rows(), declared)
    assert clean["success"] is True and clean["hard_failures"] == [] and clean["rows"] == 6
    assert clean["evaluated"] == len(declared)

    broken = _schedule_rows()
    broken.loc[2, "month"] = 13
    report = validate.validate_frame(broken, declared)
    assert report["success"] is False
    (failure,) = report["hard_failures"]
    assert failure["expectation"] == "expect_column_values_to_be_between"
    assert failure["kwargs"]["column"] == "month" and failure["unexpected_count"] == 1
    assert failure["examples"] == [13]
    summary = validate.summarise_failures(report)
    assert "expect_column_values_to_be_between month: 1 rows" in summary and "[13]" in summary


def test_validate_frame_keeps_success_when_only_warnings_fail(declared):
    """A failing warning-severity expectation is reported but does not fail the batch."""
    warning = {
        "type": "expect_column_values_to_be_between",
        "severity": "warning",
        "kwargs": {"column": "distance", "min_value": 0, "max_value": 1000},
    }
    report = validate.validate_frame(_schedule_rows(), [*declared, warning])
    assert report["success"] is True and report["hard_failures"] == []
    (w,) = report["warnings"]
    assert (
        w["kwargs"]["column"] == "distance"
        and w["unexpected_count"] == 4
        and w["severity"] == "warning"
    )

def test_chunked_validation_judges_mostly_on_totals_and_finds_keys_repeated_across_chunks():
    """Merged chunk results: 'mostly' on the totals, means weighted, duplicates across chunks caught."""
    from flightdeck.data.validate import validate_chunks

    first = pd.DataFrame({"k": range(0, 100), "v": [0.0] * 90 + [99.0] * 10})  # 10% out of range
    second = pd.DataFrame({"k": range(100, 200), "v": [1.0] * 100})  # 0% out of range
    expectations = [
        {"type": "expect_column_values_to_be_between", "severity": "critical",
         "kwargs": {"column": "v", "min_value": 0, "max_value": 10, "mostly": 0.92}},
        {"type": "expect_column_mean_to_be_between", "severity": "warning",
         "kwargs": {"column": "v", "min_value": 0, "max_value": 6}},
        {"type": "expect_column_values_to_be_unique", "severity": "critical", "kwargs": {"column": "k"}},
    ]
    alone = validate_chunks([first], expectations)
    assert not alone["success"], "10% unexpected breaks mostly=0.92 on its own"
    assert [w["expectation"] for w in alone["warnings"]] == ["expect_column_mean_to_be_between"]  # mean 9.9
    together = validate_chunks([first, second], expectations)
    assert together["success"], together["hard_failures"]
    assert together["warnings"] == [], "the merged mean is (9.9 * 100 + 1.0 * 100) / 200 = 5.45"
    repeated = pd.DataFrame({"k": [5, 150], "v": [1.0, 1.0]})
    report = validate_chunks([first, second, repeated], expectations)
    failure = next(f for f in report["hard_failures"] if f["expectation"] == "expect_column_values_to_be_unique")
    assert failure["unexpected_count"] == 2
