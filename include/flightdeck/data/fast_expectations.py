"""Vectorised evaluation of the cheap expectations, giving GX's own per-chunk results.

GX 1.x rebuilds its metric graph for every expectation of every batch it validates,
which costs far more than the checks themselves. The expectations here are the
row-level and schema ones our suites are made of (not null, between, in set, unique,
compound unique, the table's column set). For each chunk FlightDeck computes the same
metrics GX's pandas engine computes, with the same pandas operations (null tests,
comparisons, ``isin``, ``duplicated(keep=False)``), and GX's own code turns them into
its result format (``_format_map_output``, ``convert_to_json_serializable``).

GX stays the engine of record: :func:`flightdeck.data.validate.validate_chunks` has GX
validate the first chunk of every batch with the whole suite, compares those results with
the ones computed here, and validates the batch with GX alone if they differ in anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

Expectation = dict[str, Any]
PARTIAL = 20  # GX's partial_unexpected_count for result_format="SUMMARY"
COLUMN_MAP = ("expect_column_values_to_not_be_null", "expect_column_values_to_be_between",
              "expect_column_values_to_be_in_set", "expect_column_values_to_be_unique")
COMPOUND = "expect_compound_columns_to_be_unique"
COLUMN_SET = "expect_table_columns_to_match_set"
SUPPORTED = (*COLUMN_MAP, COMPOUND, COLUMN_SET)
SUPPORTED_KWARGS = {"column", "column_list", "mostly", "min_value", "max_value", "strict_min", "strict_max",
                    "value_set", "column_set", "exact_match", "ignore_row_if"}


class Unsupported(ValueError):
    """A chunk or an expectation this module cannot evaluate exactly as GX does: GX must."""


@dataclass
class MapOutcome:
    """The metrics GX computes for a map expectation on one chunk (before formatting)."""

    success: bool
    element_count: int
    nonnull_count: int | None  # None where GX reports no missing values (not-null)
    unexpected_count: int
    unexpected_list: list[Any] = field(default_factory=list)
    unexpected_index_list: list[int] = field(default_factory=list)


@dataclass
class TableOutcome:
    """A table-level result, already in GX's format."""

    success: bool
    result: dict[str, Any]


Outcome = MapOutcome | TableOutcome


def supports(expectation: Expectation) -> bool:
    """Whether the expectation's type and arguments are evaluated here."""
    kwargs = expectation.get("kwargs", {})
    if expectation["type"] not in SUPPORTED or not set(kwargs) <= SUPPORTED_KWARGS:
        return False
    if expectation["type"] == COMPOUND and kwargs.get("ignore_row_if", "all_values_are_missing") \
            != "all_values_are_missing":
        return False
    return not (expectation["type"] == "expect_column_values_to_be_between"
                and kwargs.get("min_value") is None and kwargs.get("max_value") is None)


def evaluate(expectation: Expectation, chunk: pd.DataFrame) -> Outcome:
    """The expectation's metrics on one chunk (positions 0..n-1, as GX sees a reset index).

    Raises:
        Unsupported: a column is missing or has a type GX would treat differently.
    """
    kind, kwargs = expectation["type"], expectation["kwargs"]
    if kind == COLUMN_SET:
        return _column_set(kwargs, list(chunk.columns))
    if kind == COMPOUND:
        return _compound_unique(kwargs, chunk)
    column = kwargs["column"]
    if column not in chunk.columns:
        raise Unsupported(f"column {column!r} is not in the chunk")
    series = chunk[column].reset_index(drop=True)
    null = series.isna().to_numpy(dtype=bool)
    n = len(series)
    if kind == "expect_column_values_to_not_be_null":
        unexpected = int(null.sum())
        success = True if n == 0 else (n - unexpected) / n >= kwargs.get("mostly", 1.0)
        return _map_outcome(series, null, success, n, None, unexpected)
    nonnull = series[~null]
    if kind == "expect_column_values_to_be_between":
        bad = _outside(nonnull, kwargs)
    elif kind == "expect_column_values_to_be_in_set":
        bad = ~nonnull.isin(kwargs["value_set"]).to_numpy(dtype=bool)
    else:  # unique
        bad = nonnull.duplicated(keep=False).to_numpy(dtype=bool)
    mask = np.zeros(n, dtype=bool)
    mask[~null] = bad
    return _map_result(series, mask, n, int((~null).sum()), kwargs.get("mostly", 1.0))


def _outside(values: pd.Series, kwargs: dict[str, Any]) -> np.ndarray:
    """Which non-null values break ``min_value <= v <= max_value`` (strict where asked)."""
    if not (pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)):
        raise Unsupported(f"column {values.name!r} is {values.dtype}, not numeric")
    arr = values.to_numpy(dtype="float64")
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    ok = np.ones(arr.size, dtype=bool)
    if lo is not None:
        ok &= arr > lo if kwargs.get("strict_min") else arr >= lo
    if hi is not None:
        ok &= arr < hi if kwargs.get("strict_max") else arr <= hi
    if values.dtype.kind in "iu" and np.abs(arr).max(initial=0) >= 2**53:
        raise Unsupported(f"column {values.name!r} has integers beyond float64's exact range")
    outside: np.ndarray = ~ok
    return outside


def _map_result(series: pd.Series, mask: np.ndarray, n: int, considered: int, mostly: float) -> MapOutcome:
    unexpected = int(mask.sum())
    success = True if n == 0 or considered == 0 else (considered - unexpected) / considered >= mostly
    return _map_outcome(series, mask, success, n, considered, unexpected)


def _map_outcome(series: pd.Series, mask: np.ndarray, success: bool, n: int, nonnull: int | None,
                 unexpected: int) -> MapOutcome:
    idx = np.flatnonzero(mask)[:PARTIAL]
    return MapOutcome(success=bool(success), element_count=n, nonnull_count=nonnull,
                      unexpected_count=unexpected, unexpected_list=list(series.iloc[idx]),
                      unexpected_index_list=[int(i) for i in idx])


def _compound_unique(kwargs: dict[str, Any], chunk: pd.DataFrame) -> MapOutcome:
    columns = list(kwargs["column_list"])
    missing = [c for c in columns if c not in chunk.columns]
    if missing:
        raise Unsupported(f"columns {missing} are not in the chunk")
    frame = chunk[columns].reset_index(drop=True)
    kept = ~frame.isna().all(axis=1).to_numpy(dtype=bool)  # ignore_row_if="all_values_are_missing"
    # equal rows hash equal: only rows whose key hash repeats can be duplicates, and pandas
    # then decides exactly on those few, as GX does on all rows (duplicated(keep=False))
    hashes = pd.Series(pd.util.hash_pandas_object(frame, index=False).to_numpy())
    candidates = kept & hashes.duplicated(keep=False).to_numpy(dtype=bool)
    mask = np.zeros(len(frame), dtype=bool)
    mask[candidates] = frame[candidates].duplicated(keep=False).to_numpy(dtype=bool)
    unexpected, considered, n = int(mask.sum()), int(kept.sum()), len(frame)
    success = True if n == 0 or considered == 0 else (considered - unexpected) / considered >= kwargs.get("mostly", 1.0)
    idx = np.flatnonzero(mask)[:PARTIAL]
    return MapOutcome(success=bool(success), element_count=n, nonnull_count=considered,
                      unexpected_count=unexpected, unexpected_list=frame.iloc[idx].to_dict("records"),
                      unexpected_index_list=[int(i) for i in idx])


def _column_set(kwargs: dict[str, Any], columns: list[str]) -> TableOutcome:
    """``expect_table_columns_to_match_set`` as GX's pandas path judges it."""
    expected = set(kwargs.get("column_set") or [])
    actual = set(columns)
    observed = sorted(str(c) for c in actual)
    unexpected, missing = sorted(str(c) for c in actual - expected), sorted(str(c) for c in expected - actual)
    if (kwargs.get("column_set") is None and kwargs.get("exact_match", True) is not True) \
            or (not unexpected and not missing):
        return TableOutcome(True, {"observed_value": observed})
    mismatched: dict[str, list[str]] = {}
    if unexpected:
        mismatched["unexpected"] = unexpected
    if missing:
        mismatched["missing"] = missing
    success = not missing if kwargs.get("exact_match", True) is not True else False
    return TableOutcome(success, {"observed_value": observed, "details": {"mismatched": mismatched}})


def gx_result(outcome: Outcome) -> dict[str, Any]:
    """The outcome in GX's JSON result format (``success``, ``result``, ``exception_info``).

    Formatting and JSON conversion are GX's own functions, so values and percentages are
    rendered exactly as GX renders them. Imports GX (call it after GX is loaded).
    """
    from great_expectations.expectations.expectation import _format_map_output
    from great_expectations.expectations.expectation_configuration import parse_result_format
    from great_expectations.util import convert_to_json_serializable

    if isinstance(outcome, TableOutcome):
        success, result = outcome.success, outcome.result
    else:
        formatted = _format_map_output(
            result_format=parse_result_format("SUMMARY"), success=outcome.success,
            element_count=outcome.element_count, nonnull_count=outcome.nonnull_count,
            unexpected_count=outcome.unexpected_count, unexpected_list=outcome.unexpected_list,
            unexpected_index_list=outcome.unexpected_index_list)
        success, result = formatted["success"], formatted["result"]
    return {"success": bool(success), "result": convert_to_json_serializable(result),
            "exception_info": {"raised_exception": False, "exception_traceback": None, "exception_message": None}}
