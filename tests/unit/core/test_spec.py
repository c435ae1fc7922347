"""Spec loading: the real flights spec loads; every malformed spec fails with a SpecError
that names the file and the field at fault."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from flightdeck.core.spec import DatasetSpec, SpecError, load_spec

REAL_SPEC = Path(__file__).resolve().parents[3] / "include" / "specs" / "flights.yaml"


@pytest.fixture(scope="module")
def raw_spec() -> dict[str, Any]:
    return yaml.safe_load(REAL_SPEC.read_text())


def _write(tmp_path: Path, raw: Any, name: str = "flights") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_real_flights_spec_loads_with_its_declarations(flights_spec):
    """The committed spec parses into the model the pipeline relies on."""
    spec = load_spec(REAL_SPEC)
    assert isinstance(spec, DatasetSpec)
    assert spec.name == "flights" and spec.path == REAL_SPEC
    assert spec.features_source_name == "schedule" and spec.labels_source_name == "outcomes"
    assert spec.event_time == "time_hour" and spec.timezone == "America/New_York"
    assert spec.entity_key == (
        "year",
        "month",
        "day",
        "carrier",
        "flight",
        "origin",
        "sched_dep_time",
    )
    assert spec.features_source.columns["tailnum"].pii == "pseudonymise"
    assert spec.features_source.columns["origin"].allowed == ("EWR", "JFK", "LGA")
    assert (spec.split.train, spec.split.validation, spec.split.test) == (0.8, 0.1, 0.1)
    assert spec.quality.max_quarantine_share == 0.02
    assert not set(spec.features) & set(spec.leakage_columns)
    assert spec.suite_dir == REAL_SPEC.parent / "flights" / "expectations"


def test_fingerprint_is_stable_and_changes_with_content(flights_spec, raw_spec, tmp_path):
    """The same content gives the same version; any change in content gives a new one."""
    assert load_spec(REAL_SPEC).fingerprint() == flights_spec.fingerprint()
    assert flights_spec.fingerprint().startswith("v1-")
    changed = copy.deepcopy(raw_spec)
    changed["quality"]["max_quarantine_share"] = 0.03
    assert load_spec(_write(tmp_path, changed)).fingerprint() != flights_spec.fingerprint()


def test_unchanged_copy_loads_from_tmp(raw_spec, tmp_path):
    """Control for the malformed cases below: the unmodified YAML written the same way loads."""
    assert load_spec(_write(tmp_path, raw_spec)).name == "flights"


def _set(path: str, value: Any):
    def mutate(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = raw
        for p in parents:
            node = node[p]
        node[last] = value

    return mutate


def _append(path: str, value: Any):
    def mutate(raw: dict[str, Any]) -> None:
        node = raw
        for p in path.split("."):
            node = node[p]
        node.append(value)

    return mutate


MALFORMED = [
    pytest.param(
        _set("sources.schedule.columns.year.type", "integer"),
        ["sources.schedule.columns.year.type", "'int'"],
        id="bad-column-type",
    ),
    pytest.param(
        _set("split", {"train": 0.7, "validation": 0.1, "test": 0.1}),
        ["split:", "must be 1", "0.9"],
        id="split-does-not-sum-to-1",
    ),
    pytest.param(
        _set("split", {"train": 1.2, "validation": 0.1, "test": 0.1}),
        ["split.train"],
        id="split-ratio-above-1",
    ),
    pytest.param(
        _append("leakage_columns", "distance"),
        ["features include target or leakage columns ['distance']"],
        id="feature-in-leakage-columns",
    ),
    pytest.param(
        _append("features", "dep_delay"),
        ["features names unknown columns ['dep_delay']"],
        id="outcome-column-as-feature",
    ),
    pytest.param(
        _append("entity_key", "gate"),
        ["entity_key column 'gate' is not a column of the features source"],
        id="unknown-entity-key",
    ),
    pytest.param(
        _set("sources.schedule.columns.dest.on_unseen", "quarantine"),
        ["sources.schedule.columns.dest", "needs an 'allowed' list"],
        id="on-unseen-without-allowed",
    ),
    pytest.param(
        _set("sources.schedule.columns.carrier.min", 1),
        ["sources.schedule.columns.carrier", "min/max only apply to int or float"],
        id="range-on-category",
    ),
    pytest.param(
        _set("timezone", "Mars/Olympus_Mons"),
        ["timezone", "unknown time zone"],
        id="unknown-timezone",
    ),
    pytest.param(
        _set("label_delay", "1 day"), ["label_delay", "ISO-8601 duration"], id="bad-duration"
    ),
    pytest.param(
        _set("colour", "blue"),
        ["colour", "Extra inputs are not permitted"],
        id="unknown-top-level-key",
    ),
    pytest.param(
        _set("sources.schedule.pattern", "flights_*_*.csv"),
        ["sources.schedule.pattern", "exactly one '*'"],
        id="pattern-with-two-stars",
    ),
    pytest.param(_set("target.op", "between"), ["target.op"], id="bad-target-op"),
    pytest.param(
        _set("monitoring.drift.features", ["distance", "dep_delay"]),
        ["monitoring.drift.features", "not model features", "dep_delay"],
        id="drift-watches-a-non-feature",
    ),
    pytest.param(
        _set("monitoring.drift.psi_warn", 0.3),
        ["monitoring.drift", "psi_warn (0.3) must be below psi_alert (0.25)"],
        id="drift-warn-above-alert",
    ),
    pytest.param(
        _set("monitoring.retrain_on", ["decay", "weather"]),
        ["monitoring.retrain_on"],
        id="unknown-retrain-trigger",
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), MALFORMED)
def test_malformed_spec_raises_spec_error_naming_file_and_field(
    raw_spec, tmp_path, mutate, expected
):
    """Each broken field is reported with the file name and the field (dotted path or name)."""
    raw = copy.deepcopy(raw_spec)
    mutate(raw)
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, raw))
    message = str(info.value)
    assert message.startswith("flights.yaml: ")
    for text in expected:
        assert text in message, f"{text!r} not in {message!r}"


def test_bad_identifier_as_spec_name_is_rejected(raw_spec, tmp_path):
    """'Flights-1' cannot become a table or path name, even when the file is named after it."""
    raw = copy.deepcopy(raw_spec)
    raw["name"] = "Flights-1"
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, raw, name="Flights-1"))
    assert str(info.value).startswith("Flights-1.yaml: name: spec name 'Flights-1' must match")


@pytest.mark.parametrize("bad", ["Carrier", "dep-delay", "1st"])
def test_bad_identifier_as_column_name_is_rejected(raw_spec, tmp_path, bad):
    """Column names become SQL identifiers, so upper case, dashes and leading digits are refused."""
    raw = copy.deepcopy(raw_spec)
    raw["sources"]["schedule"]["columns"][bad] = {"type": "int"}
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, raw))
    assert "sources.schedule.columns" in str(info.value) and repr(bad) in str(info.value)


def test_name_must_equal_file_stem(raw_spec, tmp_path):
    """A valid spec saved under another file name is refused, naming both."""
    with pytest.raises(SpecError, match=r"name: 'flights' must equal the file name stem 'planes'"):
        load_spec(_write(tmp_path, raw_spec, name="planes"))


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- flights\n- planes\n", "list"), ("just a string\n", "str"), ("", "NoneType")],
    ids=["list", "scalar", "empty"],
)
def test_spec_that_is_not_a_mapping_is_rejected(tmp_path, text, kind):
    path = tmp_path / "flights.yaml"
    path.write_text(text)
    with pytest.raises(
        SpecError, match=rf"^flights\.yaml: expected a mapping at the top level, got {kind}$"
    ):
        load_spec(path)


def test_invalid_yaml_is_rejected(tmp_path):
    path = tmp_path / "flights.yaml"
    path.write_text("name: flights\nsources: [unclosed\n")
    with pytest.raises(SpecError, match=r"^flights\.yaml: not valid YAML"):
        load_spec(path)


def test_missing_spec_file_is_reported_with_its_path(tmp_path):
    missing = tmp_path / "nowhere" / "flights.yaml"
    with pytest.raises(SpecError, match="spec file not found") as info:
        load_spec(missing)
    assert str(missing) in str(info.value)
