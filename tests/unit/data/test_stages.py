"""Pure stage functions on tiny frames: typing, pseudonymisation, splitting, leakage,
wrangling, derived columns, profiling and validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flightdeck.core.spec import ColumnSpec, load_spec
from flightdeck.data import ingest, profile, split, validate, wrangle

FLIGHTS_SPEC = Path(__file__).resolve().parents[3] / "include" / "specs" / "flights.yaml"

NA = ("", "NA")


def _masks_true(masks: dict[str, pd.Series]) -> dict[str, list[int]]:
    """Reason -> positions where the rule is broken (rules never broken left out)."""
    return {k: np.flatnonzero(v.to_numpy(dtype=bool)).tolist() for k, v in masks.items() if v.any()}


# ---------------------------------------------------------------- parse_column
def test_int_column_with_fraction_is_unparseable_and_whole_floats_are_ints():
    """'2.5' is not an int; '3.0' is the int 3; the typed column is nullable Int64."""
    typed, masks = ingest.parse_column(
        pd.Series(["1", "2.5", "3.0", " 4 "]), ColumnSpec(type="int"), NA
    )
    assert _masks_true(masks) == {"unparseable": [1]}
    assert str(typed.dtype) == "Int64"
    assert typed.tolist() == [1, pd.NA, 3, 4]


def test_text_in_numeric_column_is_unparseable():
    typed, masks = ingest.parse_column(
        pd.Series(["100.5", "abc", "1,000"]), ColumnSpec(type="float"), NA
    )
    assert _masks_true(masks) == {"unparseable": [1, 2]}
    assert typed.iloc[0] == 100.5 and typed.iloc[1:].isna().all()


@pytest.mark.parametrize("literal", ["nan", "NaN", "inf", "-inf", "+Infinity", "1e400"])
def test_non_finite_numbers_are_flagged_non_finite_not_unparseable(literal):
    _, masks = ingest.parse_column(pd.Series(["1", literal]), ColumnSpec(type="float"), NA)
    assert _masks_true(masks) == {"non_finite": [1]}


def test_values_outside_min_max_are_out_of_range_bounds_inclusive():
    col = ColumnSpec(type="int", min=1, max=12)
    _, masks = ingest.parse_column(pd.Series(["0", "1", "12", "13", "-5"]), col, NA)
    assert _masks_true(masks) == {"out_of_range": [0, 3, 4]}


@pytest.mark.parametrize(
    ("required", "expected"),
    [(True, {"missing_value": [0, 1, 3]}), (False, {})],
    ids=["required", "optional"],
)
def test_missing_values_are_flagged_only_when_required(required, expected):
    """The spec's na_values ('' and 'NA') and real nulls count as missing."""
    col = ColumnSpec(type="string", required=required)
    typed, masks = ingest.parse_column(pd.Series(["", "NA", "N123", None], dtype=object), col, NA)
    assert _masks_true(masks) == expected
    assert typed.tolist() == [None, None, "N123", None]


def test_unseen_category_is_flagged_only_with_on_unseen_quarantine():
    values = pd.Series(["JFK", "BOS", "LGA"])
    _, quarantining = ingest.parse_column(
        values, ColumnSpec(type="category", allowed=("JFK", "LGA"), on_unseen="quarantine"), NA
    )
    _, keeping = ingest.parse_column(
        values, ColumnSpec(type="category", allowed=("JFK", "LGA")), NA
    )
    assert _masks_true(quarantining) == {"unseen_category": [1]}
    assert _masks_true(keeping) == {}


def test_timestamps_are_parsed_to_utc_and_garbage_is_unparseable():
    typed, masks = ingest.parse_column(
        pd.Series(["2013-03-01T10:00:00Z", "2013-03-01T05:00:00-05:00", "noon"]),
        ColumnSpec(type="timestamp"),
        NA,
    )
    assert _masks_true(masks) == {"unparseable": [2]}
    assert typed.iloc[0] == typed.iloc[1] == pd.Timestamp("2013-03-01 10:00", tz="UTC")


def test_parse_rows_quarantines_event_times_beyond_the_allowed_lead(flights_spec):
    """max_event_lead P2D: an event 3 days after receipt is 'in_future'; 1 day after is fine."""
    source = flights_spec.features_source
    base = {
        "year": "2013",
        "month": "3",
        "day": "1",
        "sched_dep_time": "500",
        "sched_arr_time": "648",
        "carrier": "US",
        "origin": "EWR",
        "dest": "CLT",
        "distance": "529",
        "hour": "5",
        "minute": "0",
        "tailnum": "N177US",
    }
    chunk = pd.DataFrame(
        [
            {**base, "flight": "1", "time_hour": "2013-03-02T10:00:00Z"},
            {**base, "flight": "2", "time_hour": "2013-03-04T10:00:00Z"},
        ]
    )[list(source.columns)]
    rules = ingest.RowRules(
        batch_id="b",
        batch_date=None,
        received_at=pd.Timestamp("2013-03-01T09:00:00Z").to_pydatetime(),
    )
    parsed = ingest.parse_rows(chunk, flights_spec, source, rules, first_row_number=1, pii_key="k")
    assert parsed.issues[["row_number", "reason"]].values.tolist() == [[2, "in_future"]]
    assert parsed.accepted["flight"].tolist() == [1]
    assert (
        parsed.accepted["tailnum"].iloc[0]
        == ingest.pseudonymise(pd.Series(["N177US"]), "k").iloc[0]
    )


# ---------------------------------------------------------------- pseudonymise
def test_pseudonymise_is_stable_keyed_and_hides_the_raw_value():
    values = pd.Series(["N706JB", "N794JB", "N706JB", None], dtype=object)
    first = ingest.pseudonymise(values, "key-a")
    again = ingest.pseudonymise(values, "key-a")
    other_key = ingest.pseudonymise(values, "key-b")

    assert first.tolist() == again.tolist(), "same key, same pseudonyms (stable across runs)"
    assert first.iloc[0] == first.iloc[2] != first.iloc[1], (
        "equal values stay joinable, different ones differ"
    )
    assert first.iloc[0] != other_key.iloc[0] and first.iloc[1] != other_key.iloc[1], (
        "keyed: another key differs"
    )
    assert first.iloc[3] is None and other_key.iloc[3] is None, "missing stays missing"
    assert all(
        p.startswith("p_") and "N706JB" not in p and "N794JB" not in p for p in first.iloc[:3]
    )


def test_pseudonym_does_not_depend_on_the_other_values_in_the_batch():
    """A tail number gets the same pseudonym in any batch, so batches stay joinable."""
    alone = ingest.pseudonymise(pd.Series(["N706JB"]), "k")
    mixed = ingest.pseudonymise(pd.Series(["N1", "N706JB", "N2"]), "k")
    assert alone.iloc[0] == mixed.iloc[1]


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


# ---------------------------------------------------------------- wrangling
def test_fill_and_caps_are_learned_on_train_only(flights_spec):
    """The distance fill is the *train* median (200), not the test median (5500), and test
    values are capped at the train quantile; tailnum gets the declared constant."""
    train = pd.DataFrame(
        {"distance": [100.0, 200.0, 300.0, np.nan], "tailnum": ["p_a", None, "p_b", "p_c"]}
    )
    test = pd.DataFrame({"distance": [5000.0, 6000.0, np.nan], "tailnum": [None, "p_d", "p_e"]})

    params = wrangle.fit_wrangle(train, flights_spec)
    assert params["fill"] == {"tailnum": "unknown", "distance": 200.0}
    lo, hi = params["cap"]["distance"]
    assert lo == 100.0 and 299 < hi <= 300

    out = wrangle.apply_wrangle(test, flights_spec, params)
    assert out["distance"].tolist() == [hi, hi, 200.0]
    assert out["tailnum"].tolist() == ["unknown", "p_d", "p_e"]
    assert test["distance"].isna().sum() == 1, "apply_wrangle does not modify its input"


def test_fit_wrangle_result_does_not_change_with_the_test_data(flights_spec):
    train = pd.DataFrame({"distance": [1.0, 2.0, 3.0], "tailnum": ["a", "b", None]})
    assert wrangle.fit_wrangle(train, flights_spec) == wrangle.fit_wrangle(
        train.copy(), flights_spec
    )
    assert wrangle.fit_wrangle(train, flights_spec)["fill"]["distance"] == 2.0


def test_derived_weekday_and_day_of_year_use_the_spec_time_zone(flights_spec):
    """02:00 UTC on Sat 2 March is 21:00 on Fri 1 March in New York: weekday 4, day 60, not
    5 and 61. 03:00 UTC on 1 Jan 2014 is still 31 Dec 2013 locally: day 365."""
    frame = pd.DataFrame(
        {
            "time_hour": pd.to_datetime(
                ["2013-03-02T02:00:00Z", "2013-03-01T15:00:00Z", "2014-01-01T03:00:00Z"], utc=True
            )
        }
    )
    out = wrangle.derive_columns(frame, flights_spec.wrangle.derive, flights_spec.timezone)
    assert out["dep_weekday"].tolist() == [4, 4, 1]
    assert out["day_of_year"].tolist() == [60, 60, 365]
    utc = wrangle.derive_columns(frame, flights_spec.wrangle.derive, "UTC")
    assert utc["dep_weekday"].tolist() == [5, 4, 2] and utc["day_of_year"].tolist() == [61, 60, 1]


def test_labels_follow_the_target_rule_and_missing_outcome_stays_unlabelled(flights_spec):
    """dep_delay > 15 is late; exactly 15 is not; a cancelled flight (no delay) has no label."""
    key = {
        "year": 2013,
        "month": 3,
        "day": 1,
        "carrier": "UA",
        "origin": "JFK",
        "sched_dep_time": 1000,
    }
    features = pd.DataFrame([{**key, "flight": f} for f in (1, 2, 3, 4)])
    labels = pd.DataFrame(
        [
            {**key, "flight": 1, "dep_delay": 16.0},
            {**key, "flight": 2, "dep_delay": 15.0},
            {**key, "flight": 3, "dep_delay": np.nan},
        ]
    )
    out = wrangle.attach_labels(features, labels, flights_spec)
    assert out["departed_late"].tolist() == [1, 0, pd.NA, pd.NA]
    assert len(out) == 4


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


def test_days_to_nearest_holiday_uses_local_dates_and_caps():
    """Independence Day is 0 days away on 4 July, New Year's Day 1 day from 31 Dec 23:00 New York time."""
    from flightdeck.data.wrangle import days_to_nearest_holiday

    local = pd.Series(pd.to_datetime(["2013-07-04 10:00", "2013-07-01 10:00", "2013-12-31 23:00",
                                      "2013-03-01 12:00", None]).tz_localize("America/New_York"))
    assert days_to_nearest_holiday(local, cap=14).tolist() == [0, 3, 1, 11, pd.NA]
    assert days_to_nearest_holiday(local, cap=2).tolist()[:4] == [0, 2, 1, 2]


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
