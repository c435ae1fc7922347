"""The ML Test Score (Breck, Cai, Nielsen, Salib, Sculley, IEEE Big Data 2017), scored from evidence.

The rubric has 28 tests in four sections of seven. A test scores 0 when absent, 0.5 when
done manually with its results documented and distributed, and 1 when a system runs it
automatically and repeatedly. Each section sums its seven tests; the final score is the
minimum of the four sections.

The score says whether a test is *in place*; the test's outcome (pass, fail, not run,
error) says whether the system is *healthy*. Both come from evidence records: a check
that really executed writes one (see :mod:`flightdeck.gates.promotion`), and tests a pipeline
cannot run by itself are attested in files committed next to the spec (worth 0.5 at
most). Code that merely exists earns nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml

from flightdeck.core.values import utc

Section = Literal["data", "model", "infra", "monitor"]
Mode = Literal["automated", "manual"]
Outcome = Literal["pass", "fail", "not_run", "error"]

SECTIONS: dict[str, str] = {"data": "Data", "model": "Model", "infra": "Infrastructure", "monitor": "Monitoring"}
# Run types in which an automated check counts as "run automatically and repeatedly".
AUTOMATIC_RUN_TYPES = frozenset({"scheduled", "asset_triggered", "ci"})
EXECUTED = frozenset({"pass", "fail"})


@dataclass(frozen=True)
class RubricTest:
    """One of the paper's 28 tests."""

    id: str
    section: str
    number: int
    name: str


def _section(section: str, names: list[str]) -> list[RubricTest]:
    return [RubricTest(f"{section}_{i}", section, i, n) for i, n in enumerate(names, start=1)]


RUBRIC: tuple[RubricTest, ...] = tuple(
    _section("data", [
        "Feature expectations are captured in a schema",
        "All features are beneficial",
        "No feature's cost is too much",
        "Features adhere to meta-level requirements",
        "The data pipeline has appropriate privacy controls",
        "New features can be added quickly",
        "All input feature code is tested",
    ])
    + _section("model", [
        "Model specs are reviewed and submitted",
        "Offline and online metrics correlate",
        "All hyperparameters have been tuned",
        "The impact of model staleness is known",
        "A simpler model is not better",
        "Model quality is sufficient on important data slices",
        "The model is tested for considerations of inclusion",
    ])
    + _section("infra", [
        "Training is reproducible",
        "Model specs are unit tested",
        "The ML pipeline is integration tested",
        "Model quality is validated before serving",
        "The model is debuggable",
        "Models are canaried before serving",
        "Serving models can be rolled back",
    ])
    + _section("monitor", [
        "Dependency changes result in notification",
        "Data invariants hold for inputs",
        "Training and serving are not skewed",
        "Models are not too stale",
        "Models are numerically stable",
        "Computing performance has not regressed",
        "Prediction quality has not regressed",
    ])
)
TESTS: dict[str, RubricTest] = {t.id: t for t in RUBRIC}

# The paper's interpretation of the final score (its Table 1).
BANDS: tuple[tuple[float, str], ...] = (
    (0.0, "More of a research project than a productionized system."),
    (1.0, "Not totally untested, but it is worth considering the possibility of serious holes in reliability."),
    (2.0, "There's been first pass at basic productionization, but additional investment may be needed."),
    (3.0, "Reasonably tested, but it's possible that more of those tests and procedures may be automated."),
    (5.0, "Strong levels of automated testing and monitoring, appropriate for mission-critical systems."),
    (float("inf"), "Exceptional levels of automated testing and monitoring."),
)


def band(score: float) -> str:
    """The paper's interpretation band for a final score (0; (0,1]; (1,2]; (2,3]; (3,5]; >5)."""
    for upper, text in BANDS:
        if score <= upper:
            return text
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class Evidence:
    """One record that a test executed (or could not), for a model version or a code version."""

    test_id: str
    mode: Mode
    outcome: Outcome
    model_name: str
    model_version: str
    run_id: str
    dag_id: str
    run_type: str
    code_version: str
    checked_at: datetime
    valid_until: datetime
    metrics: dict[str, Any] = field(default_factory=dict)
    threshold: dict[str, Any] = field(default_factory=dict)
    artifact_uri: str | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        if self.test_id not in TESTS:
            raise ValueError(f"unknown ML Test Score test id {self.test_id!r}; expected one of {sorted(TESTS)}")

    @property
    def section(self) -> str:
        return TESTS[self.test_id].section

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["section"] = self.section
        row["checked_at"], row["valid_until"] = utc(self.checked_at), utc(self.valid_until)
        row["metrics"] = json.dumps(self.metrics, default=_json_default, sort_keys=True)
        row["threshold"] = json.dumps(self.threshold, default=_json_default, sort_keys=True)
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Evidence:
        values = {k: row[k] for k in ("test_id", "mode", "outcome", "model_name", "model_version", "run_id",
                                      "dag_id", "run_type", "code_version", "checked_at", "valid_until",
                                      "artifact_uri", "detail")}
        values["checked_at"], values["valid_until"] = utc(values["checked_at"]), utc(values["valid_until"])
        values["detail"] = values["detail"] or ""
        return cls(**values, metrics=json.loads(row["metrics"] or "{}"),
                   threshold=json.loads(row["threshold"] or "{}"))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def credit(ev: Evidence, at: datetime) -> float:
    """What one evidence record is worth at ``at``: 1, 0.5 or 0.

    1: an automated check that executed (pass or fail) in a scheduled, sensor- or
    asset-triggered run or in CI, and is still fresh. 0.5: a check executed on a manual
    trigger, or a current attestation of a manual test. 0: expired, errored or not run.
    """
    if at > ev.valid_until or ev.outcome not in EXECUTED:
        return 0.0
    if ev.mode == "automated" and ev.run_type in AUTOMATIC_RUN_TYPES:
        return 1.0
    return 0.5


@dataclass
class TestScore:
    test: RubricTest
    score: float
    outcome: str
    mode: str
    evidence: Evidence | None
    note: str


@dataclass
class ScoreCard:
    """The ML Test Score of one model version."""

    model_name: str
    model_version: str
    tests: list[TestScore]
    at: datetime

    @property
    def sections(self) -> dict[str, float]:
        return {s: sum(t.score for t in self.tests if t.test.section == s) for s in SECTIONS}

    @property
    def final(self) -> float:
        return min(self.sections.values())

    @property
    def band(self) -> str:
        return band(self.final)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name, "model_version": self.model_version, "at": self.at.isoformat(),
            "final": self.final, "band": self.band, "sections": self.sections,
            "tests": [{"id": t.test.id, "section": t.test.section, "number": t.test.number, "name": t.test.name,
                       "score": t.score, "outcome": t.outcome, "mode": t.mode, "note": t.note,
                       "run_id": t.evidence.run_id if t.evidence else None,
                       "run_type": t.evidence.run_type if t.evidence else None,
                       "checked_at": t.evidence.checked_at.isoformat() if t.evidence else None,
                       "valid_until": t.evidence.valid_until.isoformat() if t.evidence else None,
                       "metrics": t.evidence.metrics if t.evidence else {},
                       "threshold": t.evidence.threshold if t.evidence else {},
                       "artifact_uri": t.evidence.artifact_uri if t.evidence else None}
                      for t in self.tests],
        }

    def table(self) -> str:
        """A plain-text table: the 28 tests, the section sums, the final score and its band."""
        lines = [f"ML Test Score of {self.model_name} version {self.model_version} (at {self.at:%Y-%m-%d %H:%M} UTC)",
                 f"{'test':<10} {'score':>5}  {'outcome':<8} {'mode':<10} {'evidence':<22} name / note"]
        for t in self.tests:
            where = t.evidence.run_type if t.evidence else "-"
            lines.append(f"{t.test.id:<10} {t.score:>5.1f}  {t.outcome:<8} {t.mode:<10} {where:<22} "
                         f"{t.test.name}" + (f" -- {t.note}" if t.note else ""))
        lines.append("sections: " + ", ".join(f"{SECTIONS[s]} {v:g}" for s, v in self.sections.items()))
        lines.append(f"final score (minimum of the sections): {self.final:g} -- {self.band}")
        return "\n".join(lines)


def score_card(model_name: str, model_version: str, evidence: Iterable[Evidence], at: datetime | None = None,
               missing_notes: Mapping[str, str] | None = None) -> ScoreCard:
    """Score every test from the best evidence on record (ties go to the newest record).

    Args:
        evidence: records for this model version and for its code version (CI runs).
        missing_notes: test id -> why there is no evidence (shown instead of a bare "absent").
    """
    at = at or datetime.now(UTC)
    by_test: dict[str, list[Evidence]] = {}
    for ev in evidence:
        by_test.setdefault(ev.test_id, []).append(ev)
    notes = dict(missing_notes or {})
    tests = []
    for test in RUBRIC:
        records = sorted(by_test.get(test.id, []), key=lambda e: (credit(e, at), e.checked_at), reverse=True)
        if not records:
            tests.append(TestScore(test, 0.0, "not_run", "-", None, notes.get(test.id, "no evidence on record")))
            continue
        best = records[0]
        value = credit(best, at)
        # the score comes from the best record; the health (outcome) from the newest that executed
        executed = [e for e in records if e.outcome in EXECUTED]
        newest = max(executed, key=lambda e: e.checked_at) if executed else best
        note = newest.detail
        if at > best.valid_until:
            note = f"evidence expired {best.valid_until:%Y-%m-%d}: {note}"
        tests.append(TestScore(test, value, newest.outcome, best.mode, best, note))
    return ScoreCard(model_name, model_version, tests, at)


# ---------------------------------------------------------------- attestations
@dataclass(frozen=True)
class Attestation:
    """A manual test's result, committed to the repo: who did it, when, where the evidence is, until when."""

    test_id: str
    who: str
    when: date
    evidence: str
    expires: date
    outcome: Outcome
    summary: str
    path: Path


class AttestationError(ValueError):
    """An attestation file is malformed (names the file and the field)."""


def load_attestations(folder: Path | None) -> list[Attestation]:
    """Read ``<folder>/*.yaml``; every field is required and checked."""
    if folder is None or not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if not isinstance(raw, dict):
            raise AttestationError(f"{path}: expected a mapping of test, who, when, evidence, expires, outcome, "
                                   "summary")
        missing = [k for k in ("test", "who", "when", "evidence", "expires", "outcome", "summary") if not raw.get(k)]
        if missing:
            raise AttestationError(f"{path}: missing field(s) {missing}")
        if raw["test"] not in TESTS:
            raise AttestationError(f"{path}: test {raw['test']!r} is not an ML Test Score test id "
                                   f"(expected one of {sorted(TESTS)})")
        if raw["outcome"] not in ("pass", "fail"):
            raise AttestationError(f"{path}: outcome must be pass or fail, got {raw['outcome']!r}")
        for key in ("when", "expires"):
            if isinstance(raw[key], datetime) or not isinstance(raw[key], date):
                raise AttestationError(f"{path}: {key} must be a date (YYYY-MM-DD), got {raw[key]!r}")
        if raw["expires"] <= raw["when"]:
            raise AttestationError(f"{path}: expires ({raw['expires']}) must be after when ({raw['when']})")
        out.append(Attestation(raw["test"], str(raw["who"]), raw["when"], str(raw["evidence"]), raw["expires"],
                               raw["outcome"], str(raw["summary"]).strip(), path))
    return out


def attestation_evidence(att: Attestation, model_name: str, model_version: str, code_version: str) -> Evidence:
    """An attestation as a manual evidence record (worth 0.5 while it has not expired)."""
    return Evidence(
        test_id=att.test_id, mode="manual", outcome=att.outcome, model_name=model_name,
        model_version=model_version, run_id=f"attestation:{att.path.name}", dag_id="", run_type="attestation",
        code_version=code_version, checked_at=datetime.combine(att.when, time.min, UTC),
        valid_until=datetime.combine(att.expires, time.min, UTC) + timedelta(days=1),
        metrics={"who": att.who}, threshold={}, artifact_uri=att.evidence,
        detail=f"attested by {att.who} on {att.when}: {att.summary}")
