"""The statistics behind the gates (PSI, calibration error, the paired bootstrap, per-feature
explanations), the HTML gate report and the warehouse's replace/select of keyed rows."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from html import escape

import numpy as np
import pandas as pd
import pytest
from flightdeck.core import warehouse
from flightdeck.core.settings import REPO_ROOT
from flightdeck.core.spec import load_spec
from flightdeck.gates import checks, rubric
from flightdeck.gates.report import render_html
from flightdeck.training import features, train
from sklearn.metrics import log_loss, roc_auc_score

EPS = 1e-6


# ---------------------------------------------------------------- population_stability
def test_psi_matches_a_hand_computed_value():
    """Reference 1..10 in two quantile bins (split at 5.5): 50/50; current 20/80.

    PSI = (0.2 - 0.5) ln(0.2/0.5) + (0.8 - 0.5) ln(0.8/0.5) = 0.3 ln 2.5 + 0.3 ln 1.6 = 0.3 ln 4.
    """
    reference = np.arange(1.0, 11.0)
    current = np.array([1, 2, 6, 7, 8, 9, 10, 6, 7, 8], dtype=float)
    assert checks.population_stability(reference, current, bins=2) == pytest.approx(0.3 * math.log(4))


def test_psi_clips_an_empty_bin_to_epsilon_instead_of_dividing_by_zero():
    reference = np.arange(1.0, 11.0)
    current = np.array([1.0, 2.0, 3.0, 4.0])  # every value in the lower bin
    expected = (1 - 0.5) * math.log(1 / 0.5) + (EPS - 0.5) * math.log(EPS / 0.5)
    assert checks.population_stability(reference, current, bins=2) == pytest.approx(expected)


@pytest.mark.parametrize("reference", [
    pytest.param(np.random.default_rng(1).normal(size=500), id="normal"),
    pytest.param(np.random.default_rng(2).uniform(size=37), id="uniform-small"),
    pytest.param(np.repeat([0.1, 0.2, 0.2, 0.7, 0.9], 20), id="with-ties"),
    pytest.param(np.random.default_rng(3).exponential(size=300), id="skewed"),
])
def test_psi_of_a_distribution_against_itself_is_zero(reference):
    assert checks.population_stability(reference, reference.copy()) == pytest.approx(0.0, abs=1e-12)
    assert checks.population_stability(reference, np.random.default_rng(0).permutation(reference)) == (
        pytest.approx(0.0, abs=1e-12))


def test_psi_depends_on_proportions_not_on_sample_size():
    rng = np.random.default_rng(4)
    reference, current = rng.normal(size=400), rng.normal(0.5, 1, size=300)
    assert checks.population_stability(reference, np.tile(current, 3)) == pytest.approx(
        checks.population_stability(reference, current))


def test_psi_grows_as_the_distribution_moves_away():
    rng = np.random.default_rng(5)
    reference, noise = rng.normal(size=4000), rng.normal(size=4000)
    psis = [checks.population_stability(reference, noise + shift) for shift in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert psis == sorted(psis) and len(set(psis)) == 5
    assert psis[0] < 0.1 < psis[2]  # sampling noise is small; half a standard deviation is a large shift
    assert psis[4] > 0.25


@pytest.mark.parametrize("seed", range(6))
def test_psi_is_never_negative(seed):
    rng = np.random.default_rng(seed)
    reference = rng.gamma(rng.uniform(0.5, 3), size=rng.integers(20, 300))
    current = rng.normal(rng.uniform(-1, 3), rng.uniform(0.1, 2), size=rng.integers(5, 300))
    assert checks.population_stability(reference, current, bins=int(rng.integers(2, 12))) >= 0.0


def test_psi_puts_values_beyond_the_reference_range_in_the_end_bins():
    reference = np.random.default_rng(6).uniform(0, 1, size=200)
    high, at_max = np.full(50, 100.0), np.full(50, reference.max())
    low, at_min = np.full(50, -100.0), np.full(50, reference.min())
    assert checks.population_stability(reference, high) == checks.population_stability(reference, at_max) > 1
    assert checks.population_stability(reference, low) == checks.population_stability(reference, at_min) > 1


@pytest.mark.parametrize(("current", "expected"), [
    (np.full(10, 0.3), 0.0),
    # a constant reference is compared value by value: any other value is a new category,
    # clipped to 1e-6 in the reference: share * ln(share / 1e-6) and the mirror term
    (np.array([0.3, 0.3, 0.4]), (1 / 3 - 1e-6) * math.log((1 / 3) / 1e-6) + (2 / 3 - 1) * math.log(2 / 3)),
    (np.full(5, 0.9), (1 - 1e-6) * math.log(1 / 1e-6) + (1e-6 - 1) * math.log(1e-6)),
])
def test_psi_against_a_constant_reference_is_zero_if_unchanged_else_large(current, expected):
    assert checks.population_stability(np.full(20, 0.3), current) == pytest.approx(expected)


def test_psi_sees_a_complete_shift_of_a_two_valued_reference():
    reference = np.array([0.1] * 95 + [0.9] * 5)  # e.g. a champion that scores most rows 0.1
    current = np.full(100, 0.9)  # the challenger scores every row 0.9
    assert checks.population_stability(reference, current) > 0.25


# ---------------------------------------------------------------- calibration_error
@pytest.mark.parametrize("bins", [2, 10])
def test_calibration_error_of_a_perfectly_calibrated_model_is_zero(bins):
    """Rows predicted 0.2 are positive 2 times in 10, rows predicted 0.8 eight times in 10."""
    p = np.array([0.2] * 10 + [0.8] * 10)
    y = np.array([1, 1] + [0] * 8 + [1] * 8 + [0, 0])
    assert checks.calibration_error(y, p, bins=bins) == pytest.approx(0.0, abs=1e-12)


def test_calibration_error_matches_a_hand_computed_value():
    """Three quantile bins: 0.1 observed 0.3 (10 rows), 0.5 observed 0.5 (10), 0.9 observed 0.7 (20).

    ECE = 10/40 * 0.2 + 10/40 * 0 + 20/40 * 0.2 = 0.15.
    """
    p = np.array([0.1] * 10 + [0.5] * 10 + [0.9] * 20)
    y = np.array([1] * 3 + [0] * 7 + [1] * 5 + [0] * 5 + [1] * 14 + [0] * 6)
    assert checks.calibration_error(y, p, bins=4) == pytest.approx(0.15)


def test_calibration_error_of_a_confidently_wrong_model_is_near_one():
    p = np.array([0.99] * 5 + [0.01] * 5)
    y = np.array([0] * 5 + [1] * 5)
    assert checks.calibration_error(y, p, bins=2) == pytest.approx(0.99)


def test_calibration_error_rises_with_miscalibration():
    rng = np.random.default_rng(7)
    p = rng.uniform(0.05, 0.95, size=5000)
    y = (rng.uniform(size=5000) < p).astype(int)
    errors = [checks.calibration_error(y, np.clip(p + bias, 0, 1)) for bias in (0.0, 0.05, 0.1, 0.2)]
    assert errors == sorted(errors)
    assert errors[0] < 0.03 and errors[3] > 0.15


# ---------------------------------------------------------------- bootstrap_difference
def _labels_and_scores(n: int = 300, seed: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, a challenger that ranks well and a champion that is pure noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    good = np.clip(0.15 + 0.6 * y + rng.uniform(-0.1, 0.1, size=n), 0.01, 0.99)
    noise = rng.uniform(0.2, 0.8, size=n)
    return y, good, noise


@pytest.mark.parametrize("metric", ["roc_auc", "log_loss"])
def test_identical_models_differ_by_exactly_zero(metric):
    y, good, _ = _labels_and_scores()
    out = checks.bootstrap_difference(y, good, good.copy(), metric, samples=20, confidence=0.9, seed=1)
    assert out == {"difference": 0.0, "ci_low": 0.0, "ci_high": 0.0, "samples": 20.0}


@pytest.mark.parametrize("metric", ["roc_auc", "log_loss"])
def test_a_clearly_better_challenger_has_a_positive_difference_and_interval(metric):
    """Positive means the challenger is better, for log loss (lower is better) too."""
    y, good, noise = _labels_and_scores()
    out = checks.bootstrap_difference(y, good, noise, metric, samples=30, confidence=0.95, seed=2)
    assert out["difference"] > 0.2
    assert 0 < out["ci_low"] <= out["difference"] <= out["ci_high"]
    worse = checks.bootstrap_difference(y, noise, good, metric, samples=30, confidence=0.95, seed=2)
    assert worse["ci_high"] < 0


@pytest.mark.parametrize(("metric", "expected"), [
    ("roc_auc", lambda y, a, b: roc_auc_score(y, a) - roc_auc_score(y, b)),
    ("log_loss", lambda y, a, b: log_loss(y, b) - log_loss(y, a)),
])
def test_the_point_difference_is_taken_on_all_rows(metric, expected):
    y, good, noise = _labels_and_scores(n=120, seed=9)
    challenger = np.clip(0.5 * good + 0.5 * noise, 0.01, 0.99)
    out = checks.bootstrap_difference(y, challenger, noise, metric, samples=20, confidence=0.9, seed=3)
    assert out["difference"] == pytest.approx(expected(y, challenger, noise))


@pytest.mark.parametrize("metric", ["roc_auc", "log_loss"])
def test_swapping_the_models_mirrors_the_result(metric):
    y, good, noise = _labels_and_scores(n=150, seed=10)
    mixed = np.clip(0.3 * good + 0.7 * noise, 0.01, 0.99)
    ab = checks.bootstrap_difference(y, mixed, noise, metric, samples=25, confidence=0.8, seed=4)
    ba = checks.bootstrap_difference(y, noise, mixed, metric, samples=25, confidence=0.8, seed=4)
    assert ba["difference"] == pytest.approx(-ab["difference"])
    assert (ba["ci_low"], ba["ci_high"]) == (pytest.approx(-ab["ci_high"]), pytest.approx(-ab["ci_low"]))


def test_the_same_seed_gives_the_same_result_and_another_seed_another_interval():
    y, good, noise = _labels_and_scores(n=150, seed=11)
    mixed = np.clip(0.3 * good + 0.7 * noise, 0.01, 0.99)
    first = checks.bootstrap_difference(y, mixed, noise, "roc_auc", samples=25, confidence=0.9, seed=5)
    again = checks.bootstrap_difference(y, mixed, noise, "roc_auc", samples=25, confidence=0.9, seed=5)
    other = checks.bootstrap_difference(y, mixed, noise, "roc_auc", samples=25, confidence=0.9, seed=6)
    assert first == again
    assert other["difference"] == first["difference"]
    assert (other["ci_low"], other["ci_high"]) != (first["ci_low"], first["ci_high"])


def test_a_higher_confidence_gives_a_wider_interval_around_the_same_resamples():
    y, good, noise = _labels_and_scores(n=150, seed=12)
    mixed = np.clip(0.3 * good + 0.7 * noise, 0.01, 0.99)
    narrow, wide = (checks.bootstrap_difference(y, mixed, noise, "roc_auc", samples=40, confidence=c, seed=7)
                    for c in (0.5, 0.99))
    assert wide["ci_low"] < narrow["ci_low"] < narrow["ci_high"] < wide["ci_high"]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_resamples_without_both_classes_are_dropped_for_auc_but_kept_for_log_loss():
    """One positive in 10 rows: about a third of the resamples miss it and have no AUC."""
    y = np.array([1] + [0] * 9)
    challenger = np.linspace(0.9, 0.05, 10)
    champion = np.linspace(0.5, 0.4, 10)
    auc = checks.bootstrap_difference(y, challenger, champion, "roc_auc", samples=40, confidence=0.9, seed=8)
    assert 5 < auc["samples"] < 40
    assert all(math.isfinite(auc[k]) for k in ("difference", "ci_low", "ci_high"))
    ll = checks.bootstrap_difference(y, challenger, champion, "log_loss", samples=40, confidence=0.9, seed=8)
    assert ll["samples"] == 40.0


# ---------------------------------------------------------------- explain
LAYOUT = features.FeatureLayout(numeric=("signal", "noise", "distance"), categorical=("carrier",))
CARRIER_EFFECT = {"AA": -1.5, "UA": 0.0, "B6": 1.5}


@pytest.fixture(scope="module")
def spec():
    return load_spec(REPO_ROOT / "include" / "specs" / "flights.yaml")


@pytest.fixture(scope="module")
def training_frame() -> tuple[pd.DataFrame, np.ndarray]:
    """A strong numeric signal, a carrier effect, pure noise and a log1p-transformed distance."""
    rng = np.random.default_rng(0)
    n = 400
    X = pd.DataFrame({"signal": rng.normal(size=n), "noise": rng.normal(size=n),
                      "distance": rng.uniform(100, 3000, size=n), "carrier": rng.choice(list(CARRIER_EFFECT), n)})
    margin = 2.5 * X["signal"] + X["carrier"].map(CARRIER_EFFECT)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-margin))).astype(int).to_numpy()
    return X, y


def _fit(family: str, spec, X: pd.DataFrame, y: np.ndarray, params: dict | None = None):
    model = features.build_estimator(family, spec, LAYOUT, params)
    return model.fit(X, y, **features.fit_params(family, LAYOUT))


@pytest.fixture(scope="module")
def lightgbm_model(spec, training_frame):
    return _fit("lightgbm", spec, *training_frame, {"n_estimators": 20})


@pytest.fixture(scope="module")
def logistic_model(spec, training_frame):
    return _fit("logistic", spec, *training_frame)


def _assert_one_row_per_row_and_feature(table: pd.DataFrame, X: pd.DataFrame) -> None:
    assert list(table.columns) == ["row", "feature", "value", "contribution", "method"]
    assert len(table) == len(X) * len(LAYOUT.columns)
    assert sorted(zip(table["row"], table["feature"], strict=True)) == sorted(
        (i, f) for i in range(len(X)) for f in LAYOUT.columns)
    for (i, f), value in zip(zip(table["row"], table["feature"], strict=True), table["value"], strict=True):
        assert value == X.iloc[i][f]
    assert np.isfinite(table["contribution"]).all()


def test_lightgbm_is_explained_by_treeshap_that_adds_up_to_the_margin(lightgbm_model, training_frame):
    X = training_frame[0].iloc[:25]
    table, additive = checks.explain(lightgbm_model, X, training_frame[0], LAYOUT)
    assert additive is True
    _assert_one_row_per_row_and_feature(table, X)
    assert set(table["method"]) == {"treeshap (log-odds)"}
    # each row's contributions add up to its log-odds, up to one constant (the expected value)
    p = train.positive_proba(lightgbm_model, X)
    offsets = table.groupby("row")["contribution"].sum().to_numpy() - np.log(p / (1 - p))
    assert np.ptp(offsets) == pytest.approx(0.0, abs=1e-9)


def test_lightgbm_contributions_are_attributed_to_the_right_features(lightgbm_model, training_frame):
    X = training_frame[0].iloc[:100]
    table, _ = checks.explain(lightgbm_model, X, training_frame[0], LAYOUT)
    strength = table.groupby("feature")["contribution"].apply(lambda s: s.abs().mean())
    assert strength["signal"] > strength["carrier"] > strength["noise"]
    signal = table[table["feature"] == "signal"]
    assert np.corrcoef(signal["value"].astype(float), signal["contribution"])[0, 1] > 0.8
    by_carrier = table[table["feature"] == "carrier"].groupby("value")["contribution"].mean()
    assert by_carrier["AA"] < by_carrier["UA"] < by_carrier["B6"]


def test_logistic_is_explained_by_ablation_to_the_training_median_or_mode(logistic_model, training_frame):
    reference = training_frame[0]
    X = reference.iloc[:30].copy()
    X.loc[X.index[0], "signal"] = reference["signal"].median()
    X.loc[X.index[1], "carrier"] = reference["carrier"].mode().iloc[0]
    table, additive = checks.explain(logistic_model, X, reference, LAYOUT)
    assert additive is None
    _assert_one_row_per_row_and_feature(table, X)
    assert set(table["method"]) == {"ablation to training median/mode (probability)"}
    assert list(zip(table["row"], table["feature"], strict=True)) == [
        (i, f) for i in range(len(X)) for f in sorted(LAYOUT.columns)]
    at = table.set_index(["row", "feature"])["contribution"]
    assert at[(0, "signal")] == 0.0 and at[(1, "carrier")] == 0.0  # already at the fill value
    signal = table[table["feature"] == "signal"]
    above = signal["value"].astype(float).to_numpy() > reference["signal"].median()
    assert ((signal["contribution"].to_numpy() > 0) == above)[1:].all()  # row 0 sits on the median


def test_an_ensemble_is_explained_by_ablation(spec, training_frame, lightgbm_model, logistic_model):
    ensemble = train.SoftVotingEnsemble([lightgbm_model, logistic_model])
    X = training_frame[0].iloc[:10]
    table, additive = checks.explain(ensemble, X, training_frame[0], LAYOUT)
    assert additive is None
    _assert_one_row_per_row_and_feature(table, X)
    assert table["method"].str.startswith("ablation").all()


# ---------------------------------------------------------------- render_html
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
XSS = "<script>alert(1)</script>"


def _evidence(test_id: str, **extra) -> rubric.Evidence:
    values = {"mode": "automated", "outcome": "pass", "model_name": "flights_delay", "model_version": "7",
              "run_id": "scheduled__2026-06-01", "dag_id": "flights_gate", "run_type": "scheduled",
              "code_version": "abc", "checked_at": T0, "valid_until": T0 + timedelta(days=30),
              "metrics": {"rows": 120}, "threshold": {"min": 0.5}, "artifact_uri": "file:///lake/report.html",
              "detail": "fine"} | extra
    return rubric.Evidence(test_id=test_id, **values)


def _report(**inject: str) -> dict:
    """A report in the shape gates.judge_version writes; ``inject`` puts a string into one free-text field."""
    records = [_evidence(t.id, detail=inject.get("note", "fine")) for t in rubric.RUBRIC if t.section == "data"]
    records += [_evidence("model_5", outcome="fail", metrics={"note": inject.get("metrics", "ok")},
                          artifact_uri=inject.get("artifact_uri", "file:///lake/baseline.csv"),
                          run_id=inject.get("run_id", "manual__1"), run_type="manual")]
    records += [_evidence("infra_1"), _evidence("infra_4", outcome="error"),
                _evidence("monitor_1", mode="manual", run_type="attestation")]
    card = rubric.score_card(inject.get("model", "flights_delay"), "7", records, at=T0,
                             missing_notes={"monitor_7": "no labels yet"})
    gates = [
        {"gate": "loads", "hard": True, "passed": True, "value": 1.23456, "threshold": None,
         "detail": "loads from the registry and predicts", "figures": {}},
        {"gate": "absolute", "hard": True, "passed": False, "value": 0.61, "threshold": 0.65,
         "detail": inject.get("gate_detail", "ROC AUC below the floor"),
         "figures": {"roc_auc": [0.61, 0.65, False], "why": inject.get("figures", "-")}},
        {"gate": "ml_test_score", "hard": True, "passed": True, "value": card.final, "threshold": 0.0,
         "detail": "ML Test Score 0", "figures": {}},
    ]
    reasons = [f"{g['gate']}: {g['detail']}" for g in gates if g["hard"] and not g["passed"]]
    reasons.append(inject.get("reason", "see the figures"))
    verdict = {"spec": "flights", "registered_model": card.model_name, "version": "7",
               "decision": "reject", "reasons": reasons, "champion": "6", "ml_test_score": card.final,
               "band": card.band, "sections": card.sections, "run_id": "scheduled__2026-06-01",
               "dag_id": "flights_gate", "training_run_id": "abc",
               "gates": {g["gate"]: {"passed": g["passed"], "value": g["value"], "threshold": g["threshold"]}
                         for g in gates}}
    return {"verdict": verdict, "score_card": card.to_dict(), "gates": gates}


@pytest.mark.parametrize("via_json", [False, True], ids=["dict", "json-round-trip"])
def test_report_shows_the_decision_score_band_every_test_and_every_gate(via_json):
    report = _report()
    if via_json:
        report = json.loads(json.dumps(report, default=str))
    html = render_html(report)
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    assert "<title>Gate report: flights_delay v7</title>" in html
    assert "Decision: <b>REJECT</b>" in html and "<li>absolute: ROC AUC below the floor</li>" in html
    card = report["score_card"]
    assert card["final"] == 0.5  # monitoring: one attestation
    assert "<h2>ML Test Score: 0.5</h2>" in html
    assert f"<i>{escape(card['band'])}</i>" in html and "Not totally untested" in html
    assert "<th>Data</th><th>Model</th><th>Infrastructure</th><th>Monitoring</th>" in html
    assert "<td>7</td><td>0.5</td><td>1</td><td>0.5</td>" in html
    for t in rubric.RUBRIC:
        assert f"<tr><td>{t.id}</td><td>{escape(t.name)}</td>" in html
    assert "<td>no labels yet</td>" in html
    for gate in ("loads", "absolute", "ml_test_score"):
        assert f"<tr><td>{gate}</td><td>yes</td>" in html
    assert "<td class='fail'>fail</td><td>0.61</td><td>0.65</td>" in html
    assert "<td class='pass'>pass</td><td>1.235</td><td>&ndash;</td>" in html
    assert "<td class='error'>error</td>" in html


def test_report_is_self_contained():
    html = render_html(_report()).lower()
    for needle in ("<script", "<link", "src=", "url(", "@import", "http://", "https://"):
        assert needle not in html


@pytest.mark.parametrize("field", ["note", "metrics", "artifact_uri", "run_id", "gate_detail", "figures", "reason",
                                   "model"])
def test_report_escapes_html_in_every_free_text_field(field):
    html = render_html(_report(**{field: XSS}))
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# ---------------------------------------------------------------- replace_rows / select_rows
@pytest.fixture
def engine(tmp_path):
    return warehouse.connect(f"sqlite:///{tmp_path / 'warehouse.db'}")


def _gate_row(run_id: str, gate: str, passed: bool = True, version: str = "7") -> dict:
    return {"model_name": "flights_delay", "model_version": version, "run_id": run_id, "gate": gate, "hard": True,
            "passed": passed, "value": 0.7, "threshold": 0.65, "detail": f"{gate} in {run_id}", "figures": "{}",
            "checked_at": T0}


def _keys(engine, where: dict | None = None) -> list[tuple[str, str, str]]:
    rows = warehouse.select_rows(engine, warehouse.gate_results, where or {},
                                 order_by=("model_version", "run_id", "gate"))
    return [(r["model_version"], r["run_id"], r["gate"]) for r in rows]


RUN_A = {"model_name": "flights_delay", "model_version": "7", "run_id": "a"}


def test_replacing_the_same_rows_twice_leaves_one_copy(engine):
    rows = [_gate_row("a", "loads"), _gate_row("a", "absolute")]
    warehouse.replace_rows(engine, warehouse.gate_results, RUN_A, rows)
    warehouse.replace_rows(engine, warehouse.gate_results, RUN_A, rows)
    assert _keys(engine) == [("7", "a", "absolute"), ("7", "a", "loads")]


@pytest.mark.parametrize(("new_rows", "expected_a"), [
    pytest.param([_gate_row("a", "leakage", passed=False)], [("7", "a", "leakage")], id="different-rows"),
    pytest.param([], [], id="no-rows-deletes"),
    pytest.param([_gate_row("a", "loads"), _gate_row("a", "absolute"), _gate_row("a", "leakage")],
                 [("7", "a", "absolute"), ("7", "a", "leakage"), ("7", "a", "loads")], id="more-rows"),
])
def test_replace_touches_only_the_rows_matching_where(engine, new_rows, expected_a):
    others = [_gate_row("b", "loads"), _gate_row("a", "loads", version="6")]  # other run; same run id, other version
    warehouse.replace_rows(engine, warehouse.gate_results, {}, others)
    warehouse.replace_rows(engine, warehouse.gate_results, RUN_A, [_gate_row("a", "loads"), _gate_row("a", "absolute")])
    warehouse.replace_rows(engine, warehouse.gate_results, RUN_A, new_rows)
    assert _keys(engine, RUN_A) == expected_a
    assert _keys(engine) == sorted([("6", "a", "loads"), ("7", "b", "loads"), *expected_a])


def test_select_rows_filters_on_every_column_and_orders(engine):
    rows = [_gate_row("b", "loads"), _gate_row("a", "loads"), _gate_row("a", "absolute", passed=False),
            _gate_row("a", "leakage", version="6")]
    warehouse.replace_rows(engine, warehouse.gate_results, {}, rows)
    failed = warehouse.select_rows(engine, warehouse.gate_results, {"passed": False})
    assert [(r["run_id"], r["gate"], r["passed"], r["detail"]) for r in failed] == [
        ("a", "absolute", False, "absolute in a")]
    assert _keys(engine, {"run_id": "a", "model_version": "7"}) == [("7", "a", "absolute"), ("7", "a", "loads")]
    assert warehouse.select_rows(engine, warehouse.gate_results, {"run_id": "zzz"}) == []


def test_evidence_survives_a_sqlite_round_trip_as_utc(engine):
    """SQLite returns naive datetimes; from_row reads them as the UTC instants they were written as."""
    ev = _evidence("infra_6", metrics={"psi": np.float64(0.04), "rows": np.int64(200)}, detail="canary ok")
    where = {"model_name": "flights_delay", "model_version": "7", "run_id": ev.run_id}
    warehouse.replace_rows(engine, warehouse.test_evidence, where, [ev.to_row()])
    warehouse.replace_rows(engine, warehouse.test_evidence, where, [ev.to_row()])
    rows = warehouse.select_rows(engine, warehouse.test_evidence, where)
    assert len(rows) == 1 and rows[0]["section"] == "infra"
    back = rubric.Evidence.from_row(rows[0])
    assert back == rubric.Evidence(**{**ev.__dict__, "metrics": {"psi": 0.04, "rows": 200}})
    assert back.checked_at.tzinfo is not None


def test_evidence_with_a_non_utc_timestamp_keeps_its_instant_through_sqlite(engine):
    plus_two = timezone(timedelta(hours=2))
    ev = _evidence("infra_6", checked_at=datetime(2026, 6, 1, 14, 0, tzinfo=plus_two),
                   valid_until=datetime(2026, 7, 1, 14, 0, tzinfo=plus_two))
    where = {"model_name": "flights_delay", "model_version": "7", "run_id": ev.run_id}
    warehouse.replace_rows(engine, warehouse.test_evidence, where, [ev.to_row()])
    back = rubric.Evidence.from_row(warehouse.select_rows(engine, warehouse.test_evidence, where)[0])
    assert back.checked_at == T0
