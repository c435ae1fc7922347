"""The online service's input rows: typing like the curated partition, and 422 errors that name the field
and what was expected; MLflow's two request forms; the canonical input hash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from flightdeck.core.spec import load_spec
from flightdeck.serving.service import RowsInvalid, input_hash, parse_rows, row_schema, split_payload

FLIGHTS_SPEC = Path(__file__).resolve().parents[3] / "include" / "specs" / "flights.yaml"
ROW: dict[str, Any] = {"year": 2013, "month": 4, "day": 11, "sched_dep_time": 2359, "sched_arr_time": 343,
                       "carrier": "B6", "flight": 707, "tailnum": "p_086a2b813a86bfa38041c757", "origin": "JFK",
                       "dest": "SJU", "distance": 1598.0, "hour": 23, "minute": 59,
                       "time_hour": "2013-04-12T03:00:00.000Z"}


@pytest.fixture(scope="module")
def spec():
    return load_spec(FLIGHTS_SPEC)


@pytest.fixture(scope="module")
def schema(spec):
    needed = [*spec.entity_key, spec.event_time, "sched_arr_time", "dest", "distance", "hour", "tailnum"]
    return row_schema(spec, needed)


def _errors(rows: list[Any], schema) -> dict[tuple[Any, ...], str]:
    with pytest.raises(RowsInvalid) as caught:
        parse_rows(rows, schema)
    return {tuple(e["loc"]): e["msg"] for e in caught.value.errors}


def test_a_good_row_is_typed_like_the_curated_partition(schema):
    frame = parse_rows([ROW, {**ROW, "time_hour": "2013-04-12 03:00", "tailnum": None}], schema)
    assert list(frame.columns) == list(ROW)
    assert str(frame["flight"].dtype) == "int64" and str(frame["distance"].dtype) == "float64"
    assert str(frame["time_hour"].dtype) == "datetime64[us, UTC]"
    assert frame["time_hour"].iloc[0] == frame["time_hour"].iloc[1] == pd.Timestamp("2013-04-12T03:00Z")
    assert pd.isna(frame["tailnum"].iloc[1]), "a nullable column may be null"


def test_curated_extras_are_ignored_and_an_optional_column_may_be_absent(schema):
    extras = {"_batch_id": "abc", "departed_late": 1, "dep_weekday": 3, "day_of_year": 101, "days_to_holiday": 14,
              "dep_delay": 12.0}
    row = {k: v for k, v in ROW.items() if k != "minute"}  # not read by the model's features
    frame = parse_rows([{**row, **extras}], schema)
    assert "departed_late" not in frame.columns and pd.isna(frame["minute"].iloc[0])


@pytest.mark.parametrize(("column", "value", "message"), [
    ("flight", "UA1545", "expected an integer, got 'UA1545'"),
    ("flight", 12.5, "expected an integer, got 12.5"),
    ("flight", True, "expected an integer, got True"),
    ("distance", "far", "expected a number, got 'far'"),
    ("distance", 7000, "expected at most 6000, got 7000.0"),
    ("month", 13, "expected at most 12, got 13"),
    ("carrier", 6, "expected a string, got 6"),
    ("origin", "BOS", "expected one of ['EWR', 'JFK', 'LGA'], got 'BOS'"),
    ("time_hour", "next tuesday", "expected an ISO 8601 timestamp, got unparseable 'next tuesday'"),
    ("time_hour", 1365735600, "expected an ISO 8601 timestamp, got 1365735600"),
    ("carrier", None, "null in a required column; expected a string"),
])
def test_a_bad_value_names_the_field_and_what_was_expected(schema, column, value, message):
    assert _errors([ROW, {**ROW, column: value}], schema) == {("body", 1, column): message}


def test_missing_and_unexpected_columns_are_named(schema):
    row = {k: v for k, v in ROW.items() if k not in ("carrier", "time_hour")}
    errors = _errors([{**row, "carier": "B6"}], schema)
    assert errors == {("body", 0, "carrier"): "missing required column; expected a string",
                      ("body", 0, "time_hour"): "missing required column; expected an ISO 8601 timestamp",
                      ("body", 0, "carier"): f"unexpected column; expected one of {list(ROW)}"}


@pytest.mark.parametrize(("rows", "message"), [
    ([], "expected at least one row"),
    ([1], "expected an object of columns, got int"),
])
def test_a_request_without_row_objects_is_refused(schema, rows, message):
    assert message in " ".join(_errors(rows, schema).values())


def test_mlflow_forms_give_the_same_rows():
    split = {"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x"], [2, "y"]]}}
    records = {"dataframe_records": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]}
    assert split_payload(split) == split_payload(records) == records["dataframe_records"]


@pytest.mark.parametrize(("payload", "field"), [
    ({"instances": []}, None),
    ({"dataframe_split": {"columns": "a", "data": []}}, "dataframe_split.columns"),
    ({"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}, "dataframe_split.data.0"),
    ({"dataframe_records": {"a": 1}}, "dataframe_records"),
    ([1, 2], None),
])
def test_malformed_mlflow_requests_name_the_field(payload, field):
    with pytest.raises(RowsInvalid) as caught:
        split_payload(payload)
    loc = caught.value.errors[0]["loc"]
    assert loc == (["body", field] if field else ["body"])


def test_the_input_hash_is_canonical():
    assert input_hash({"a": 1, "b": "x"}) == input_hash({"b": "x", "a": 1}) != input_hash({"a": 2, "b": "x"})
    assert len(input_hash(ROW)) == 64


def test_the_serve_command_defaults_to_loopback_port_8000():
    from flightdeck.apps.cli import build_parser, main

    args = build_parser().parse_args(["serve", "flights"])
    assert (args.command, args.spec, args.host, args.port, args.refresh_seconds) == (
        "serve", "flights", "127.0.0.1", 8000, 30.0)
    assert main(["serve", "flights", "--refresh-seconds", "0"]) == 2, "a refresh interval must be positive"
