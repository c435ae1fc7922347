"""Monitoring without a trained model: the stability verdicts, realised decay against the
version's promise (never a zero metric without labels), the retraining decision and its
cooldown, the ML Test Score evidence, the dependency fingerprints, scoring performance
against the rolling median, and the printed table. Every test runs on a private SQLite
warehouse under ``tmp_path``."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flightdeck.core import warehouse
from flightdeck.core.settings import Settings
from flightdeck.core.spec import DatasetSpec
from flightdeck.data.runners import StageContext
from flightdeck.monitoring import monitor as monitoring
from flightdeck.monitoring.monitor import Figure
from flightdeck.serving import predictions

AT = datetime(2013, 3, 1, 6, 0, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose home, warehouse and registry all live under ``tmp_path``."""
    return Settings.from_env({"FLIGHTDECK_HOME": str(tmp_path / "fd"),
                              "FLIGHTDECK_WAREHOUSE_URL": f"sqlite:///{tmp_path / 'warehouse.db'}",
                              "FLIGHTDECK_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
                              "FLIGHTDECK_PSEUDONYMISATION_KEY": "test-key-not-secret"})


def _ctx(spec: DatasetSpec, settings: Settings, run_id: str = "monitor__test") -> StageContext:
    return StageContext(spec, settings, run_id=run_id, dag_id="flightdeck_flights_monitoring",
                        workdir=settings.home)


@pytest.fixture
def ctx(flights_spec: DatasetSpec, settings: Settings) -> StageContext:
    return _ctx(flights_spec, settings)


def _with_monitoring(spec: DatasetSpec, decay: dict | None = None, **changes) -> DatasetSpec:
    """The spec with ``monitoring`` (and ``monitoring.decay``) fields replaced."""
    mon = spec.monitoring
    if decay:
        changes["decay"] = mon.decay.model_copy(update=decay)
    return spec.model_copy(update={"monitoring": mon.model_copy(update=changes)})


def _by_metric(figures: list[Figure], subject: str = "") -> dict[str, Figure]:
    return {f.metric: f for f in figures if f.subject == subject}


# ---------------------------------------------------------------- stability (Monitor 5)
def _scores(*extra: float, base: float = 0.5, n: int = 100) -> np.ndarray:
    """``n`` scores: ``extra`` followed by ``base`` for the rest."""
    return np.array([*extra, *([base] * (n - len(extra)))], dtype="float64")


STABLE = {"nan_scores": (0.0, "ok"), "infinite_scores": (0.0, "ok"), "out_of_range_scores": (0.0, "ok"),
          "extreme_share": (0.0, "ok")}


@pytest.mark.parametrize(("scores", "expected"), [
    pytest.param(np.linspace(0.1, 0.9, 100), STABLE, id="clean batch: all ok"),
    pytest.param(_scores(np.nan, np.nan, np.nan), {**STABLE, "nan_scores": (3.0, "alert")}, id="NaN alerts"),
    pytest.param(_scores(np.nan), {**STABLE, "nan_scores": (1.0, "alert")}, id="a single NaN alerts"),
    pytest.param(_scores(np.inf), {**STABLE, "infinite_scores": (1.0, "alert")}, id="a single inf alerts"),
    pytest.param(_scores(1.0001), {**STABLE, "out_of_range_scores": (1.0, "alert"), "extreme_share": (0.0, "ok")},
                 id="a single score above 1 alerts"),
    pytest.param(_scores(0.0, 1.0), {**STABLE, "extreme_share": (0.02, "ok")}, id="0 and 1 are in range"),
    pytest.param(_scores(np.inf, np.inf, -np.inf), {**STABLE, "infinite_scores": (3.0, "alert")},
                 id="inf and -inf alert"),
    # out-of-range scores are counted (and alert) once, as out of range, not again as extreme
    pytest.param(_scores(-0.1, 1.5), {**STABLE, "out_of_range_scores": (2.0, "alert"), "extreme_share": (0.0, "ok")},
                 id="out of [0, 1] alerts"),
    pytest.param(_scores(0.001, 0.999), {**STABLE, "extreme_share": (0.02, "ok")}, id="extremes under half: ok"),
    pytest.param(_scores(0.001, 0.002, 0.999), {**STABLE, "extreme_share": (0.03, "warn")},
                 id="extremes above half the limit: warn"),
    pytest.param(_scores(*[0.001] * 5), {**STABLE, "extreme_share": (0.05, "warn")},
                 id="extremes exactly at the limit: warn, not alert"),
    pytest.param(_scores(*[0.001] * 3, *[0.995] * 3), {**STABLE, "extreme_share": (0.06, "alert")},
                 id="extremes above the limit: alert"),
    pytest.param(_scores(0.01, 0.99), STABLE, id="the extreme bound itself is not extreme"),
])
def test_stability_counts_bad_scores_and_judges_the_extreme_share(ctx, scores, expected):
    """NaN, infinite and out-of-range scores alert with their counts; the extreme share warns
    above half of ``max_extreme_share`` and alerts above it (flights: 0.01 / 0.05)."""
    assert (ctx.spec.monitoring.extreme_score, ctx.spec.monitoring.max_extreme_share) == (0.01, 0.05)
    figures = monitoring.check_stability(ctx, scores, "2013-03-01", "3")
    got = _by_metric(figures)
    assert {m: (round(got[m].value, 9), got[m].status) for m in expected} == expected
    assert all(f.check == "stability" and f.partition == "2013-03-01" and f.model_version == "3"
               and f.rows == len(scores) for f in figures)
    finite = scores[np.isfinite(scores)]
    assert got["mean_score"].value == pytest.approx(finite.mean())
    assert got["mean_score"].status == "ok"


def test_stability_of_an_empty_or_all_nan_batch_has_no_mean_score(ctx):
    """Nothing finite to average: the mean score is insufficient (None), never 0."""
    empty = _by_metric(monitoring.check_stability(ctx, np.array([]), "2013-03-01", "3"))
    assert (empty["mean_score"].value, empty["mean_score"].status) == (None, "insufficient")
    assert empty["extreme_share"].value == 0.0
    nans = _by_metric(monitoring.check_stability(ctx, np.array([np.nan, np.nan]), "2013-03-01", "3"))
    assert (nans["mean_score"].value, nans["mean_score"].status) == (None, "insufficient")
    assert (nans["nan_scores"].value, nans["nan_scores"].status) == (2.0, "alert")


# ---------------------------------------------------------------- decay (Monitor 7)
def _labelled(kind: str, n: int = 4000) -> pd.DataFrame:
    """Labelled predictions: ``calibrated`` (ROC AUC ~0.71, log loss ~0.53) or ``shuffled``
    (the same scores shuffled: ROC AUC ~0.51, log loss ~0.65)."""
    rng = np.random.default_rng(0)
    p = rng.beta(2, 5, size=n)
    y = (rng.uniform(size=n) < p).astype(int)
    if kind == "shuffled":
        p = rng.permutation(p)
    return pd.DataFrame({"_y": y, "score": p})


def test_decay_without_labels_is_one_no_labels_figure_never_a_zero_metric(ctx):
    """Zero labelled rows: exactly one figure, ``no_labels`` with value None."""
    empty = pd.DataFrame(columns=["_y", "score"])
    figures = monitoring.decay_figures(ctx, empty, "2013-03-01", "rolling", 0.5, "3", 0.72, {"window": "P14D"})
    assert len(figures) == 1
    (f,) = figures
    assert (f.check, f.metric, f.status, f.value, f.rows) == ("decay", "roc_auc", "no_labels", None, 0)
    assert f.row("flights", "m", "r", AT)["value"] is None


@pytest.mark.parametrize("rows", [1, 100, 2999])
def test_decay_on_fewer_rows_than_min_labelled_gives_no_verdict(ctx, rows):
    """Below ``decay.min_labelled`` (flights: 3000) every figure is ``insufficient``, even a poor one."""
    joined = _labelled("shuffled").head(rows)
    figures = monitoring.decay_figures(ctx, joined, "2013-03-01", "rolling", 0.5, "3", 0.72, {})
    assert figures and {f.status for f in figures} == {"insufficient"}
    assert all(f.rows == rows for f in figures)


@pytest.mark.parametrize(("metric", "kind", "reference", "min_value", "status", "limit"), [
    # roc_auc: higher is better, the limit is reference - max_drop (0.05)
    ("roc_auc", "calibrated", 0.72, None, "ok", 0.67),
    ("roc_auc", "shuffled", 0.72, None, "alert", 0.67),
    ("roc_auc", "calibrated", 0.80, None, "alert", 0.75),
    ("roc_auc", "shuffled", None, None, "insufficient", None),  # no promise, no floor: never "ok" by default
    ("roc_auc", "shuffled", None, 0.6, "alert", None),        # the absolute floor alone
    ("roc_auc", "calibrated", None, 0.6, "ok", None),
    # log_loss: lower is better, the limit is reference + max_drop
    ("log_loss", "calibrated", 0.52, None, "ok", 0.57),
    ("log_loss", "shuffled", 0.52, None, "alert", 0.57),
    ("log_loss", "calibrated", 0.40, None, "alert", 0.45),
    ("log_loss", "calibrated", 0.70, None, "ok", 0.75),       # far below the limit: better, not decayed
    ("log_loss", "shuffled", None, 0.6, "alert", None),       # the floor is a ceiling for a loss
])
def test_decay_judges_the_realised_metric_against_the_versions_promise(ctx, metric, kind, reference, min_value,
                                                                       status, limit):
    """Enough labelled rows: alert when the realised metric is worse than the reference by more
    than ``max_drop`` (or past ``min_value``), in the metric's own direction."""
    spec = _with_monitoring(ctx.spec, decay={"metric": metric, "min_value": min_value})
    c = _ctx(spec, ctx.settings)
    figures = monitoring.decay_figures(c, _labelled(kind), "2013-03-01", "rolling", 0.5, "3", reference,
                                       {"window": "P14D"})
    main = _by_metric(figures)[metric]
    assert main.status == status
    assert main.threshold == (None if limit is None else pytest.approx(limit))
    assert main.detail["reference"] == reference and main.detail["window"] == "P14D"
    assert (main.window, main.rows, main.model_version) == ("rolling", 4000, "3")
    others = [f for f in figures if f.metric != metric]
    assert others and {f.status for f in others} == {"ok"}   # companions are reported, never judged
    assert all(f.threshold is None for f in others)


def test_decay_flips_direction_for_log_loss(ctx):
    """The same figures: a low log loss is fine where the same number as ROC AUC would alert."""
    joined = _labelled("calibrated")
    auc = monitoring.decay_figures(ctx, joined, "2013-03-01", "rolling", 0.5, "3", 0.9, {})
    spec = _with_monitoring(ctx.spec, decay={"metric": "log_loss"})
    loss = monitoring.decay_figures(_ctx(spec, ctx.settings), joined, "2013-03-01", "rolling", 0.5, "3", 0.9, {})
    assert _by_metric(auc)["roc_auc"].status == "alert"     # 0.71 < 0.9 - 0.05
    assert _by_metric(loss)["log_loss"].status == "ok"      # 0.53 < 0.9 + 0.05


# ---------------------------------------------------------------- the retraining decision
def _alert(ctx: StageContext, run_id: str, as_of: str, check: str = "decay", metric: str = "roc_auc",
           window: str = "rolling", status: str = "alert", subject: str = "", value: float = 0.61,
           threshold: float = 0.67) -> None:
    """Store one figure of monitoring run ``run_id`` as the monitoring run would."""
    row = Figure(check, metric, value, status, threshold, subject=subject, partition=as_of, window=window,
                 model_version="3").row(ctx.name, ctx.spec.registered_model_name, run_id, AT)
    with ctx.engine.begin() as conn:
        conn.execute(warehouse.monitoring_metrics.insert(), [row])


def _decisions(ctx: StageContext) -> dict[str, dict]:
    rows = warehouse.select_rows(ctx.engine, warehouse.retraining, {"spec_name": ctx.name})
    assert len(rows) == len({r["run_id"] for r in rows})
    return {r["run_id"]: r for r in rows}


def test_decay_alert_retrains_then_the_cooldown_holds_until_it_ends(ctx):
    """A (03-01) retrains; B (03-05) is inside the P14D cooldown; C (03-16) retrains again;
    re-deciding A replaces its row with the same decision (one row per run)."""
    assert ctx.spec.monitoring.cooldown == "P14D"
    for run_id, as_of in [("A", "2013-03-01"), ("B", "2013-03-05"), ("C", "2013-03-16")]:
        _alert(ctx, run_id, as_of)

    a = monitoring.decide_retraining(ctx, "A", "2013-03-01", "3")
    assert (a.action, a.retrain, a.cooldown_until, a.model_version) == ("retrain", True, "2013-03-15", "3")
    assert [r["check"] for r in a.reasons] == ["decay"]
    assert "decay roc_auc 0.61 vs 0.67 (2013-03-01, rolling)" == a.reason_text()
    stored = _decisions(ctx)["A"]
    assert (stored["action"], stored["as_of"], stored["cooldown_until"], stored["model_version"]) == \
        ("retrain", "2013-03-01", "2013-03-15", "3")
    assert json.loads(stored["reasons"])[0]["metric"] == "roc_auc"

    b = monitoring.decide_retraining(ctx, "B", "2013-03-05", "3")
    assert (b.action, b.retrain, b.cooldown_until) == ("cooldown", False, "2013-03-15")
    assert _decisions(ctx)["B"]["action"] == "cooldown"

    c = monitoring.decide_retraining(ctx, "C", "2013-03-16", "3")
    assert (c.action, c.cooldown_until) == ("retrain", "2013-03-30")

    again = monitoring.decide_retraining(ctx, "A", "2013-03-01", "3")
    assert again.to_dict() == a.to_dict()   # a later request (C) does not put an earlier date in cooldown
    assert {k: v["action"] for k, v in _decisions(ctx).items()} == {"A": "retrain", "B": "cooldown", "C": "retrain"}


def test_the_cooldown_ends_exactly_on_cooldown_until(ctx):
    """Cooldown P14D from 03-01: 03-14 is still cooling down, 03-15 retrains."""
    for run_id, as_of in [("A", "2013-03-01"), ("B", "2013-03-14"), ("C", "2013-03-15")]:
        _alert(ctx, run_id, as_of)
    assert monitoring.decide_retraining(ctx, "A", "2013-03-01", "3").action == "retrain"
    assert monitoring.decide_retraining(ctx, "B", "2013-03-14", "3").action == "cooldown"
    assert monitoring.decide_retraining(ctx, "C", "2013-03-15", "3").action == "retrain"


@pytest.mark.parametrize(("retrain_on", "alert", "action"), [
    (("decay",), {}, "retrain"),
    (("decay",), {"check": "drift", "metric": "features_in_alert", "window": "partition"}, "none"),
    (("decay", "drift"), {"check": "drift", "metric": "features_in_alert", "window": "partition"}, "retrain"),
    (("decay", "drift"), {"check": "score_drift", "metric": "psi", "window": "partition"}, "retrain"),
    (("decay", "drift"), {"check": "drift", "metric": "psi", "window": "partition", "subject": "dest"}, "none"),
    (("decay",), {"window": "partition"}, "none"),             # one partition's decay: only the rolling window
    (("decay",), {"subject": "carrier=UA"}, "none"),           # one slice does not retrain
    (("decay",), {"status": "warn"}, "none"),
    (("decay",), {"metric": "log_loss"}, "none"),              # not the spec's decay metric
    (("decay",), {"check": "stability", "metric": "nan_scores", "window": "partition"}, "none"),
    (("drift",), {}, "none"),
])
def test_only_alerts_of_the_retrain_on_checks_retrain(ctx, retrain_on, alert, action):
    """``monitoring.retrain_on`` picks which alerts ask for retraining; ``none`` is not recorded."""
    c = _ctx(_with_monitoring(ctx.spec, retrain_on=retrain_on), ctx.settings)
    _alert(c, "M", "2013-03-01", **alert)
    decision = monitoring.decide_retraining(c, "M", "2013-03-01", "3")
    assert decision.action == action
    assert bool(decision.reasons) == (action == "retrain")
    assert set(_decisions(c)) == ({"M"} if action == "retrain" else set())


def test_a_dry_run_decision_says_what_would_happen_and_starts_no_cooldown(ctx):
    """``record=False`` (the CLI, which cannot emit the retrain Asset) decides but records nothing, so the
    DAG's next decision on the same alert still retrains."""
    _alert(ctx, "cli", "2013-03-01")
    _alert(ctx, "dag", "2013-03-02")
    dry = monitoring.decide_retraining(ctx, "cli", "2013-03-01", "3", record=False)
    assert dry.action == "retrain" and _decisions(ctx) == {}
    assert monitoring.decide_retraining(ctx, "dag", "2013-03-02", "3").action == "retrain"


def test_no_champion_never_retrains(ctx):
    """Nothing promoted yet: a decay alert is no request, and nothing is recorded."""
    _alert(ctx, "M", "2013-03-01")
    decision = monitoring.decide_retraining(ctx, "M", "2013-03-01", None)
    assert (decision.action, decision.retrain) == ("none", False)
    assert _decisions(ctx) == {}


def test_a_decision_rerun_without_alerts_removes_its_request(ctx):
    """The run's alerts were replaced (a re-run measured again): its old request goes too."""
    _alert(ctx, "M", "2013-03-01")
    assert monitoring.decide_retraining(ctx, "M", "2013-03-01", "3").retrain
    with ctx.engine.begin() as conn:
        conn.execute(warehouse.monitoring_metrics.delete())
    assert monitoring.decide_retraining(ctx, "M", "2013-03-01", "3").action == "none"
    assert _decisions(ctx) == {}


@pytest.mark.parametrize(("window", "start"), [(None, None), ("P30D", "2013-01-31"), ("P1D", "2013-03-01")])
def test_retrain_window_is_the_last_days_up_to_as_of(ctx, window, start):
    """``monitoring.retrain_window`` P30D as of 03-01 trains on 01-31 .. 03-01 (both ends included)."""
    c = _ctx(_with_monitoring(ctx.spec, retrain_window=window), ctx.settings)
    _alert(c, "M", "2013-03-01")
    assert monitoring.decide_retraining(c, "M", "2013-03-01", "3").window_start == start


# ---------------------------------------------------------------- ML Test Score evidence
@pytest.mark.parametrize(("statuses", "outcome"), [
    (["ok"], "pass"),
    (["ok", "warn"], "pass"),
    (["ok", "insufficient"], "pass"),
    (["ok", "alert"], "fail"),
    (["alert", "error"], "error"),
    (["ok", "error"], "error"),
    (["no_labels"], "not_run"),
    (["insufficient", "no_labels"], "not_run"),
])
def test_evidence_outcome_follows_the_figures_statuses(ctx, statuses, outcome):
    """pass, fail on an alert, error when a check crashed, not_run with only no_labels/insufficient."""
    figures = [Figure("decay", f"m{i}", 1.0, s) for i, s in enumerate(statuses)]
    figures.append(Figure("stability", "nan_scores", 0.0, "ok"))
    figures.append(Figure("drift", "psi", 0.5, "alert"))   # drift has no ML Test Score test of its own
    evidence = monitoring.record_monitoring_evidence(ctx, figures, "3", "scheduled", AT)
    assert evidence == [{"test": "monitor_5", "outcome": "pass"}, {"test": "monitor_7", "outcome": outcome}]
    rows = {r["test_id"]: r for r in warehouse.select_rows(ctx.engine, warehouse.test_evidence,
                                                           {"model_name": ctx.spec.registered_model_name})}
    assert set(rows) == {"monitor_5", "monitor_7"}
    row = rows["monitor_7"]
    assert (row["outcome"], row["model_version"], row["run_id"], row["section"], row["run_type"]) == \
        (outcome, "3", ctx.run_id, "monitor", "scheduled")
    assert json.loads(row["metrics"])["statuses"] == sorted(set(statuses))
    assert row["valid_until"].replace(tzinfo=UTC) - row["checked_at"].replace(tzinfo=UTC) == timedelta(days=30)


def test_evidence_rows_are_keyed_by_version_and_run_and_a_rerun_replaces(ctx, settings):
    """Re-recording a run replaces its rows; another run or another version adds its own."""
    def record(run_id: str, version: str, status: str) -> None:
        monitoring.record_monitoring_evidence(_ctx(ctx.spec, settings, run_id), [Figure("decay", "roc_auc", 0.6,
                                                                                          status)],
                                              version, "manual", AT)

    def outcomes() -> dict[tuple[str, str], str]:
        rows = warehouse.select_rows(ctx.engine, warehouse.test_evidence, {"test_id": "monitor_7"})
        assert len(rows) == len({(r["model_version"], r["run_id"]) for r in rows})
        return {(r["model_version"], r["run_id"]): r["outcome"] for r in rows}

    record("r1", "3", "ok")
    record("r1", "3", "alert")
    assert outcomes() == {("3", "r1"): "fail"}
    record("r2", "3", "ok")
    record("r1", "4", "ok")
    assert outcomes() == {("3", "r1"): "fail", ("3", "r2"): "pass", ("4", "r1"): "pass"}


def test_a_challenger_gets_the_credit_of_the_monitoring_that_watches_its_registered_model(ctx):
    """Monitoring evidence recorded against the champion (v3) counts on the score card of a challenger (v4)."""
    from flightdeck.gates import promotion as gates
    from flightdeck.gates import rubric

    at = datetime.now(UTC)
    figures = [Figure(check, "m", 0.0, "ok") for check in monitoring.MONITOR_TESTS]
    monitoring.record_monitoring_evidence(ctx, figures, "3", "scheduled", at)
    name = ctx.spec.registered_model_name
    card = rubric.score_card(name, "4", gates.evidence_for(ctx, name, "4", "0.1.0+test"), at=at)
    assert card.sections["monitor"] == 7.0
    other = rubric.score_card("flightdeck-other", "4", gates.evidence_for(ctx, "flightdeck-other", "4", "x"), at=at)
    assert other.sections["monitor"] == 0.0  # another registered model's monitoring is not this one's


# ---------------------------------------------------------------- dependencies (Monitor 1)
@pytest.mark.parametrize(("before", "after", "diff"), [
    ({"a": "1"}, {"a": "1"}, {}),
    ({"a": "1"}, {"a": "2"}, {"changed": {"a": ["1", "2"]}}),
    ({"a": "1"}, {"a": "1", "b": "1"}, {"added": {"b": "1"}}),
    ({"a": "1", "b": "1"}, {"a": "1"}, {"removed": {"b": "1"}}),
    ({"a": "1", "b": "1"}, {"a": "2", "c": "3"}, {"added": {"c": "3"}, "removed": {"b": "1"},
                                                   "changed": {"a": ["1", "2"]}}),
    ({}, {}, {}),
    ("x", "x", {}),
    ("x", "y", {"changed": {"before": "x", "after": "y"}}),
    ({"a": "1"}, ["a"], {"changed": {"before": {"a": "1"}, "after": ["a"]}}),
])
def test_diff_mapping_names_added_removed_and_changed_keys(before, after, diff):
    """Only non-empty groups appear; non-mappings differ as a whole."""
    assert monitoring.diff_mapping(before, after) == diff


def test_environment_fingerprint_lists_the_installed_packages():
    """Lower-cased distribution names -> versions, pandas among them, sorted."""
    fp = monitoring.environment_fingerprint()
    assert fp and fp["pandas"] == pd.__version__ and "sqlalchemy" in fp
    assert list(fp) == sorted(fp) and all(k == k.lower() for k in fp)


def _packages(ctx: StageContext) -> Figure:
    figures = monitoring.check_dependencies(ctx, "2013-03-01")
    by_subject = {f.subject: f for f in figures}
    assert set(by_subject) == {"packages"}   # no deliveries in the catalog: no schema fingerprints
    return by_subject["packages"]


def test_dependencies_baseline_then_same_environment_is_ok(ctx, settings):
    """First run: a baseline (ok, changed 0); a second run in the same environment: ok, changed 0."""
    first = _packages(ctx)
    assert (first.value, first.status, first.window) == (0.0, "ok", "run")
    assert "baseline" in first.detail
    assert _packages(ctx).detail.keys() == {"baseline"}   # a re-run of the same run is no comparison
    second = _packages(_ctx(ctx.spec, settings, "monitor__second"))
    assert (second.value, second.status) == (0.0, "ok")
    assert second.detail == {"previous_run": ctx.run_id, "changes": {}}
    rows = warehouse.select_rows(ctx.engine, warehouse.fingerprints, {"spec_name": ctx.name})
    assert sorted(r["run_id"] for r in rows) == sorted([ctx.run_id, "monitor__second"])


def test_dependencies_alert_names_the_package_that_changed(ctx):
    """A previous run saw another pandas version and a package since removed: alert naming both."""
    before = {**monitoring.environment_fingerprint(), "pandas": "0.0.1", "gone-package": "1.0"}
    text = json.dumps(before, sort_keys=True)
    with ctx.engine.begin() as conn:
        conn.execute(warehouse.fingerprints.insert(), [{
            "spec_name": ctx.name, "run_id": "monitor__yesterday", "kind": "packages", "digest": "0" * 64,
            "content": text, "measured_at": warehouse.now() - timedelta(days=1)}])
    f = _packages(ctx)
    assert (f.value, f.status) == (1.0, "alert")
    assert f.detail["previous_run"] == "monitor__yesterday"
    assert f.detail["changes"] == {"changed": {"pandas": ["0.0.1", pd.__version__]},
                                   "removed": {"gone-package": "1.0"}}


# ---------------------------------------------------------------- performance (Monitor 6)
def _run(ctx: StageContext, run_id: str, start_hour: int, seconds: float, rows: int = 1000,
         partition: str = "2013-03-01", status: str = "published", peak_rss_mb: float | None = None) -> None:
    started = AT + timedelta(hours=start_hour)
    details = {"resources": {"peak_rss_mb": peak_rss_mb}} if peak_rss_mb else {}
    predictions.record_run(ctx.engine, ctx.spec, {
        "run_id": run_id, predictions.PARTITION: partition, "status": status, "rows": rows,
        "model_name": ctx.spec.registered_model_name, "model_version": "3", "details": details,
        "started_at": started, "finished_at": started + timedelta(seconds=seconds)})


@pytest.mark.parametrize(("runs", "status", "ratio"), [
    ([], "insufficient", None),
    ([10], "insufficient", None),
    ([10, 30], "alert", 1 / 3),                       # 3x slower than the one before
    ([10, 10, 10, 10], "ok", 1.0),                    # steady
    ([10, 12, 8, 10, 30], "alert", 1 / 3),           # 3x slower than the median of the previous
    ([10, 10, 10, 20], "ok", 0.5),                    # exactly max_slowdown (2x): not yet an alert
    ([10, 10, 10, 5], "ok", 2.0),                     # faster is fine
    ([30, 10], "ok", 3.0),
])
def test_performance_compares_the_newest_run_with_the_median_of_the_previous(ctx, runs, status, ratio):
    """Throughput (rows/s) of the newest published run over the median of the previous ones;
    fewer than two runs give no verdict."""
    for i, seconds in enumerate(runs):
        _run(ctx, f"scoring__{i}", i, seconds)
    got = _by_metric(monitoring.check_performance(ctx, "2013-03-01"))
    f = got["rows_per_s_ratio"]
    assert (f.status, f.threshold, f.window) == (status, 0.5, "run")
    assert f.value == (None if ratio is None else pytest.approx(ratio))
    if ratio is None:
        assert f.detail == {"runs": len(runs)} and set(got) == {"rows_per_s_ratio"}
    else:
        assert got["rows_per_s"].value == pytest.approx(1000 / runs[-1])


def test_performance_ignores_unpublished_and_empty_runs(ctx):
    """Failed, invalid and empty runs are no throughput: one published run is still insufficient."""
    _run(ctx, "scoring__ok", 0, 10)
    _run(ctx, "scoring__failed", 1, 100, status="failed")
    _run(ctx, "scoring__invalid", 2, 100, status="invalid")
    _run(ctx, "scoring__empty", 3, 100, rows=0)
    f = _by_metric(monitoring.check_performance(ctx, "2013-03-01"))["rows_per_s_ratio"]
    assert (f.status, f.value, f.detail["runs"]) == ("insufficient", None, 1)


def test_performance_sums_the_partitions_of_one_run(ctx):
    """A run scoring two partitions counts once, its rows and seconds summed."""
    _run(ctx, "scoring__0", 0, 10)
    _run(ctx, "scoring__1", 1, 30, partition="2013-03-01")
    _run(ctx, "scoring__1", 1, 30, partition="2013-03-02")
    got = _by_metric(monitoring.check_performance(ctx, "2013-03-02"))
    assert got["rows_per_s"].rows == 2000
    assert got["rows_per_s_ratio"].value == pytest.approx((2000 / 60) / 100)
    assert got["rows_per_s_ratio"].status == "alert"


@pytest.mark.parametrize(("peaks", "status"), [([100, 100, 100], "ok"), ([100, 100, 300], "alert"),
                                               ([100, 120, 200], "ok")])
def test_performance_watches_peak_memory_against_the_median(ctx, peaks, status):
    """Peak RSS above ``max_slowdown`` times the median of the previous runs alerts."""
    for i, mb in enumerate(peaks):
        _run(ctx, f"scoring__{i}", i, 10, peak_rss_mb=mb)
    f = _by_metric(monitoring.check_performance(ctx, "2013-03-01"))["peak_rss_ratio"]
    assert f.status == status and f.value == pytest.approx(peaks[-1] / float(np.median(peaks[:-1])))


def test_performance_trend_catches_a_slow_regression(ctx):
    """Six or more runs: the recent half's median against the older half's (each step under 2x)."""
    for i, seconds in enumerate([10, 10, 10, 16, 18, 20]):
        _run(ctx, f"scoring__{i}", i, seconds)
    got = _by_metric(monitoring.check_performance(ctx, "2013-03-01"))
    assert got["rows_per_s_ratio"].status == "ok"
    trend = got["throughput_trend"]
    assert trend.value == pytest.approx(10 / 18) and trend.status == "warn" and trend.window == "rolling"


# ---------------------------------------------------------------- the printed table
def test_format_figures_prints_a_header_and_one_line_per_figure(ctx):
    """Stored figures read back and printed; per-feature rows only on request; None as '-'."""
    figures = [Figure("decay", "roc_auc", 0.61234567, "alert", 0.67, partition="2013-03-01", window="rolling",
                      rows=4000, model_version="3"),
               Figure("decay", "roc_auc", None, "no_labels", None, partition="2013-03-02", window="partition",
                      rows=0, model_version="3"),
               Figure("drift", "psi", 0.3, "alert", 0.25, subject="dest", partition="2013-03-01", model_version="3")]
    with ctx.engine.begin() as conn:
        conn.execute(warehouse.monitoring_metrics.insert(),
                     [f.row(ctx.name, ctx.spec.registered_model_name, ctx.run_id, AT) for f in figures])
    rows = monitoring.latest_figures(ctx.engine, ctx.name)
    assert len(rows) == 3
    lines = monitoring.format_figures(rows).splitlines()
    assert lines[0].split() == ["partition", "window", "check", "metric", "subject", "value", "threshold", "status",
                                "rows", "version"]
    assert len(lines) == 3
    assert lines[1].split() == ["2013-03-02", "partition", "decay", "roc_auc", "-", "-", "no_labels", "0", "3"]
    assert lines[2].split() == ["2013-03-01", "rolling", "decay", "roc_auc", "0.6123", "0.67", "alert", "4000", "3"]
    with_subjects = monitoring.format_figures(rows, subjects=True).splitlines()
    assert len(with_subjects) == 4 and any("dest" in line for line in with_subjects)
    assert monitoring.format_figures([]) == "no monitoring figures yet"


def test_figure_rows_store_strict_json_and_no_infinite_values():
    """A figure's row: non-finite values become NULL, the detail is strict JSON."""
    row = Figure("stability", "x", math.inf, "alert", detail={"v": math.nan, "n": np.int64(3)}).row(
        "flights", "m", "r", AT)
    assert row["value"] is None
    assert json.loads(row["detail"]) == {"n": 3, "v": None}
