"""The gates: judge a registered challenger with evidence, then promote it or reject it.

:func:`judge_version` runs every automatable ML Test Score check (:mod:`flightdeck.gates.checks`,
each writes an evidence record), evaluates the hard promotion gates and writes a JSON +
HTML report. :func:`decide` then moves ``champion`` (keeping ``previous_champion``) or
records the rejection; :func:`rollback` points ``champion`` back. Every record is keyed by
the gate run, so re-running a run replaces its records instead of adding to them.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from flightdeck.core import lake, warehouse
from flightdeck.core.context import StageContext
from flightdeck.core.registry import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION, alias_version
from flightdeck.core.spec import parse_duration
from flightdeck.core.values import safe_name
from flightdeck.gates import onnx_parity, rubric
from flightdeck.gates.checks import (
    Candidate,
    CheckResult,
    GateError,
    auc_score,
    bootstrap_difference,
    calibration_error,
    load_candidate,
    load_pyfunc,
    registry_client,
    run_checks,
)
from flightdeck.training import evaluate

log = logging.getLogger(__name__)

MONITORING_NOTE = "no monitoring evidence for this version yet (the monitoring pipeline writes it)"
CI_NOTE = "no test-suite evidence for code version {code}: `make test` (CI) records it"
__all__ = ["CHALLENGER", "CHAMPION", "PREVIOUS_CHAMPION", "GateError", "GateResult", "decide", "judge_version",
           "rollback", "score_version"]


@dataclass
class GateResult:
    """One promotion gate: hard gates must all pass for ``champion`` to move."""

    gate: str
    hard: bool
    passed: bool
    value: float | None
    threshold: float | None
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- the promotion gates
def evaluate_gates(cand: Candidate, checks: dict[str, CheckResult]) -> list[GateResult]:
    """The hard gates (all must pass) from the checks and the test-split metrics."""
    g, metric = cand.gates, cand.spec.training.metric
    out: list[GateResult] = []
    if cand.model is None:
        out.append(GateResult("loads", True, False, None, None, f"cannot load or predict: {cand.load_error}"))
        return out
    out.append(GateResult("loads", True, True, cand.load_seconds, None, "loads from the registry and predicts"))
    scores = np.concatenate([cand.proba["validation"], cand.proba["test"]])
    bad = int((~np.isfinite(scores)).sum() + ((scores < 0) | (scores > 1)).sum())
    out.append(GateResult("numerical_stability", True, bad == 0, float(bad), 0.0,
                          f"{bad} NaN, infinite or out-of-range predictions on validation + test"))
    if bad:
        return out
    y, p = cand.y("test"), cand.proba["test"]
    m = evaluate.classification_metrics(y, p, cand.spec.training.threshold)
    ece = calibration_error(y, p)
    absolute = {"roc_auc": (m["roc_auc"], g.min_roc_auc, m["roc_auc"] >= g.min_roc_auc),
                "log_loss": (m["log_loss"], g.max_log_loss, m["log_loss"] <= g.max_log_loss),
                "calibration_error": (ece, g.max_calibration_error, ece <= g.max_calibration_error)}
    failed = [f"{k} {v:.4f} vs limit {t}" for k, (v, t, ok) in absolute.items() if not ok]
    out.append(GateResult("absolute", True, not failed, m["roc_auc"], g.min_roc_auc,
                          "; ".join(failed) or f"test ROC AUC {m['roc_auc']:.4f} >= {g.min_roc_auc}, log loss "
                          f"{m['log_loss']:.4f} <= {g.max_log_loss}, calibration error {ece:.4f} <= "
                          f"{g.max_calibration_error}",
                          {k: {"value": v, "limit": t} for k, (v, t, _) in absolute.items()}))
    if cand.champion_version is None:
        out.append(GateResult("no_regression", True, True, None, -g.regression_tolerance,
                              "first model: no champion, judged on the absolute gates"))
    elif cand.champion_test is None:
        out.append(GateResult("no_regression", True, False, None, -g.regression_tolerance,
                              f"champion {cand.champion_version} cannot score the test split: {cand.champion_error}"))
    else:
        diff = bootstrap_difference(y, p, cand.champion_test, metric, g.bootstrap_samples, g.confidence,
                                    cand.spec.training.seed)
        ok = diff["ci_low"] >= -g.regression_tolerance
        out.append(GateResult("no_regression", True, ok, diff["difference"], -g.regression_tolerance,
                              f"{metric} vs champion {cand.champion_version}: {diff['difference']:+.4f} "
                              f"({g.confidence:.0%} CI {diff['ci_low']:+.4f} .. {diff['ci_high']:+.4f}); "
                              f"tolerance {g.regression_tolerance}", {**diff, "champion": cand.champion_version}))
    single = single_feature_auc(cand)
    top = max(single.items(), key=lambda kv: kv[1]) if single else ("", 0.5)
    leak = []
    if checks["data_4"].outcome != "pass":
        leak.append(f"feature policy: {checks['data_4'].detail}")
    if m["roc_auc"] > g.max_plausible_roc_auc:
        leak.append(f"test ROC AUC {m['roc_auc']:.4f} is implausibly high (> {g.max_plausible_roc_auc})")
    if top[1] > g.max_single_feature_roc_auc:
        leak.append(f"feature {top[0]!r} alone reaches ROC AUC {top[1]:.4f} on validation "
                    f"(> {g.max_single_feature_roc_auc}): target leakage?")
    out.append(GateResult("leakage", True, not leak, top[1], g.max_single_feature_roc_auc,
                          "; ".join(leak) or f"no leakage signs (strongest single feature {top[0]} "
                          f"ROC AUC {top[1]:.3f})", {"single_feature_roc_auc": single}))
    for gate, test_id in (("baseline", "model_5"), ("slices", "model_6"), ("reproducible", "infra_1"),
                          ("canary", "infra_6")):
        res = checks[test_id]
        passed = res.outcome == "pass" or (res.outcome == "not_run" and test_id == "model_6")
        out.append(GateResult(gate, True, passed, None, None, f"{test_id}: {res.outcome}: {res.detail}",
                              res.metrics))
    return out


def onnx_gate(cand: Candidate) -> GateResult:
    """The ONNX export and its parity: reported, never blocking (the export is optional)."""
    try:
        outcome = onnx_parity.export_version(cand)
    except Exception as exc:  # noqa: BLE001 - the optional export never stops the gate
        log.exception("the ONNX export step failed")
        outcome = onnx_parity.OnnxOutcome("failed", f"the export step failed: {type(exc).__name__}: {exc}")
    return GateResult("onnx_parity", False, outcome.status == "passed", outcome.max_abs_diff, outcome.limit,
                      f"{outcome.status}: {outcome.detail}", onnx_parity.figures(outcome))


def single_feature_auc(cand: Candidate) -> dict[str, float]:
    """Validation ROC AUC of each feature on its own (target-mean encoded categoricals), folded to >= 0.5."""
    Xt, yt = cand.data.X["train"], cand.data.y["train"].astype(float)
    Xv, yv = cand.data.X["validation"], cand.y("validation")
    prior = float(yt.mean())
    out = {}
    for column in cand.layout.columns:
        if column in cand.layout.categorical:
            rates = yt.groupby(Xt[column].fillna("__missing__")).mean()
            values = Xv[column].fillna("__missing__").map(rates).fillna(prior).to_numpy(dtype=float)
        else:
            median = Xt[column].median()
            values = Xv[column].fillna(median if np.isfinite(median) else 0.0).to_numpy(dtype=float)
        auc = auc_score(yv, values)
        out[column] = max(auc, 1 - auc) if np.isfinite(auc) else 0.5
    return out


# ---------------------------------------------------------------- evidence and the score
def _run_type(run_type: str) -> str:
    return run_type.split("__")[0] if run_type else "manual"


def evidence_for(ctx: StageContext, name: str, version: str, code_version: str) -> list[rubric.Evidence]:
    """Every evidence record about this version, its code version (CI), its serving pipeline's monitoring
    and the committed attestations.

    Monitoring evidence (``monitor_*``) is about the pipeline that serves the registered model,
    recorded against the champion it watched: a challenger gets the credit of the monitoring
    that will watch it, within each record's freshness window.
    """
    rows = warehouse.select_rows(ctx.engine, warehouse.test_evidence, {"model_name": name, "model_version": version})
    rows += warehouse.select_rows(ctx.engine, warehouse.test_evidence,
                                  {"model_name": "", "model_version": "", "code_version": code_version})
    rows += warehouse.queries.monitoring_evidence_of_other_versions(ctx.engine, name, version)
    records = [rubric.Evidence.from_row(r) for r in rows]
    folder = ctx.spec.path.parent / ctx.spec.name / "attestations" if ctx.spec.path else None
    records += [rubric.attestation_evidence(a, name, version, code_version) for a in rubric.load_attestations(folder)]
    return records


def missing_notes(code_version: str) -> dict[str, str]:
    notes = {f"monitor_{i}": MONITORING_NOTE for i in range(1, 8)}
    notes.update({t: CI_NOTE.format(code=code_version) for t in ("data_7", "infra_3")})
    notes["model_2"] = "needs online metrics from monitoring across versions; no attestation committed"
    return notes


def score_version(ctx: StageContext, version: str | None = None) -> rubric.ScoreCard:
    """The ML Test Score of a version (default: ``champion``, else ``challenger``) from the evidence on record."""
    client = registry_client(ctx)
    name = ctx.spec.registered_model_name
    version = version or alias_version(client, name, CHAMPION) or alias_version(client, name, CHALLENGER)
    if version is None:
        raise GateError(f"{name} has no champion or challenger yet: train a model first")
    code = client.get_model_version(name, version).tags.get("flightdeck.code_version", "")
    return rubric.score_card(name, version, evidence_for(ctx, name, version, code), missing_notes=missing_notes(code))


# ---------------------------------------------------------------- judging
def resolve_version(ctx: StageContext, version: str | None) -> str:
    if version:
        return str(version)
    found = alias_version(registry_client(ctx), ctx.spec.registered_model_name, CHALLENGER)
    if found is None:
        raise GateError(f"{ctx.spec.registered_model_name} has no challenger to judge")
    return found


def judge_version(ctx: StageContext, version: str | None = None, run_type: str = "manual",
                  min_ml_test_score: float = 0.0) -> dict[str, Any]:
    """Run the checks and gates on a version and write evidence, gate results and the report.

    Returns:
        The verdict (small, JSON-able): version, decision ``promote``/``reject``, reasons,
        the ML Test Score with its band and section sums, and the report URIs.
    """
    spec = ctx.spec
    version = resolve_version(ctx, version)
    name = spec.registered_model_name
    checked_at = warehouse.now()
    valid_until = checked_at + parse_duration(spec.gates.freshness)
    with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp:
        out_dir = Path(tmp) / "report"
        cand = load_candidate(ctx, version, out_dir)
        code = cand.tags.get("flightdeck.code_version", "")
        checks = run_checks(cand)
        try:
            gates = evaluate_gates(cand, checks)
        except Exception as exc:  # noqa: BLE001 - a gate that cannot be evaluated rejects, it never crashes
            log.exception("evaluating the gates failed")
            gates = [GateResult("evaluation", True, False, None, None,
                                f"the gates could not be evaluated: {type(exc).__name__}: {exc}")]
        hard_ok = all(g.passed for g in gates if g.hard)
        checks["infra_4"] = CheckResult("pass" if hard_ok else "fail",
                                        {g.gate: g.passed for g in gates}, {"hard_gates": "all pass"},
                                        "the promotion gate ran: " + ("every hard gate passed" if hard_ok else
                                                                      "hard gates failed: " + ", ".join(
                                                                          g.gate for g in gates if not g.passed)))
        def report_key(file_name: str = "report.html") -> str:
            return lake.gate_report(spec.name, version, ctx.run_id, file_name)

        records = [rubric.Evidence(
            test_id=t, mode="automated", outcome=r.outcome, model_name=name, model_version=version,
            run_id=ctx.run_id, dag_id=ctx.dag_id, run_type=_run_type(run_type), code_version=code,
            checked_at=checked_at, valid_until=valid_until, metrics=r.metrics, threshold=r.threshold,
            artifact_uri=ctx.lake.uri(report_key(r.artifact or "report.html")),
            detail=r.detail) for t, r in checks.items()]
        warehouse.replace_rows(ctx.engine, warehouse.test_evidence,
                               {"model_name": name, "model_version": version, "run_id": ctx.run_id},
                               [e.to_row() for e in records])
        card = rubric.score_card(name, version, evidence_for(ctx, name, version, code), at=checked_at,
                                 missing_notes=missing_notes(code))
        score_ok = card.final >= min_ml_test_score
        gates.append(GateResult("ml_test_score", True, score_ok, card.final, min_ml_test_score,
                                f"ML Test Score {card.final:g} (sections " + ", ".join(
                                    f"{rubric.SECTIONS[s]} {v:g}" for s, v in card.sections.items())
                                + f") vs required {min_ml_test_score:g}"))
        gates.append(onnx_gate(cand))
        warehouse.replace_rows(ctx.engine, warehouse.gate_results,
                               {"model_name": name, "model_version": version, "run_id": ctx.run_id},
                               [{"model_name": name, "model_version": version, "run_id": ctx.run_id,
                                 "gate": g.gate, "hard": g.hard, "passed": g.passed,
                                 "value": _finite(g.value), "threshold": _finite(g.threshold),
                                 "detail": g.detail, "figures": warehouse.to_json(g.figures),
                                 "checked_at": checked_at} for g in gates])
        reasons = [f"{g.gate}: {g.detail}" for g in gates if g.hard and not g.passed]
        verdict = {"spec": spec.name, "registered_model": name, "version": version,
                   "decision": "promote" if not reasons else "reject", "reasons": reasons,
                   "champion": cand.champion_version, "ml_test_score": card.final, "band": card.band,
                   "judged_at": checked_at.isoformat(),
                   "sections": card.sections, "run_id": ctx.run_id, "dag_id": ctx.dag_id,
                   "training_run_id": cand.training_run_id,
                   "gates": {g.gate: {"passed": g.passed, "value": _finite(g.value),
                                      "threshold": _finite(g.threshold)} for g in gates}}
        report = {"verdict": verdict, "score_card": card.to_dict(),
                  "gates": [{"gate": g.gate, "hard": g.hard, "passed": g.passed, "value": _finite(g.value),
                             "threshold": _finite(g.threshold), "detail": g.detail, "figures": g.figures}
                            for g in gates]}
        from flightdeck.gates.report import render_html

        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "report.json").write_text(json.dumps(_finite_json(report), indent=2, allow_nan=False,
                                                        default=rubric._json_default))
        (out_dir / "report.html").write_text(render_html(report))
        for path in out_dir.iterdir():
            ctx.lake.put_file(path, report_key(path.name))
        registry_client(ctx).log_artifacts(cand.training_run_id, str(out_dir),
                                           artifact_path=f"gates/{safe_name(ctx.run_id)}")
    verdict["report_uri"] = ctx.lake.uri(report_key())
    verdict["report_json_uri"] = ctx.lake.uri(report_key("report.json"))
    log.info("\n%s", summary(card, gates, verdict))
    return verdict


def _finite_json(value: Any) -> Any:
    """The report with NaN and infinities as null: strict JSON parsers refuse the bare tokens."""
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_json(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    return value


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def summary(card: rubric.ScoreCard, gates: list[GateResult], verdict: dict[str, Any]) -> str:
    """What the task log prints: the score card, the gates and the decision."""
    lines = [card.table(), "", "promotion gates:"]
    lines += [f"  {'PASS' if g.passed else 'FAIL' if g.hard else 'WARN'} {g.gate:<20} {g.detail}" for g in gates]
    lines.append(f"decision for version {verdict['version']}: {verdict['decision'].upper()}"
                 + (f" ({len(verdict['reasons'])} hard gate(s) failed)" if verdict["reasons"] else ""))
    return "\n".join(lines)


# ---------------------------------------------------------------- deciding
def _record(ctx: StageContext, verdict: dict[str, Any], action: str, decided_by: str,
            previous: str | None) -> None:
    warehouse.replace_rows(ctx.engine, warehouse.promotions,  # one decision per (model, version, run)
                           {"model_name": verdict["registered_model"], "model_version": verdict["version"],
                            "run_id": verdict["run_id"]},
                           [{"model_name": verdict["registered_model"], "model_version": verdict["version"],
                             "run_id": verdict["run_id"], "action": action, "spec_name": ctx.spec.name,
                             "decided_by": decided_by, "previous_champion": previous,
                             "ml_test_score": verdict.get("ml_test_score"),
                             "sections": warehouse.to_json(verdict.get("sections", {})),
                             "gates": warehouse.to_json(verdict.get("gates", {})),
                             "reasons": "\n".join(verdict.get("reasons", [])),
                             "report_uri": verdict.get("report_uri"), "decided_at": warehouse.now()}])


def decide(ctx: StageContext, verdict: dict[str, Any]) -> dict[str, Any]:
    """Act on a verdict: promote (``previous_champion`` <- old champion, ``champion`` <- version) or reject.

    Idempotent: promoting the version that already is champion changes no alias. A promotion
    is refused when champion moved since the verdict or the version was rolled back after it;
    a rejection is always recorded.
    """
    client = registry_client(ctx)
    name, version = verdict["registered_model"], verdict["version"]
    decided_by = f"{verdict['dag_id']}/{verdict['run_id']}"
    current = alias_version(client, name, CHAMPION)
    if verdict["decision"] == "promote" and current not in (verdict["champion"], version):
        raise GateError(f"champion of {name} moved to version {current} after this verdict (judged against "
                        f"{verdict['champion']}): re-run the gate for version {version} instead of acting on it")
    rolled_back = client.get_model_version(name, version).tags.get("flightdeck.rolled_back_at")
    if verdict["decision"] == "promote" and rolled_back and rolled_back > verdict.get("judged_at", ""):
        raise GateError(f"version {version} of {name} was rolled back at {rolled_back}, after this verdict "
                        f"({verdict.get('judged_at')}): judge it again before it may serve")
    if current == version and verdict["decision"] != "promote":
        # a re-check of the serving version failed: alert, but a rejection record would claim it never serves
        client.set_model_version_tag(name, version, "flightdeck.gate.recheck",
                                     f"{verdict['run_id']}: failed: " + "; ".join(verdict["reasons"])[:4800])
        log.warning("re-check of serving version %s of %s failed: %s (roll back with `flightdeck rollback`)",
                    version, name, verdict["reasons"])
        _record(ctx, verdict, "recheck_failed", decided_by, current)
        return {**verdict, "champion": current, "promoted": False}
    tags = {"flightdeck.gate.decision": verdict["decision"], "flightdeck.gate.run_id": verdict["run_id"],
            "flightdeck.gate.decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "flightdeck.gate.reasons": "; ".join(verdict["reasons"])[:4900] or "all hard gates passed",
            "flightdeck.ml_test_score": f"{verdict['ml_test_score']:g}",
            "flightdeck.ml_test_score.band": verdict["band"],
            "flightdeck.gate.report": verdict.get("report_uri", "")}
    for section, value in verdict["sections"].items():
        tags[f"flightdeck.ml_test_score.{section}"] = f"{value:g}"
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if verdict["decision"] != "promote":
        _record(ctx, verdict, "reject", decided_by, current)
        return {**verdict, "champion": current, "promoted": False}
    previous = current
    if current != version:
        if current is not None:  # keep the old champion first: a kill in between leaves a consistent state
            client.set_registered_model_alias(name, PREVIOUS_CHAMPION, current)
        client.set_registered_model_alias(name, CHAMPION, version)
    else:
        previous = alias_version(client, name, PREVIOUS_CHAMPION)
    client.set_model_version_tag(name, version, "flightdeck.promoted_by", decided_by)
    _record(ctx, verdict, "promote", decided_by, previous)
    return {**verdict, "champion": version, "previous_champion": previous, "promoted": True}


def rollback(ctx: StageContext, decided_by: str, reason: str = "") -> dict[str, Any]:
    """Point ``champion`` back to ``previous_champion`` and record it.

    ``previous_champion`` then moves to whatever the restored version had replaced (or is
    removed), so a second rollback goes one step further back instead of flipping.
    """
    client = registry_client(ctx)
    name = ctx.spec.registered_model_name
    current = alias_version(client, name, CHAMPION)
    target = alias_version(client, name, PREVIOUS_CHAMPION)
    if current is None or target is None:
        raise GateError(f"{name}: nothing to roll back to (champion {current}, previous_champion {target})")
    load_pyfunc(name, target)  # never point champion at a version that does not load
    earlier = [r for r in warehouse.select_rows(ctx.engine, warehouse.promotions,
                                                {"model_name": name, "model_version": target,
                                                 "action": "promote"}, order_by=("decided_at",))]
    before = earlier[-1]["previous_champion"] if earlier else None
    client.set_registered_model_alias(name, CHAMPION, target)
    if before and before not in (target, current):
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, before)
    else:
        client.delete_registered_model_alias(name, PREVIOUS_CHAMPION)
    at = datetime.now(UTC)
    client.set_model_version_tag(name, current, "flightdeck.rolled_back_at", at.isoformat(timespec="seconds"))
    client.set_model_version_tag(name, current, "flightdeck.rolled_back_by", decided_by)
    verdict = {"registered_model": name, "version": target, "run_id": f"rollback-{at:%Y%m%dT%H%M%S%f}",
               "reasons": [f"rolled back from version {current}" + (f": {reason}" if reason else "")],
               "sections": {}, "gates": {}}
    _record(ctx, verdict, "rollback", decided_by, current)
    return {"registered_model": name, "champion": target, "rolled_back": current,
            "previous_champion": before if before and before not in (target, current) else None}


# ---------------------------------------------------------------- test-suite evidence (CI)
# ML Test Score tests that the test suite itself runs, and the test files that run them.
SUITE_TESTS: dict[str, tuple[str, ...]] = {
    "data_7": ("tests/unit/training/test_features.py", "tests/unit/data/test_ingest.py",
               "tests/unit/data/test_split.py", "tests/unit/data/test_wrangle.py", "tests/unit/data/test_profile.py",
               "tests/unit/data/test_validate.py", "tests/unit/data/test_bad_input.py"),
    "infra_3": ("tests/integration/",),
}


def record_suite_evidence(warehouse_url: str, outcomes: dict[str, str], code_version: str, run_type: str,
                          run_id: str, freshness: str = "P30D") -> list[rubric.Evidence]:
    """Record Data 7 and Infra 3 from a test session (test node id -> passed/failed/skipped).

    Evidence is about the code version (model name and version empty); a group is recorded
    only when at least one of its tests ran, and passes only when none failed.
    """
    checked_at = warehouse.now()
    records = []
    for test_id, prefixes in SUITE_TESTS.items():
        mine = {n: o for n, o in outcomes.items() if n.startswith(prefixes)}
        counts = {k: sum(1 for o in mine.values() if o == k) for k in ("passed", "failed", "skipped")}
        if counts["passed"] + counts["failed"] == 0:
            continue
        records.append(rubric.Evidence(
            test_id=test_id, mode="automated", outcome="fail" if counts["failed"] else "pass", model_name="",
            model_version="", run_id=run_id, dag_id="pytest", run_type=run_type, code_version=code_version,
            checked_at=checked_at, valid_until=checked_at + parse_duration(freshness), metrics=counts,
            threshold={"failed": 0}, detail=f"{counts['passed']} passed, {counts['failed']} failed, "
                                            f"{counts['skipped']} skipped in {', '.join(prefixes)}"))
    engine = warehouse.connect(warehouse_url)
    for ev in records:
        warehouse.replace_rows(engine, warehouse.test_evidence,
                               {"model_name": "", "model_version": "", "test_id": ev.test_id, "run_id": run_id},
                               [ev.to_row()])
    return records
