"""Drift statistics for a model in production: how far a serving batch has moved from its reference.

Two measures per feature, reported side by side:

* the effect size, the Population Stability Index (:func:`psi` for numeric values,
  :func:`categorical_psi` for categories), about 0.1 for a small shift, above 0.25 a large one;
* a significance test, two-sample Kolmogorov-Smirnov (:func:`ks_test`) for numeric values,
  chi-squared homogeneity (:func:`chi_squared_test`) for categories.

:func:`feature_drift` and :func:`score_drift` combine them into a :class:`FeatureDrift` whose
status needs both a large effect and a significant test before it alerts (see
:func:`feature_drift`). Missing values count in the PSI (their own bin or category: a change in
the missing share is drift) but not in the KS test. Nothing here touches Airflow or storage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

EPS = 1e-6  # share given to an empty bin, so that PSI stays finite

Kind = Literal["numeric", "categorical"]
Test = Literal["ks", "chi2"]
Status = Literal["ok", "warn", "alert", "insufficient"]


# ---------------------------------------------------------------- statistics
def _floats(values: Any) -> np.ndarray:
    """Values as a 1-D float64 array, pandas' missing markers (None, pd.NA) as NaN."""
    return pd.Series(values, copy=False).to_numpy(dtype=np.float64, na_value=np.nan)


def _psi_from_counts(ref_counts: np.ndarray, cur_counts: np.ndarray, ref_total: int, cur_total: int) -> float:
    r = np.clip(ref_counts / max(ref_total, 1), EPS, None)
    c = np.clip(cur_counts / max(cur_total, 1), EPS, None)
    return float(np.sum((c - r) * np.log(c / r)))


def psi(reference: Any, current: Any, bins: int = 10) -> float:
    """Population Stability Index of numeric ``current`` against ``reference``.

    PSI = sum over bins of (c - r) * ln(c / r), with r and c the shares of each sample in the bin.
    The bins are the reference's quantile edges (duplicate edges merged; values beyond the
    reference's range fall in the end bins); a reference with at most ``bins`` distinct values
    is compared value by value (quantile edges would merge its values into one bin and hide a
    shift). Missing values (NaN) form one more bin, so a change in the missing share is drift.
    Shares are of all rows, missing included; an empty bin's share is clipped to 1e-6.

    Args:
        reference: the values the model was trained or validated on.
        current: the values to compare, e.g. one serving batch.
        bins: the number of quantile bins.

    Returns:
        A non-negative float; 0 when the two samples fill every bin in the same proportions.
    """
    ref_all, cur_all = _floats(reference), _floats(current)
    ref_nan, cur_nan = np.isnan(ref_all), np.isnan(cur_all)
    ref, cur = ref_all[~ref_nan], cur_all[~cur_nan]
    if np.unique(ref).size <= bins:
        values = np.unique(np.concatenate([ref, cur]))
        ref_idx, cur_idx, size = np.searchsorted(values, ref), np.searchsorted(values, cur), values.size
    else:
        edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)))
        # inner edges only: a value equal to an edge goes to the upper bin, the maximum stays in the last
        ref_idx = np.searchsorted(edges[1:-1], ref, side="right")
        cur_idx = np.searchsorted(edges[1:-1], cur, side="right")
        size = edges.size - 1
    ref_counts = np.append(np.bincount(ref_idx, minlength=size), ref_nan.sum())
    cur_counts = np.append(np.bincount(cur_idx, minlength=size), cur_nan.sum())
    return _psi_from_counts(ref_counts, cur_counts, ref_all.size, cur_all.size)


def _category_counts(reference: Any, current: Any) -> pd.DataFrame:
    """Counts per category (rows) of reference and current (columns), over the union of categories.

    Missing values (None, NaN, pd.NA) are one category, the last row, labelled None.
    """
    out = {}
    missing = {}
    for name, values in (("reference", reference), ("current", current)):
        series = pd.Series(values, copy=False)
        absent = series.isna()
        missing[name] = int(absent.sum())
        out[name] = series[~absent].astype(object).value_counts(sort=False)
    table = pd.concat(out, axis=1, sort=False).fillna(0).astype(np.int64)
    table.index = table.index.astype(object)
    missing_row = pd.DataFrame(missing, index=pd.Index([None], dtype=object))
    return pd.concat([table, missing_row]) if any(missing.values()) else table


def categorical_psi(reference: Any, current: Any) -> float:
    """Population Stability Index over the union of the categories of both samples.

    Missing values are a category of their own; a category absent from one sample (e.g. new in
    ``current``) has its share there clipped to 1e-6, so it adds a large term.
    """
    counts = _category_counts(reference, current)
    ref, cur = counts["reference"].to_numpy(), counts["current"].to_numpy()
    return _psi_from_counts(ref, cur, int(ref.sum()), int(cur.sum()))


def ks_test(reference: Any, current: Any) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``) with missing values dropped.

    Returns:
        (D, p-value): D is the largest distance between the two empirical CDFs. (NaN, NaN)
        when either sample has no value left to compare.
    """
    ref, cur = _floats(reference), _floats(current)
    ref, cur = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    if ref.size == 0 or cur.size == 0:
        return float("nan"), float("nan")
    result = stats.ks_2samp(ref, cur)
    return float(result.statistic), float(result.pvalue)


def chi_squared_test(reference: Any, current: Any, min_expected: float = 5.0) -> tuple[float, float]:
    """Chi-squared test that both samples come from one categorical distribution.

    The 2 x k contingency table has a row per sample and a column per category (missing values
    are a category). A category whose expected count under homogeneity is below
    ``min_expected`` in either row is pooled with the other rare ones into one "other" column;
    when that column is itself still below ``min_expected`` it is merged into the smallest
    remaining category. Pearson's statistic, without Yates' continuity correction
    (``scipy.stats.chi2_contingency(..., correction=False)``), so a 2 x 2 table is judged like
    any other.

    Returns:
        (statistic, p-value); (0.0, 1.0) when fewer than two columns remain (one category, or
        an empty sample): nothing to compare, no evidence of a difference.
    """
    counts = _category_counts(reference, current)
    table = counts[counts.sum(axis=1) > 0].to_numpy(dtype=np.float64).T  # 2 x k, no empty column
    row_totals, col_totals = table.sum(axis=1), table.sum(axis=0)
    total = table.sum()
    if table.shape[1] < 2 or row_totals.min() == 0:
        return 0.0, 1.0

    def rare(columns: np.ndarray) -> np.ndarray:
        flags: np.ndarray = row_totals.min() * columns / total < min_expected
        return flags

    small = rare(col_totals)
    if small.any():
        kept, other = table[:, ~small], table[:, small].sum(axis=1, keepdims=True)
        if rare(other.sum(axis=0))[0] and kept.shape[1] > 0:
            smallest = int(np.argmin(kept.sum(axis=0)))
            kept[:, smallest : smallest + 1] += other
            table = kept
        else:
            table = np.hstack([kept, other])
    if table.shape[1] < 2:
        return 0.0, 1.0
    statistic, p_value, _, _ = stats.chi2_contingency(table, correction=False)
    return float(statistic), float(p_value)


# ---------------------------------------------------------------- per-feature verdicts
@dataclass(frozen=True)
class FeatureDrift:
    """The drift of one feature (or of the score): effect size, test and status."""

    feature: str
    kind: Kind
    psi: float
    test: Test
    statistic: float
    p_value: float
    reference_rows: int
    current_rows: int
    status: Status

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-safe dict (a non-finite figure, e.g. a KS test on no values, as None)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def _status(psi_value: float, p: float, reference_rows: int, current_rows: int, *, psi_warn: float,
            psi_alert: float, p_value: float, min_rows: int) -> Status:
    if min(reference_rows, current_rows) < min_rows:
        return "insufficient"
    if psi_value >= psi_alert and p < p_value:  # a NaN p-value is never significant
        return "alert"
    if psi_value >= psi_warn:
        return "warn"
    return "ok"


def _is_categorical(dtype: Any) -> bool:
    return (isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(dtype)
            or pd.api.types.is_string_dtype(dtype))


def feature_drift(reference: pd.DataFrame, current: pd.DataFrame, numeric: Sequence[str],
                  categorical: Sequence[str], *, psi_warn: float = 0.1, psi_alert: float = 0.25,
                  p_value: float = 0.01, min_rows: int = 500, bins: int = 10) -> list[FeatureDrift]:
    """Drift of each feature of ``current`` against ``reference``, numeric features first.

    Numeric features: :func:`psi` with ``bins`` quantile bins and :func:`ks_test`. Categorical
    features, and any feature of object, string or category dtype in either frame even if
    listed as numeric: :func:`categorical_psi` and :func:`chi_squared_test`.

    Status, in this order:

    * ``"insufficient"`` when either frame has fewer than ``min_rows`` rows: nothing is judged
      (a small batch must not raise a false alarm), but the figures are still computed and
      reported;
    * ``"alert"`` when psi >= ``psi_alert`` and the test's p-value < ``p_value``: a large
      effect that is also significant;
    * ``"warn"`` when psi >= ``psi_warn`` (including psi >= ``psi_alert`` without significance);
    * ``"ok"`` otherwise.

    A shift in the missing share alone raises the PSI but not the KS test (which drops missing
    values), so for a numeric feature it can reach ``"warn"`` but not ``"alert"``.

    Raises:
        KeyError: a feature is missing from a frame; the message names the feature and the
            frame (``reference`` or ``current``).
        ValueError: a feature is listed as both numeric and categorical.
    """
    both = sorted(set(numeric) & set(categorical))
    if both:
        raise ValueError(f"features listed as both numeric and categorical: {both}")
    features = list(dict.fromkeys([*numeric, *categorical]))
    for name, frame in (("reference", reference), ("current", current)):
        absent = [f for f in features if f not in frame.columns]
        if absent:
            raise KeyError(f"feature {absent[0]!r} is not a column of the {name} frame"
                           + (f" (nor are {absent[1:]})" if len(absent) > 1 else ""))
    results = []
    for feature in features:
        ref, cur = reference[feature], current[feature]
        if feature in categorical or _is_categorical(ref.dtype) or _is_categorical(cur.dtype):
            kind: Kind = "categorical"
            test: Test = "chi2"
            psi_value = categorical_psi(ref, cur)
            statistic, p = chi_squared_test(ref, cur)
        else:
            kind, test = "numeric", "ks"
            psi_value = psi(ref, cur, bins=bins)
            statistic, p = ks_test(ref, cur)
        status = _status(psi_value, p, len(reference), len(current), psi_warn=psi_warn, psi_alert=psi_alert,
                         p_value=p_value, min_rows=min_rows)
        results.append(FeatureDrift(feature, kind, psi_value, test, statistic, p, len(reference), len(current),
                                    status))
    return results


def score_drift(reference_scores: Any, current_scores: Any, *, bins: int = 10, min_rows: int = 500,
                psi_alert: float = 0.25, p_value: float = 0.01, psi_warn: float = 0.1) -> FeatureDrift:
    """Drift of the model's scores (feature ``"score"``): :func:`psi` and :func:`ks_test`.

    Same status rules as :func:`feature_drift`, on the number of scores in each sample.
    """
    ref, cur = _floats(reference_scores), _floats(current_scores)
    psi_value = psi(ref, cur, bins=bins)
    statistic, p = ks_test(ref, cur)
    status = _status(psi_value, p, ref.size, cur.size, psi_warn=psi_warn, psi_alert=psi_alert, p_value=p_value,
                     min_rows=min_rows)
    return FeatureDrift("score", "numeric", psi_value, "ks", statistic, p, int(ref.size), int(cur.size), status)
