"""Typing delivered columns into quarantine reasons, event-time rules and keyed pseudonyms (pure functions)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from flightdeck.core.spec import ColumnSpec
from flightdeck.data import ingest

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


# ---------------------------------------------------------------- the Arrow fast paths
def _object_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """The same rows with text held as Python objects (missing as None): the pandas path."""
    out = frame.copy()
    for name in out.columns:
        if isinstance(out[name].dtype, pd.StringDtype):
            out[name] = out[name].astype(object).where(out[name].notna(), None)
    return out


def _normalised(frame: pd.DataFrame) -> list[list[object]]:
    return [[None if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else v for v in row]
            for row in frame.astype(object).to_numpy().tolist()]


def test_arrow_string_columns_give_the_same_rows_issues_and_quarantine_as_the_object_path(flights_spec):
    """Real Parquet-typed flights (Arrow-backed text) with unseen origins, missing and 'NA'
    carriers, missing tail numbers and a repeated key: same accepted rows, pseudonyms,
    reasons, values and quarantine payloads as the same chunk held as Python objects."""
    from flightdeck.data.replay import load_replay_source

    source = flights_spec.features_source
    raw = load_replay_source(flights_spec)[list(source.columns)].iloc[:3000].reset_index(drop=True)
    typed = raw.copy()
    for name, col in source.columns.items():
        if col.type in ("int", "float"):
            typed[name] = pd.to_numeric(typed[name].replace("NA", None))
        elif col.type == "timestamp":
            typed[name] = pd.to_datetime(typed[name], utc=True)
    typed.loc[[3, 2500], "origin"] = "XYZ"
    typed.loc[7, "carrier"] = None
    typed.loc[8, "carrier"] = "NA"
    typed.loc[[9, 10], "tailnum"] = None
    typed.loc[11] = typed.loc[12]
    arrow = typed.astype({n: "str" for n, c in source.columns.items() if c.type in ("category", "string")})
    assert all(arrow[n].dtype.storage == "pyarrow" for n in ("carrier", "origin", "dest", "tailnum"))

    def parse(chunk: pd.DataFrame) -> ingest.ParsedChunk:
        rules = ingest.RowRules(batch_id="b", batch_date=None,
                                received_at=pd.Timestamp("2014-01-01T00:00:00Z").to_pydatetime())
        return ingest.parse_rows(chunk, flights_spec, source, rules, first_row_number=1, pii_key="k")

    fast, slow = parse(arrow), parse(_object_strings(arrow))
    assert _normalised(fast.accepted) == _normalised(slow.accepted)
    assert fast.issues.to_dict("records") == slow.issues.to_dict("records")
    # payloads are the raw input rows: the same, except that a missing Arrow string was and
    # stays NaN in the payload JSON where a Python None is null (input dtype, not the parse)
    for q in (fast.quarantined, slow.quarantined):
        q["payload"] = q["payload"].map(lambda p: {k: None if isinstance(v, float) and np.isnan(v) else v
                                                   for k, v in json.loads(p).items()})
    assert fast.quarantined.to_dict("records") == slow.quarantined.to_dict("records")
    reasons = sorted({(r["reason"], r["column_name"]) for r in fast.issues.to_dict("records")})
    assert ("unseen_category", "origin") in reasons and ("missing_key", "carrier") in reasons
    assert ("duplicate_key", ",".join(flights_spec.entity_key)) in reasons
    assert len(fast.accepted) + len(fast.quarantined) == len(arrow)
    schema = ingest.arrow_schema(source)
    to_table = [pa.Table.from_pandas(p.accepted, schema=schema, preserve_index=False) for p in (fast, slow)]
    assert to_table[0].equals(to_table[1]), "the staged Parquet rows are the same"


@pytest.mark.parametrize("dtype", [object, "str"])
def test_pseudonyms_are_the_keyed_hmac_of_each_value(dtype):
    """Each present value maps to HMAC-SHA256(key, value), computed once per distinct value."""
    import hashlib
    import hmac

    values = pd.Series(["N706JB", None, "N794JB", "N706JB", None], dtype=dtype)
    expected = ["p_" + hmac.new(b"k", v.encode(), hashlib.sha256).hexdigest()[:24] if v else None
                for v in ["N706JB", None, "N794JB", "N706JB", None]]
    assert ingest.pseudonymise(values, "k").tolist() == expected
