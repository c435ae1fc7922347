"""String targets, batch grains, delivered headers and optional label delay (issue 17).

Every spec rule is pinned with the field its error names; the stage helpers behind the
rules (period starts, batch dates, the event-window rule, unknown target values, labels)
are checked on tiny frames.
"""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from flightdeck.core.periods import next_period_start, period_from_groups, period_start
from flightdeck.core.spec import SpecError, load_spec
from flightdeck.data import ingest, replay, wrangle

PENGUINS = Path(__file__).resolve().parents[2] / "fixtures" / "specs" / "penguins.yaml"


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(PENGUINS.read_text())


def _load(tmp_path: Path, raw: dict[str, Any]):  # type: ignore[no-untyped-def]
    path = tmp_path / "penguins.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_spec(path)


def _changed(raw: dict[str, Any], edit) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    out = copy.deepcopy(raw)
    edit(out)
    return out


def test_penguins_spec_declares_a_string_target_monthly_grain_and_headers():
    spec = load_spec(PENGUINS)
    source = spec.features_source
    assert source.batch_grain == "month" and spec.labels_source is None
    assert spec.label_delay is None and spec.label_delay_timedelta.total_seconds() == 0
    assert spec.target.positive == ("FEMALE",) and spec.target.known_values == ("FEMALE", "MALE")
    assert source.header_of("culmen_length_mm") == "Culmen Length (mm)"
    assert source.headers["Date Egg"] == "date_egg" and source.header_of("island") == "Island"
    assert spec.start_date == "2007-11-01"


def test_flights_spec_keeps_its_defaults(flights_spec):
    assert flights_spec.label_delay == "P1D" and flights_spec.start_date is None
    assert all(s.batch_grain == "day" for s in flights_spec.sources.values())
    assert flights_spec.target.op == "gt" and flights_spec.target.value == 15
    assert not flights_spec.target.is_categorical


def test_a_labels_source_without_label_delay_keeps_one_day(tmp_path, flights_spec):
    raw = yaml.safe_load(flights_spec.path.read_text())
    del raw["label_delay"]
    path = tmp_path / "flights.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert load_spec(path).label_delay == "P1D"


@pytest.mark.parametrize(("edit", "field", "message"), [
    (lambda r: r["target"].update(positive=None, negative=None, op="gt", value=1), "target.op",
     "needs a numeric target column"),
    (lambda r: r["target"].update(positive=None, negative=None, op="le", value="FEMALE"), "target",
     "compares numbers"),
    (lambda r: r["target"].update(op="eq", value="FEMALE"), "target", "either op and value, or positive"),
    (lambda r: r["target"].update(positive=None, negative=None), "target", "either op and value, or positive"),
    (lambda r: r["target"].update(positive=[]), "target", "at least one value"),
    (lambda r: r["target"].update(negative=["FEMALE"]), "target", "both positive and negative"),
    (lambda r: r["target"].update(column="body_mass_g"), "target.positive", "target.column 'body_mass_g' is float"),
    (lambda r: r["target"].update(column="body_mass_g", positive=None, negative=None, op="eq", value="x"),
     "target.value", "is a string"),
    (lambda r: r["target"].update(column="date_egg"), "target.column", "is timestamp"),
])
def test_target_rules_fail_at_load_naming_the_field(tmp_path, raw, edit, field, message):
    with pytest.raises(SpecError) as err:
        _load(tmp_path, _changed(raw, edit))
    text = str(err.value)
    assert text.startswith("penguins.yaml: ") and field in text and message in text


@pytest.mark.parametrize("target", [
    {"name": "female", "column": "sex", "op": "eq", "value": "FEMALE"},
    {"name": "female", "column": "sex", "positive": ["FEMALE"]},
    {"name": "heavy", "column": "body_mass_g", "op": "gt", "value": 4000},
])
def test_valid_targets_load(tmp_path, raw, target):
    features = [f for f in raw["features"] if f != target["column"]]
    spec = _load(tmp_path, _changed(raw, lambda r: r.update(target=target, features=features)))
    assert spec.target.column == target["column"]


@pytest.mark.parametrize(("grain", "regex", "ok"), [
    ("month", r"penguins_(?P<year>\d{4})_(?P<month>\d{2})", True),
    ("month", r"penguins_(?P<date>\d{4}-\d{2}-\d{2})", True),
    ("week", r"penguins_(?P<year>\d{4})-W(?P<week>\d{2})", True),
    ("day", r"penguins_(?P<date>\d{4}-\d{2}-\d{2})", True),
    ("day", r"penguins_(?P<year>\d{4})_(?P<month>\d{2})", False),
    ("week", r"penguins_(?P<year>\d{4})_(?P<month>\d{2})", False),
    ("none", r"penguins_(?P<date>\d{4}-\d{2}-\d{2})", False),
    ("month", r"penguins_(?P<year>\d{4})", False),
    ("none", None, True),
])
def test_batch_date_regex_must_fit_the_grain(tmp_path, raw, grain, regex, ok):
    spec_raw = _changed(raw, lambda r: r["sources"]["survey"].update(batch_grain=grain, batch_date=regex))
    if ok:
        assert _load(tmp_path, spec_raw).features_source.batch_grain == grain
    else:
        with pytest.raises(SpecError, match=r"sources\.survey"):
            _load(tmp_path, spec_raw)


def test_headers_must_be_unique_within_a_source(tmp_path, raw):
    dup = _changed(raw, lambda r: r["sources"]["survey"]["columns"]["region"].update(header="Island"))
    with pytest.raises(SpecError, match=r"sources\.survey: .*headers \['Island'\]"):
        _load(tmp_path, dup)


@pytest.mark.parametrize("value", ["2007-13-01", "yesterday"])
def test_start_date_must_be_a_date(tmp_path, raw, value):
    with pytest.raises(SpecError, match="start_date: .*not a YYYY-MM-DD date"):
        _load(tmp_path, _changed(raw, lambda r: r.update(start_date=value)))


@pytest.mark.parametrize(("day", "grain", "start", "following"), [
    (date(2007, 11, 17), "month", date(2007, 11, 1), date(2007, 12, 1)),
    (date(2007, 12, 31), "month", date(2007, 12, 1), date(2008, 1, 1)),
    (date(2024, 1, 3), "week", date(2024, 1, 1), date(2024, 1, 8)),   # a Wednesday; weeks start Monday
    (date(2013, 3, 5), "day", date(2013, 3, 5), date(2013, 3, 6)),
])
def test_period_start_and_next(day, grain, start, following):
    assert period_start(day, grain) == start
    assert next_period_start(start, grain) == following


def test_period_from_groups_reads_dates_months_and_weeks():
    assert period_from_groups({"year": "2009", "month": "12"}, "month") == date(2009, 12, 1)
    assert period_from_groups({"date": "2009-12-17"}, "month") == date(2009, 12, 1)
    assert period_from_groups({"year": "2024", "week": "02"}, "week") == date(2024, 1, 8)
    with pytest.raises(ValueError, match="month '13'"):
        period_from_groups({"year": "2009", "month": "13"}, "month")


def test_batch_date_of_a_monthly_file_is_its_first_day():
    source = load_spec(PENGUINS).features_source
    assert ingest.batch_date_of(source, "penguins_2008_11.csv") == date(2008, 11, 1)
    with pytest.raises(ingest.DeliveryError, match="penguins_2008_13.csv: .*not a valid month batch date"):
        ingest.batch_date_of(source, "penguins_2008_13.csv")
    with pytest.raises(ingest.DeliveryError, match="does not carry a date"):
        ingest.batch_date_of(source, "penguins_late.csv")


def test_undated_deliveries_are_keyed_by_the_local_day_they_arrived(tmp_path, raw):
    spec = _load(tmp_path, _changed(raw, lambda r: r["sources"]["survey"].update(batch_grain="none",
                                                                                 batch_date=None)))
    received = datetime(2024, 3, 1, 2, 30, tzinfo=UTC)
    source = spec.features_source
    assert ingest.batch_date_of(source, "penguins_anything.csv", received, "UTC") == date(2024, 3, 1)
    assert ingest.batch_date_of(source, "penguins_anything.csv", received, "America/New_York") == date(2024, 2, 29)


def _survey(rows: list[dict[str, str]]) -> pd.DataFrame:
    base = {"study_name": "PAL0708", "species": "Adelie", "region": "Anvers", "island": "Dream",
            "stage": "Adult", "individual_id": "N1A1", "clutch_completion": "Yes", "culmen_length_mm": "39.1",
            "culmen_depth_mm": "18.7", "flipper_length_mm": "181", "body_mass_g": "3750", "sex": "MALE",
            "delta_15_n": "NA", "delta_13_c": "NA", "comments": "NA"}
    return pd.DataFrame([{**base, "sample_number": str(i + 1), **r} for i, r in enumerate(rows)])


@pytest.mark.parametrize(("grain", "batch", "inside"), [
    ("month", date(2007, 11, 1), ["2007-11-01", "2007-11-30"]),
    ("day", date(2007, 11, 30), ["2007-11-30"]),
    ("none", date(2030, 1, 1), ["2007-10-31", "2007-11-01", "2007-11-30", "2007-12-01"]),
])
def test_the_event_window_follows_the_grain(grain, batch, inside):
    spec = load_spec(PENGUINS)
    days = ["2007-10-31", "2007-11-01", "2007-11-30", "2007-12-01"]
    chunk = _survey([{"date_egg": d} for d in days])
    rules = ingest.RowRules(batch_id="b", batch_date=batch, received_at=datetime(2030, 1, 1, tzinfo=UTC),
                            grain=grain)
    parsed = ingest.parse_rows(chunk, spec, spec.features_source, rules, 1, "key")
    accepted = sorted(parsed.accepted["date_egg"].dt.strftime("%Y-%m-%d"))
    assert accepted == inside
    outside = parsed.issues[parsed.issues["reason"] == "outside_window"]
    assert len(outside) == len(days) - len(inside)


def test_unknown_target_values_are_quarantined_and_missing_ones_kept():
    spec = load_spec(PENGUINS)
    chunk = _survey([{"date_egg": "2007-11-11", "sex": s} for s in ("MALE", "FEMALE", ".", "NA")])
    rules = ingest.RowRules(batch_id="b", batch_date=date(2007, 11, 1), received_at=datetime(2030, 1, 1, tzinfo=UTC),
                            grain="month")
    parsed = ingest.parse_rows(chunk, spec, spec.features_source, rules, 1, "key")
    assert list(parsed.accepted["sex"].astype("object").fillna("<NA>")) == ["MALE", "FEMALE", "<NA>"]
    issues = parsed.issues
    assert issues[["reason", "column_name", "value", "row_number"]].to_dict("records") == [
        {"reason": "unknown_target", "column_name": "sex", "value": ".", "row_number": 3}]
    assert len(parsed.accepted) + len(parsed.quarantined) == len(chunk)


@pytest.mark.parametrize(("target", "expected"), [
    ({"positive": ("FEMALE",), "negative": ("MALE",)}, [1, 0, None, None]),
    ({"positive": ("FEMALE",), "when_missing": "negative"}, [1, 0, 0, 0]),
    ({"op": "eq", "value": "FEMALE"}, [1, 0, 0, None]),
])
def test_string_targets_label_rows(target, expected):
    spec = load_spec(PENGUINS)
    rule = spec.target.model_copy(update={"positive": None, "negative": None, "when_missing": "drop", **target})
    values = pd.Series(["FEMALE", "MALE", ".", None], dtype="object")
    got = [None if pd.isna(v) else int(v) for v in wrangle.label_values(values, rule)]
    assert got == expected


def test_replay_names_monthly_deliveries_the_regex_reads():
    spec = load_spec(PENGUINS)
    assert replay.delivery_name("penguins_*.csv", date(2007, 11, 1), spec.features_source) == "penguins_2007_11.csv"
    frame = replay.load_replay_source(spec)
    cut = replay.cut_deliveries(spec, frame, date(2007, 11, 15), date(2008, 11, 30))
    assert [d.file_name for d, _ in cut] == ["penguins_2007_11.csv", "penguins_2007_12.csv", "penguins_2008_11.csv"]
    header = cut[0][1].decode().splitlines()[0]
    assert header.startswith("studyName,Sample Number,Species") and "Culmen Length (mm)" in header
