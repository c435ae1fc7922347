"""The ML Test Score rubric: the 28 tests, the paper's bands, what one evidence record is
worth, the score card (best record per test, minimum of the sections) and the committed
attestations of manual tests."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import yaml
from flightdeck.gates import rubric
from flightdeck.gates.rubric import AttestationError, Evidence

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
FRESH = timedelta(days=30)
SECTION_ORDER = ("data", "model", "infra", "monitor")


def _ev(test_id: str = "data_1", mode: str = "automated", outcome: str = "pass", run_type: str = "scheduled",
        checked_at: datetime = T0, valid_for: timedelta = FRESH, run_id: str = "run-1", **extra) -> Evidence:
    return Evidence(test_id=test_id, mode=mode, outcome=outcome, model_name="flights_delay", model_version="3",
                    run_id=run_id, dag_id="flights_gate", run_type=run_type, code_version="abc123",
                    checked_at=checked_at, valid_until=checked_at + valid_for, **extra)


# ---------------------------------------------------------------- the rubric
def test_rubric_has_28_tests_in_four_sections_of_seven_numbered_in_order():
    assert [t.id for t in rubric.RUBRIC] == [f"{s}_{i}" for s in SECTION_ORDER for i in range(1, 8)]
    assert all(t.id == f"{t.section}_{t.number}" for t in rubric.RUBRIC)
    assert list(rubric.SECTIONS) == list(SECTION_ORDER)
    assert set(rubric.TESTS) == {t.id for t in rubric.RUBRIC}
    assert len({t.name for t in rubric.RUBRIC}) == 28


@pytest.mark.parametrize(("test_id", "name"), [
    ("data_1", "Feature expectations are captured in a schema"),
    ("data_5", "The data pipeline has appropriate privacy controls"),
    ("model_2", "Offline and online metrics correlate"),
    ("model_5", "A simpler model is not better"),
    ("infra_1", "Training is reproducible"),
    ("infra_7", "Serving models can be rolled back"),
    ("monitor_3", "Training and serving are not skewed"),
    ("monitor_7", "Prediction quality has not regressed"),
])
def test_rubric_uses_the_papers_wording(test_id, name):
    assert rubric.TESTS[test_id].name == name


# ---------------------------------------------------------------- band
@pytest.mark.parametrize(("score", "words"), [
    (0.0, "research project"),
    (0.5, "Not totally untested"),
    (1.0, "Not totally untested"),
    (1.5, "first pass at basic productionization"),
    (2.0, "first pass at basic productionization"),
    (2.5, "Reasonably tested"),
    (3.0, "Reasonably tested"),
    (3.5, "Strong levels"),
    (5.0, "Strong levels"),
    (5.5, "Exceptional levels"),
    (7.0, "Exceptional levels"),
])
def test_band_follows_the_papers_table_with_closed_upper_bounds(score, words):
    """Bands are 0; (0,1]; (1,2]; (2,3]; (3,5]; >5: an upper bound belongs to the lower band."""
    assert words in rubric.band(score)


def test_every_band_is_reachable_and_distinct():
    texts = [rubric.band(s) for s in (0, 1, 2, 3, 5, 6)]
    assert texts == [text for _, text in rubric.BANDS]
    assert len(set(texts)) == 6


# ---------------------------------------------------------------- Evidence
@pytest.mark.parametrize("bad_id", ["data_8", "data_0", "Data_1", "infra", "", "monitoring_1"])
def test_evidence_refuses_an_unknown_test_id(bad_id):
    with pytest.raises(ValueError, match="unknown ML Test Score test id"):
        _ev(test_id=bad_id)


@pytest.mark.parametrize(("test_id", "section"), [("data_7", "data"), ("model_1", "model"), ("infra_4", "infra"),
                                                   ("monitor_6", "monitor")])
def test_evidence_knows_its_section(test_id, section):
    assert _ev(test_id=test_id).section == section


def test_to_row_adds_the_section_and_stores_figures_as_sorted_json():
    """numpy scalars (what checks compute) become plain JSON numbers."""
    ev = _ev(test_id="infra_6", metrics={"rows": np.int64(200), "psi": np.float64(0.125), "a": [1, 2]},
             threshold={"max_psi": 0.2}, artifact_uri="file:///tmp/report.html", detail="ok")
    row = ev.to_row()
    assert row["section"] == "infra"
    assert row["metrics"] == '{"a": [1, 2], "psi": 0.125, "rows": 200}'
    assert json.loads(row["threshold"]) == {"max_psi": 0.2}
    assert row["checked_at"] == T0 and row["valid_until"] == T0 + FRESH
    assert {k: row[k] for k in ("test_id", "mode", "outcome", "run_type", "artifact_uri", "detail")} == {
        "test_id": "infra_6", "mode": "automated", "outcome": "pass", "run_type": "scheduled",
        "artifact_uri": "file:///tmp/report.html", "detail": "ok"}


def test_from_row_inverts_to_row():
    ev = _ev(test_id="model_6", outcome="fail", metrics={"worst_slice": "carrier=OO", "auc": 0.61},
             threshold={"min_auc": 0.65}, artifact_uri=None, detail="one slice below the floor")
    assert Evidence.from_row(ev.to_row()) == ev


def test_from_row_reads_naive_database_datetimes_as_utc_and_fills_empty_columns():
    """SQLite hands back naive datetimes and NULLs; the record comes back aware, with empty figures."""
    row = _ev().to_row() | {"checked_at": datetime(2026, 6, 1, 12, 0), "valid_until": datetime(2026, 7, 1, 12, 0),
                            "metrics": None, "threshold": "", "detail": None}
    ev = Evidence.from_row(row)
    assert ev.checked_at == T0 and ev.checked_at.tzinfo is not None
    assert ev.valid_until == datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert (ev.metrics, ev.threshold, ev.detail) == ({}, {}, "")


def test_from_row_keeps_an_aware_datetime_as_the_same_instant():
    plus_two = timezone(timedelta(hours=2))
    row = _ev().to_row() | {"checked_at": datetime(2026, 6, 1, 14, 0, tzinfo=plus_two)}
    assert Evidence.from_row(row).checked_at == T0


# ---------------------------------------------------------------- credit
@pytest.mark.parametrize(("mode", "outcome", "run_type", "age", "expected"), [
    # executed automatically and repeatedly, still fresh: full credit, whatever the outcome
    ("automated", "pass", "scheduled", timedelta(0), 1.0),
    ("automated", "fail", "scheduled", timedelta(0), 1.0),
    ("automated", "pass", "asset_triggered", timedelta(days=29), 1.0),
    ("automated", "pass", "ci", timedelta(hours=1), 1.0),
    ("automated", "pass", "scheduled", FRESH, 1.0),  # at == valid_until still counts
    # executed, but by hand: half
    ("automated", "pass", "manual", timedelta(0), 0.5),
    ("automated", "fail", "backfill", timedelta(0), 0.5),
    ("automated", "pass", "attestation", timedelta(0), 0.5),
    ("manual", "pass", "attestation", timedelta(0), 0.5),
    ("manual", "fail", "attestation", timedelta(0), 0.5),
    ("manual", "pass", "scheduled", timedelta(0), 0.5),
    # not executed or expired: nothing
    ("automated", "error", "scheduled", timedelta(0), 0.0),
    ("automated", "not_run", "scheduled", timedelta(0), 0.0),
    ("manual", "not_run", "attestation", timedelta(0), 0.0),
    ("automated", "pass", "scheduled", FRESH + timedelta(seconds=1), 0.0),
    ("manual", "pass", "attestation", FRESH + timedelta(days=1), 0.0),
    ("automated", "pass", "ci", timedelta(days=400), 0.0),
])
def test_credit_is_one_for_automated_runs_half_for_manual_ones_zero_when_not_executed_or_expired(
        mode, outcome, run_type, age, expected):
    assert rubric.credit(_ev(mode=mode, outcome=outcome, run_type=run_type), T0 + age) == expected


# ---------------------------------------------------------------- score_card
def test_without_evidence_every_test_scores_zero_with_a_note():
    card = rubric.score_card("flights_delay", "3", [], at=T0, missing_notes={"monitor_1": "monitoring not wired"})
    assert [t.test.id for t in card.tests] == [t.id for t in rubric.RUBRIC]
    assert all((t.score, t.outcome, t.mode, t.evidence) == (0.0, "not_run", "-", None) for t in card.tests)
    notes = {t.test.id: t.note for t in card.tests}
    assert notes["monitor_1"] == "monitoring not wired"
    assert notes["data_1"] == "no evidence on record"
    assert card.sections == {"data": 0.0, "model": 0.0, "infra": 0.0, "monitor": 0.0}
    assert card.final == 0.0 and "research project" in card.band


@pytest.mark.parametrize(("records", "score", "outcome", "run_id"), [
    pytest.param([_ev(run_type="scheduled", checked_at=T0 - timedelta(days=2), run_id="auto"),
                  _ev(mode="manual", run_type="attestation", run_id="manual")],
                 1.0, "pass", "auto", id="older-automated-beats-newer-manual"),
    pytest.param([_ev(outcome="pass", checked_at=T0 - timedelta(days=2), run_id="old"),
                  _ev(outcome="fail", checked_at=T0 - timedelta(days=1), run_id="new")],
                 1.0, "fail", "new", id="equal-credit-newest-wins-even-if-it-failed"),
    pytest.param([_ev(outcome="pass", checked_at=T0 - timedelta(days=1), run_id="new"),
                  _ev(outcome="fail", checked_at=T0 - timedelta(days=2), run_id="old")],
                 1.0, "pass", "new", id="equal-credit-newest-wins-in-any-input-order"),
    pytest.param([_ev(outcome="pass", checked_at=T0 - timedelta(days=3), run_id="ok"),
                  _ev(outcome="error", checked_at=T0, run_id="crashed")],
                 1.0, "pass", "ok", id="a-crash-does-not-hide-an-earlier-run"),
    pytest.param([_ev(checked_at=T0 - timedelta(days=60), run_id="stale"),
                  _ev(run_type="manual", checked_at=T0 - timedelta(days=1), run_id="by-hand")],
                 0.5, "pass", "by-hand", id="manual-trigger-beats-expired-automated"),
    pytest.param([_ev(outcome="not_run", run_id="skipped")],
                 0.0, "not_run", "skipped", id="not-run-is-shown-with-zero"),
])
def test_score_card_scores_each_test_from_its_best_record(records, score, outcome, run_id):
    card = rubric.score_card("flights_delay", "3", records, at=T0)
    data_1 = card.tests[0]
    assert data_1.test.id == "data_1"
    assert (data_1.score, data_1.outcome, data_1.evidence.run_id) == (score, outcome, run_id)


def test_expired_evidence_scores_zero_and_says_when_it_expired():
    old = _ev(checked_at=datetime(2026, 1, 1, tzinfo=UTC), detail="all batches validated", run_id="old")
    older = _ev(checked_at=datetime(2025, 12, 1, tzinfo=UTC), run_id="older")
    t = rubric.score_card("m", "1", [older, old], at=T0).tests[0]
    assert (t.score, t.outcome, t.mode, t.evidence.run_id) == (0.0, "pass", "automated", "old")
    assert t.note == "evidence expired 2026-01-31: all batches validated"


def _mixed_evidence() -> list[Evidence]:
    """Data 7 automated; Model 3 automated + 2 manual; Infra 1 + 0.5; Monitoring 2 automated."""
    records = [_ev(test_id=f"data_{i}", run_id=f"d{i}") for i in range(1, 8)]
    records += [_ev(test_id=f"model_{i}", run_id=f"m{i}") for i in range(1, 4)]
    records += [_ev(test_id=f"model_{i}", mode="manual", run_type="attestation", run_id=f"m{i}") for i in (4, 5)]
    records += [_ev(test_id="infra_1", run_type="ci", run_id="i1"), _ev(test_id="infra_2", run_type="backfill"),
                _ev(test_id="infra_3", outcome="error")]
    records += [_ev(test_id="monitor_1", run_type="asset_triggered"), _ev(test_id="monitor_2")]
    return records


def test_sections_sum_their_tests_and_the_final_score_is_the_minimum():
    card = rubric.score_card("flights_delay", "3", _mixed_evidence(), at=T0)
    assert card.sections == {"data": 7.0, "model": 4.0, "infra": 1.5, "monitor": 2.0}
    assert card.final == 1.5
    assert card.band == rubric.band(1.5)
    assert "first pass" in card.band


def test_one_empty_section_makes_the_final_score_zero():
    full = [_ev(test_id=t.id, run_id=t.id) for t in rubric.RUBRIC if t.section != "monitor"]
    card = rubric.score_card("m", "1", full, at=T0)
    assert card.sections == {"data": 7.0, "model": 7.0, "infra": 7.0, "monitor": 0.0}
    assert card.final == 0.0


def test_a_full_house_of_automated_evidence_scores_seven():
    card = rubric.score_card("m", "1", [_ev(test_id=t.id) for t in rubric.RUBRIC], at=T0)
    assert card.final == 7.0 and "Exceptional" in card.band


def test_table_lists_every_test_the_sections_and_the_final_score():
    card = rubric.score_card("flights_delay", "3", _mixed_evidence(), at=T0,
                             missing_notes={"monitor_7": "no labels yet"})
    lines = card.table().splitlines()
    assert lines[0] == "ML Test Score of flights_delay version 3 (at 2026-06-01 12:00 UTC)"
    rows = lines[2:30]
    assert [r.split()[0] for r in rows] == [t.id for t in rubric.RUBRIC]
    assert rows[0].split()[1:4] == ["1.0", "pass", "automated"]
    assert rows[rubric.RUBRIC.index(rubric.TESTS["model_4"])].split()[1:5] == ["0.5", "pass", "manual", "attestation"]
    assert rows[-1].endswith("Prediction quality has not regressed -- no labels yet")
    assert lines[30] == "sections: Data 7, Model 4, Infrastructure 1.5, Monitoring 2"
    assert lines[31] == f"final score (minimum of the sections): 1.5 -- {rubric.band(1.5)}"
    assert len(lines) == 32


def test_to_dict_is_json_ready_and_carries_each_tests_evidence():
    card = rubric.score_card("flights_delay", "3", _mixed_evidence(), at=T0)
    out = json.loads(json.dumps(card.to_dict()))
    assert (out["model_name"], out["model_version"], out["at"]) == ("flights_delay", "3", T0.isoformat())
    assert (out["final"], out["band"]) == (1.5, card.band)
    assert out["sections"] == {"data": 7.0, "model": 4.0, "infra": 1.5, "monitor": 2.0}
    assert [t["id"] for t in out["tests"]] == [t.id for t in rubric.RUBRIC]
    infra_1 = next(t for t in out["tests"] if t["id"] == "infra_1")
    assert {k: infra_1[k] for k in ("section", "number", "score", "outcome", "mode", "run_id", "run_type",
                                    "checked_at", "valid_until")} == {
        "section": "infra", "number": 1, "score": 1.0, "outcome": "pass", "mode": "automated", "run_id": "i1",
        "run_type": "ci", "checked_at": T0.isoformat(), "valid_until": (T0 + FRESH).isoformat()}
    absent = next(t for t in out["tests"] if t["id"] == "monitor_7")
    assert absent["score"] == 0.0 and absent["run_id"] is None and absent["metrics"] == {}
    assert absent["note"] == "no evidence on record"


# ---------------------------------------------------------------- attestations
VALID = {"test": "data_6", "who": "Ada Lovelace", "when": date(2026, 11, 1), "evidence": "docs/review.md",
         "expires": date(2027, 5, 1), "outcome": "pass", "summary": "Added a feature in one spec line.\n"}


def _write(folder: Path, name: str, content: dict | list | str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def test_a_valid_attestation_loads_with_typed_fields(tmp_path):
    path = _write(tmp_path, "data_6.yaml", VALID)
    [att] = rubric.load_attestations(tmp_path)
    assert att == rubric.Attestation("data_6", "Ada Lovelace", date(2026, 11, 1), "docs/review.md",
                                     date(2027, 5, 1), "pass", "Added a feature in one spec line.", path)


def test_attestations_load_in_file_name_order(tmp_path):
    _write(tmp_path, "b.yaml", VALID | {"test": "model_1"})
    _write(tmp_path, "a.yaml", VALID | {"test": "infra_3"})
    assert [a.test_id for a in rubric.load_attestations(tmp_path)] == ["infra_3", "model_1"]


@pytest.mark.parametrize("folder", [None, Path("/nonexistent/flightdeck/attestations")])
def test_no_attestation_folder_means_no_attestations(folder):
    assert rubric.load_attestations(folder) == []


def _without(*keys: str) -> dict:
    return {k: v for k, v in VALID.items() if k not in keys}


@pytest.mark.parametrize(("content", "message"), [
    pytest.param(_without("who"), r"missing field\(s\) \['who'\]", id="missing-who"),
    pytest.param(_without("evidence", "summary"), r"missing field\(s\) \['evidence', 'summary'\]",
                 id="missing-two"),
    pytest.param(VALID | {"summary": ""}, r"missing field\(s\) \['summary'\]", id="empty-summary"),
    pytest.param(_without("test"), r"missing field\(s\) \['test'\]", id="missing-test"),
    pytest.param(VALID | {"test": "data_8"}, "test 'data_8' is not an ML Test Score test id", id="unknown-test"),
    pytest.param(VALID | {"outcome": "not_run"}, "outcome must be pass or fail, got 'not_run'", id="not-run"),
    pytest.param(VALID | {"outcome": "error"}, "outcome must be pass or fail, got 'error'", id="error"),
    pytest.param(VALID | {"outcome": "passed"}, "outcome must be pass or fail", id="misspelt-outcome"),
    pytest.param(VALID | {"when": "27/11/2026"}, r"when must be a date \(YYYY-MM-DD\), got '27/11/2026'",
                 id="when-not-a-date"),
    pytest.param(VALID | {"expires": "in six months"}, "expires must be a date", id="expires-not-a-date"),
    pytest.param(VALID | {"expires": 2027}, "expires must be a date", id="expires-a-number"),
    pytest.param(VALID | {"expires": date(2026, 11, 1)}, r"expires \(2026-11-01\) must be after when \(2026-11-01\)",
                 id="expires-on-the-same-day"),
    pytest.param(VALID | {"expires": date(2026, 10, 1)}, "must be after when", id="expires-before-when"),
    pytest.param(["data_6", "pass"], "expected a mapping", id="a-list"),
    pytest.param("", "expected a mapping", id="empty-file"),
])
def test_a_malformed_attestation_is_refused_naming_the_file(tmp_path, content, message):
    _write(tmp_path, "good.yaml", VALID | {"test": "model_1"})
    path = _write(tmp_path, "z_bad.yaml", content)
    with pytest.raises(AttestationError, match=message) as info:
        rubric.load_attestations(tmp_path)
    assert str(info.value).startswith(f"{path}: ")


def test_a_when_with_a_time_of_day_is_refused_with_an_attestation_error(tmp_path):
    _write(tmp_path, "data_6.yaml",
           "test: data_6\nwho: Ada\nwhen: 2026-11-27 09:30:00\nevidence: review.md\nexpires: 2027-05-27\n"
           "outcome: pass\nsummary: done\n")
    with pytest.raises(AttestationError, match="when"):
        rubric.load_attestations(tmp_path)


def test_attestation_evidence_is_a_manual_record_valid_through_the_expiry_day(tmp_path):
    _write(tmp_path, "data_6_new_features.yaml", VALID)
    [att] = rubric.load_attestations(tmp_path)
    ev = rubric.attestation_evidence(att, "flights_delay", "3", "abc123")
    assert (ev.test_id, ev.mode, ev.outcome, ev.run_type, ev.dag_id) == ("data_6", "manual", "pass", "attestation", "")
    assert (ev.model_name, ev.model_version, ev.code_version) == ("flights_delay", "3", "abc123")
    assert ev.run_id == "attestation:data_6_new_features.yaml"
    assert ev.checked_at == datetime(2026, 11, 1, tzinfo=UTC)
    assert ev.valid_until == datetime(2027, 5, 2, tzinfo=UTC)
    assert ev.artifact_uri == "docs/review.md" and ev.metrics == {"who": "Ada Lovelace"}
    assert ev.detail == "attested by Ada Lovelace on 2026-11-01: Added a feature in one spec line."


@pytest.mark.parametrize(("at", "expected"), [
    (datetime(2026, 11, 1, tzinfo=UTC), 0.5),
    (datetime(2027, 2, 14, 9, 0, tzinfo=UTC), 0.5),
    (datetime(2027, 5, 1, 23, 59, tzinfo=UTC), 0.5),
    (datetime(2027, 5, 2, 0, 0, 1, tzinfo=UTC), 0.0),
    (datetime(2028, 1, 1, tzinfo=UTC), 0.0),
])
def test_an_attestation_is_worth_half_until_it_expires_then_nothing(tmp_path, at, expected):
    _write(tmp_path, "a.yaml", VALID | {"outcome": "fail"})
    [att] = rubric.load_attestations(tmp_path)
    assert rubric.credit(rubric.attestation_evidence(att, "m", "1", "c"), at) == expected


def test_an_attestation_never_outranks_an_automated_run_in_the_score_card(tmp_path):
    _write(tmp_path, "a.yaml", VALID)
    [att] = rubric.load_attestations(tmp_path)
    at = datetime(2026, 12, 1, tzinfo=UTC)
    auto = _ev(test_id="data_6", checked_at=datetime(2026, 11, 20, tzinfo=UTC), run_id="auto")
    attested = rubric.attestation_evidence(att, "m", "1", "c")
    only = rubric.score_card("m", "1", [attested], at=at).tests[5]
    both = rubric.score_card("m", "1", [attested, auto], at=at).tests[5]
    assert (only.test.id, only.score, only.mode) == ("data_6", 0.5, "manual")
    assert only.note.startswith("attested by Ada Lovelace")
    assert (both.score, both.mode, both.evidence.run_id) == (1.0, "automated", "auto")


def test_the_committed_flights_attestations_load_and_count_until_they_expire(flights_spec):
    """Where gates.evidence_for looks: <spec dir>/<spec name>/attestations."""
    folder = flights_spec.path.parent / flights_spec.name / "attestations"
    assert folder.is_dir()
    atts = rubric.load_attestations(folder)
    assert len(atts) == len(list(folder.glob("*.yaml"))) >= 1
    assert len({a.test_id for a in atts}) == len(atts)
    for att in atts:
        ev = rubric.attestation_evidence(att, "flights_delay", "1", "c")
        assert att.who and att.summary and att.when < att.expires
        assert rubric.credit(ev, datetime.combine(att.when, datetime.min.time(), UTC)) == 0.5
        assert rubric.credit(ev, datetime.combine(att.expires + timedelta(days=1), datetime.min.time(), UTC)
                             + timedelta(seconds=1)) == 0.0


def test_the_suite_evidence_names_test_files_that_exist():
    """Data 7 and Infra 3 are read off test node ids: a moved test file would silently drop the evidence."""
    from pathlib import Path

    from flightdeck.gates.promotion import SUITE_TESTS

    repo = Path(__file__).resolve().parents[3]
    for test_id, prefixes in SUITE_TESTS.items():
        for prefix in prefixes:
            assert (repo / prefix).exists(), f"{test_id}: {prefix} does not exist"
