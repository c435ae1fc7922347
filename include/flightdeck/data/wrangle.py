"""Wrangling declared in the spec: labels, derived columns, capping and missing-value fill.

Fill values and caps are *learned on the training split only* (:func:`fit_wrangle`) and
applied everywhere with :func:`apply_wrangle`, the same function scoring will call, so
training and serving features cannot diverge.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from flightdeck.core.spec import DatasetSpec, DeriveSpec, TargetSpec

OPS = {"gt": np.greater, "ge": np.greater_equal, "lt": np.less, "le": np.less_equal, "eq": np.equal}


def derive_columns(frame: pd.DataFrame, derives: tuple[DeriveSpec, ...], tz: str) -> pd.DataFrame:
    """Add the spec's derived columns (date and time decomposition)."""
    out = frame.copy()
    zone = ZoneInfo(tz)
    for d in derives:
        src = out[d.column]
        if d.op in ("weekday", "month", "day_of_year", "local_hour", "local_date"):
            local = src.dt.tz_convert(zone)
            values = {"weekday": lambda s: s.dt.weekday, "month": lambda s: s.dt.month,
                      "day_of_year": lambda s: s.dt.dayofyear, "local_hour": lambda s: s.dt.hour,
                      "local_date": lambda s: s.dt.strftime("%Y-%m-%d")}[d.op](local)
            out[d.name] = values if d.op == "local_date" else values.astype("Int64")
        elif d.op == "us_holiday_distance":
            out[d.name] = days_to_nearest_holiday(src.dt.tz_convert(zone))
        else:  # HHMM integers such as 1545
            hhmm = src.astype("Int64")
            out[d.name] = (hhmm // 100) if d.op == "hhmm_hour" else (hhmm % 100)
    return out


@lru_cache(maxsize=64)
def _federal_holidays(first_year: int, last_year: int) -> np.ndarray:
    """US federal holidays of whole calendar years, as sorted days (built once per span: it is slow)."""
    from pandas.tseries.holiday import USFederalHolidayCalendar

    days = USFederalHolidayCalendar().holidays(f"{first_year}-01-01", f"{last_year}-12-31")
    holidays: np.ndarray = days.to_numpy(dtype="datetime64[D]")
    holidays.setflags(write=False)
    return holidays


def days_to_nearest_holiday(local: pd.Series, cap: int = 14) -> pd.Series:
    """Days between a local date and the nearest US federal holiday, capped at ``cap``."""
    days = local.dt.tz_localize(None).dt.normalize()
    if days.dropna().empty:
        return pd.Series(pd.NA, index=local.index, dtype="Int64")
    # whole years around [min - cap - 1, max + cap + 1]: every holiday within the cap of a day is in it
    lo, hi = days.min() - pd.Timedelta(days=cap + 1), days.max() + pd.Timedelta(days=cap + 1)
    holidays = _federal_holidays(lo.year, hi.year)
    if holidays.size == 0:
        return pd.Series(cap, index=local.index, dtype="Int64")
    values = days.to_numpy(dtype="datetime64[D]")
    idx = np.searchsorted(holidays, values)
    left = holidays[np.clip(idx - 1, 0, holidays.size - 1)]
    right = holidays[np.clip(idx, 0, holidays.size - 1)]
    before = np.abs((values - left).astype("int64"))
    after = np.abs((right - values).astype("int64"))
    out = pd.Series(np.minimum(np.minimum(before, after), cap), index=local.index).astype("Int64")
    return out.where(days.notna(), pd.NA)


def label_values(values: pd.Series, target: TargetSpec) -> pd.Series:
    """Binary label 1/0 from the target column; missing values follow ``when_missing``.

    A numeric comparison (``op``, ``value``), a string equality (``op: eq`` with a string), or
    membership of ``positive`` (a value in neither ``positive`` nor a declared ``negative`` has
    no label; ingestion quarantines those as ``unknown_target`` first).
    """
    fill = {"drop": np.nan, "negative": 0.0, "positive": 1.0}[target.when_missing]
    if target.is_categorical:
        text = values.astype("object")
        present = text.notna()
        positive = target.positive if target.positive is not None else (str(target.value),)
        is_pos = text.isin(positive)
        label = pd.Series(np.where(is_pos, 1.0, 0.0), index=values.index)
        if target.negative is not None:
            label = label.where(is_pos | text.isin(target.negative), np.nan)
        return label.where(present, fill).astype("Int8")
    assert target.op is not None and isinstance(target.value, float | int)
    numeric = pd.to_numeric(values, errors="coerce").astype("float64")
    label = pd.Series(OPS[target.op](numeric.to_numpy(), target.value).astype("float64"), index=values.index)
    return label.where(numeric.notna(), fill).astype("Int8")


def attach_labels(features: pd.DataFrame, labels: pd.DataFrame | None, spec: DatasetSpec) -> pd.DataFrame:
    """Left-join outcomes onto features by entity key and add the target column.

    Rows whose outcome has not arrived yet keep a missing label (``<NA>``); so do rows whose
    outcome is missing when the spec says ``when_missing: drop``.
    """
    out = features.copy()
    key = list(spec.entity_key)
    if labels is None or labels.empty:
        out[spec.target.name] = pd.Series(pd.NA, index=out.index, dtype="Int8")
        return out
    lab = labels.drop_duplicates(key, keep="last")
    lab = lab[[*key, spec.target.column]].rename(columns={spec.target.column: "_target_source"})
    out = out.merge(lab, on=key, how="left", validate="many_to_one", indicator="_outcome")
    delivered = out["_outcome"] == "both"  # an outcome row arrived (its value may still be missing)
    has_value = out["_target_source"].notna()
    label = label_values(out["_target_source"], spec.target)
    # no outcome delivered yet: no label, whatever when_missing says
    matched = out.index[delivered & has_value] if spec.target.when_missing == "drop" else out.index[delivered]
    out[spec.target.name] = pd.Series(pd.NA, index=out.index, dtype="Int8")
    out.loc[matched, spec.target.name] = label.loc[matched]
    return out.drop(columns=["_target_source", "_outcome"])


def fit_wrangle(train: pd.DataFrame, spec: DatasetSpec) -> dict[str, Any]:
    """Learn fill values and caps on the training split; returns JSON-able parameters."""
    params: dict[str, Any] = {"fill": {}, "cap": {}}
    for name, fill in spec.wrangle.fill.items():
        col = train[name].dropna()
        if fill.strategy == "constant":
            value = fill.value
        elif col.empty:
            value = None
        elif fill.strategy == "median":
            value = float(col.median())
        elif fill.strategy == "mean":
            value = float(col.mean())
        else:
            value = col.mode().iloc[0]
            value = value.item() if hasattr(value, "item") else value
        params["fill"][name] = value
    for name, cap in spec.wrangle.cap.items():
        col = train[name].dropna().astype("float64")
        if not col.empty:
            params["cap"][name] = [float(col.quantile(cap.lower_quantile)), float(col.quantile(cap.upper_quantile))]
    return params


def apply_wrangle(frame: pd.DataFrame, spec: DatasetSpec, params: dict[str, Any]) -> pd.DataFrame:
    """Apply learned caps and fills, then drop the spec's dropped columns."""
    out = frame.copy()
    for name, (lo, hi) in params["cap"].items():
        out[name] = out[name].astype("float64").clip(lo, hi)
    for name, value in params["fill"].items():
        if value is not None:
            out[name] = out[name].fillna(value)
    return out.drop(columns=[c for c in spec.wrangle.drop if c in out.columns])


def wrangle_frame(features: pd.DataFrame, labels: pd.DataFrame | None, spec: DatasetSpec) -> pd.DataFrame:
    """The stateless part of wrangling: labels joined, derived columns added."""
    return derive_columns(attach_labels(features, labels, spec), spec.wrangle.derive, spec.timezone)
