"""Validation with Great Expectations 1.x.

Every batch is validated against two layers of expectations:

* the *declared* layer, derived from the spec itself (columns, not-null, ranges, allowed
  sets, key uniqueness), so a new use case is validated with nothing but its spec;
* the *reviewed* layer, bootstrapped from training-data statistics with
  ``flightdeck bootstrap-suite`` and committed next to the spec as JSON.

Expectations with severity ``critical`` are hard: a failure fails the batch. ``warning``
expectations are reported and kept with the results. GX is imported lazily (~3 s).
"""

from __future__ import annotations

import html
import json
import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flightdeck.core.spec import DatasetSpec
from flightdeck.data import fast_expectations
from flightdeck.data.profile import sorted_unique

Expectation = dict[str, Any]
GxRun = Callable[["pd.DataFrame"], dict[str, Any]]  # validates one chunk with GX, returns its JSON result
UNIQUENESS = ("expect_compound_columns_to_be_unique", "expect_column_values_to_be_unique")
MEAN = "expect_column_mean_to_be_between"
log = logging.getLogger(__name__)


def declared_expectations(spec: DatasetSpec, source_name: str) -> list[Expectation]:
    """Hard expectations that follow from the spec's declarations."""
    source = spec.sources[source_name]
    columns = [n for n, c in source.columns.items() if c.pii != "drop"]
    out: list[Expectation] = [
        {"type": "expect_table_columns_to_match_set", "kwargs": {"column_set": columns, "exact_match": False}},
    ]
    for name, col in source.columns.items():
        if col.pii == "drop":
            continue
        if col.required:
            out.append({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": name}})
        if col.min is not None or col.max is not None:
            out.append({"type": "expect_column_values_to_be_between",
                        "kwargs": {"column": name, "min_value": col.min, "max_value": col.max}})
        if col.allowed is not None and col.on_unseen == "quarantine":
            out.append({"type": "expect_column_values_to_be_in_set",
                        "kwargs": {"column": name, "value_set": list(col.allowed)}})
    keys = [k for k in spec.entity_key if k in source.columns]
    if len(keys) == 1:
        out.append({"type": "expect_column_values_to_be_unique", "kwargs": {"column": keys[0]}})
    elif keys:
        out.append({"type": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": keys}})
    for e in out:
        e.update(severity="critical", meta={"layer": "declared"})
    return out


def bootstrap_expectations(spec: DatasetSpec, source_name: str, profile: dict[str, Any],
                           tolerance: float = 0.1) -> list[Expectation]:
    """Statistical expectations learned from a training-data profile, for review and commit.

    Ranges widen the observed 1st..99th percentile band by ``tolerance`` of its width;
    missing-ratio bounds allow twice the observed ratio plus one point; observed category
    sets are checked too. All are warnings: a storm day with many cancellations or a new
    route is news, not bad data. The hard rules are the spec's declarations.
    """
    source = spec.sources[source_name]
    out: list[Expectation] = []
    for name, col in source.columns.items():
        stats = profile["columns"].get(name)
        if stats is None or col.pii == "drop":
            continue
        ratio = stats.get("missing_ratio") or 0.0
        if not col.required:
            out.append({"type": "expect_column_values_to_not_be_null", "severity": "warning",
                        "kwargs": {"column": name, "mostly": round(max(0.0, 1 - (2 * ratio + 0.01)), 4)}})
        if stats["type_class"] == "numeric" and "p01" in stats:
            lo, hi = stats["p01"], stats["p99"]
            pad = (hi - lo) * tolerance
            out.append({"type": "expect_column_values_to_be_between", "severity": "warning",
                        "kwargs": {"column": name, "min_value": round(lo - pad, 4),
                                   "max_value": round(hi + pad, 4), "mostly": 0.95}})
            out.append({"type": "expect_column_mean_to_be_between", "severity": "warning",
                        "kwargs": {"column": name, "min_value": round(stats["mean"] - 3 * stats["std"], 4),
                                   "max_value": round(stats["mean"] + 3 * stats["std"], 4)}})
        if col.type == "category" and col.allowed is None and stats["distinct"] <= 500 and not col.pii:
            values = sorted(v["value"] for v in stats.get("top_values", []))
            if stats["distinct"] <= len(values):
                out.append({"type": "expect_column_values_to_be_in_set", "severity": "warning",
                            "kwargs": {"column": name, "value_set": values, "mostly": 0.99}})
    for e in out:
        e["meta"] = {"layer": "reviewed", "bootstrapped_from_rows": profile["rows"]}
    return out


def suite_path(spec: DatasetSpec, source_name: str) -> Path | None:
    return spec.suite_dir / f"{source_name}.json" if spec.suite_dir else None


def load_expectations(spec: DatasetSpec, source_name: str) -> list[Expectation]:
    """Declared expectations plus the reviewed suite committed next to the spec, if any."""
    expectations = declared_expectations(spec, source_name)
    path = suite_path(spec, source_name)
    if path is not None and path.exists():
        try:
            suite = json.loads(path.read_text())
            expectations += list(suite["expectations"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a valid expectation suite (expected JSON with "
                             f"an 'expectations' list): {exc}") from None
    return expectations


def suite_document(spec: DatasetSpec, source_name: str, expectations: list[Expectation]) -> dict[str, Any]:
    return {"name": f"{spec.name}.{source_name}", "spec_version": spec.fingerprint(),
            "expectations": expectations}


def _to_gx(expectations: list[Expectation]) -> Any:
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    objs = []
    for e in expectations:
        config = ExpectationConfiguration(type=e["type"], kwargs=dict(e["kwargs"]), meta=e.get("meta", {}),
                                          severity=e.get("severity", "critical"))
        objs.append(config.to_domain_obj())
    return gx.ExpectationSuite(name="flightdeck", expectations=objs)


def validate_frame(frame: pd.DataFrame, expectations: list[Expectation]) -> dict[str, Any]:
    """Run the expectations on ``frame``; return a JSON-able report.

    The report has ``success`` (no critical failure), ``hard_failures`` and ``warnings``
    (each with the expectation, unexpected count and example values) and GX's raw result.
    """
    return validate_chunks([frame], expectations)


def _gx_validator(expectations: list[Expectation]) -> GxRun:
    """One GX context, suite and batch definition, built once and reused for every chunk."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    definition = context.data_sources.add_pandas("flightdeck").add_dataframe_asset("batch") \
        .add_batch_definition_whole_dataframe("whole")
    suite = _to_gx(expectations)

    def run(chunk: pd.DataFrame) -> dict[str, Any]:
        batch = definition.get_batch(batch_parameters={"dataframe": chunk.reset_index(drop=True)})
        return dict(batch.validate(suite, result_format="SUMMARY").to_json_dict())

    return run


class _BackgroundValidator:
    """Imports GX and builds the validator in a thread, overlapping the ~3 s import with I/O."""

    def __init__(self, expectations: list[Expectation]) -> None:
        self._run: GxRun | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._build, args=(expectations,), daemon=True)
        self._thread.start()

    def _build(self, expectations: list[Expectation]) -> None:
        try:
            self._run = _gx_validator(expectations)
        except BaseException as exc:  # re-raised in the caller's thread
            self._error = exc

    def __call__(self, chunk: pd.DataFrame) -> dict[str, Any]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._run is not None
        return self._run(chunk)


Chunks = Iterable[pd.DataFrame] | Callable[[], Iterable[pd.DataFrame]]


class _Disagreement(Exception):
    """FlightDeck's vectorised result differs from GX's on the chunk GX checked."""


def validate_chunks(chunks: Chunks, expectations: list[Expectation], engine: str = "vectorised") -> dict[str, Any]:
    """Validate a batch chunk by chunk and merge the results, so memory stays bounded.

    Row-level (map) expectations are merged exactly: unexpected and element counts add up
    and ``mostly`` is judged on the totals. Column means are merged weighted by their
    non-missing counts. Compound-key uniqueness is also checked across chunks (key hashes).
    Other table-level expectations must hold in every chunk.

    Args:
        chunks: the batch's data frames, or a function that opens them (then GX's import
            overlaps with reading, and a disagreement re-reads the batch for GX).
        expectations: the suite (see :func:`load_expectations`).
        engine: ``"gx"`` has GX validate every chunk. ``"vectorised"`` (the default) has GX
            validate the first chunk with the whole suite and FlightDeck the other chunks
            for the expectations of :mod:`flightdeck.data.fast_expectations`, producing
            GX's own result format; if FlightDeck's result on the first chunk differs from
            GX's in anything, the batch is validated by GX alone.
    """
    if engine not in ("gx", "vectorised"):
        raise ValueError(f"engine: expected 'gx' or 'vectorised', got {engine!r}")
    if engine == "vectorised" and callable(chunks):
        try:
            return _validate(chunks, expectations, vectorised=True)
        except _Disagreement as exc:  # found after the whole batch was read: read it again for GX
            log.warning("vectorised validation disagrees with GX (%s); validating with GX alone", exc)
            return _validate(chunks, expectations, vectorised=False)
    return _validate(chunks, expectations, vectorised=engine == "vectorised")


def _validate(chunks: Chunks, expectations: list[Expectation], vectorised: bool) -> dict[str, Any]:
    # Column means are computed here, merged across chunks by weight, instead of by GX:
    # GX 1.x scans every value of the column in Python (a Decimal check) for each mean.
    mean_idx = [i for i, e in enumerate(expectations) if e["type"] == MEAN]
    gx_idx = [i for i in range(len(expectations)) if i not in mean_idx]
    gx_exps = [expectations[i] for i in gx_idx]
    fast = [j for j, e in enumerate(gx_exps) if vectorised and fast_expectations.supports(e)]
    slow = [j for j in range(len(gx_exps)) if j not in fast]
    deferred = callable(chunks)  # GX imports in the background; the first chunk is checked at the end
    full: GxRun = (
        _BackgroundValidator(gx_exps) if deferred else _gx_validator(gx_exps))
    rest = _gx_validator([gx_exps[j] for j in slow]) if fast and slow else None
    merged: list[dict[str, Any]] | None = None  # GX's results, merged over the chunks so far
    later: list[_ChunkResults] = []  # results of the chunks after the first, when vectorised
    first: tuple[pd.DataFrame, dict[int, fast_expectations.Outcome]] | None = None
    sums: dict[int, list[float]] = {i: [0.0, 0.0] for i in mean_idx}  # sum, count of non-missing values
    seen_keys: dict[int, np.ndarray] = {}
    cross_dupes: dict[int, int] = {}
    slots: list[int] = []
    rows = 0
    for n, chunk in enumerate(chunks() if callable(chunks) else chunks):
        rows += len(chunk)
        if fast and n == 0 and deferred:
            first = (chunk, _vectorised(gx_exps, fast, chunk))
        elif fast and n == 0:
            merged = full(chunk)["results"]
            slots = _suite_slots(gx_exps, merged)
            try:
                _check_first(merged, _vectorised(gx_exps, fast, chunk), slots)
            except _Disagreement as exc:
                log.warning("vectorised validation disagrees with GX (%s); validating with GX alone", exc)
                fast, rest = [], None
        elif fast:
            later.append(_chunk_results(gx_exps, fast, slow, rest, full, chunk, deferred))
        else:
            result = full(chunk)["results"]
            merged = result if merged is None else _merge_all(merged, result)
        _add_means(expectations, mean_idx, chunk, sums)
        _add_key_hashes(expectations, gx_idx, chunk, seen_keys, cross_dupes)
    if first is not None:
        merged = full(first[0])["results"]
        slots = _suite_slots(gx_exps, merged)
        _check_first(merged, first[1], slots)
    if merged is None:
        merged = full(pd.DataFrame(columns=[]))["results"]
    slots = slots or _suite_slots(gx_exps, merged)
    for part in later:
        _merge_chunk(merged, part, slots)
    return _finish(expectations, mean_idx, gx_idx, merged, slots, sums, cross_dupes, rows)


_ChunkResults = tuple[dict[int, "fast_expectations.Outcome"], list[dict[str, Any]]]


def _chunk_results(gx_exps: list[Expectation], fast: list[int], slow: list[int],
                   rest: GxRun | None, full: GxRun,
                   chunk: pd.DataFrame, deferred: bool) -> _ChunkResults:
    """One later chunk: FlightDeck's outcomes for ``fast``, GX's results for ``slow``.

    A chunk FlightDeck cannot evaluate (a column missing, an unexpected type) is
    validated by GX whole; after a deferred check that is a disagreement (read again).
    """
    try:
        mine = _vectorised(gx_exps, fast, chunk)
    except _Disagreement:
        if deferred:
            raise
        return {}, full(chunk)["results"]
    return mine, (rest(chunk)["results"] if rest is not None else [])


def _merge_chunk(merged: list[dict[str, Any]], part: _ChunkResults, slots: list[int]) -> None:
    """Fold one later chunk's results into the merged ones (vectorised outcomes in GX's format).

    GX orders its results by domain, not as the suite lists them: ``slots`` maps a suite
    position to GX's; GX's own results are placed by their configuration.
    """
    mine, theirs = part
    for j, outcome in mine.items():
        acc = merged[slots[j]]
        _merge_result(acc, {**fast_expectations.gx_result(outcome), "expectation_config": acc["expectation_config"]})
    for k, res in zip(_slots([_config_key(r["expectation_config"]) for r in theirs], merged), theirs, strict=True):
        _merge_result(merged[k], res)


def _config_key(config: dict[str, Any]) -> str:
    kwargs = {k: v for k, v in config["kwargs"].items() if k != "batch_id"}
    return json.dumps([config["type"], kwargs], sort_keys=True, default=str)


def _slots(keys: list[str], results: list[dict[str, Any]]) -> list[int]:
    """For each configuration key, the position of its result (identical ones in turn)."""
    free: dict[str, list[int]] = {}
    for pos, res in enumerate(results):
        free.setdefault(_config_key(res["expectation_config"]), []).append(pos)
    return [free[key].pop(0) for key in keys]


def _suite_slots(gx_exps: list[Expectation], results: list[dict[str, Any]]) -> list[int]:
    """Where GX put each suite expectation's result (keys normalised by GX itself)."""
    suite = _to_gx(gx_exps)
    return _slots([_config_key(e.configuration.to_json_dict()) for e in suite.expectations], results)


def _vectorised(gx_exps: list[Expectation], fast: list[int], chunk: pd.DataFrame) -> dict[int, Any]:
    try:
        return {j: fast_expectations.evaluate(gx_exps[j], chunk) for j in fast}
    except fast_expectations.Unsupported as exc:
        raise _Disagreement(str(exc)) from None


def _check_first(gx_first: list[dict[str, Any]], mine: dict[int, Any], slots: list[int]) -> None:
    """Raise :class:`_Disagreement` unless FlightDeck's results on the first chunk are GX's."""
    for j, outcome in mine.items():
        ours, theirs = fast_expectations.gx_result(outcome), gx_first[slots[j]]
        if (ours["success"], ours["result"]) != (theirs["success"], theirs.get("result")) \
                or theirs.get("exception_info", {}).get("raised_exception"):
            cfg = theirs["expectation_config"]
            raise _Disagreement(f"{cfg['type']} {cfg['kwargs']}: GX {theirs.get('result')}, "
                                f"FlightDeck {ours['result']}")


def _merge_all(merged: list[dict[str, Any]], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fold one chunk's GX results into the merged ones, matched by configuration: GX's order
    of results changes when a chunk breaks an expectation with an exception (missing column)."""
    for k, res in zip(_slots([_config_key(r["expectation_config"]) for r in results], merged), results, strict=True):
        _merge_result(merged[k], res)
    return merged


def _add_means(expectations: list[Expectation], mean_idx: list[int], chunk: pd.DataFrame,
               sums: dict[int, list[float]]) -> None:
    for i in mean_idx:
        column = expectations[i]["kwargs"]["column"]
        if column in chunk:
            values = pd.to_numeric(chunk[column], errors="coerce").to_numpy(dtype="float64")
            values = values[np.isfinite(values)]
            sums[i][0] += float(values.sum())
            sums[i][1] += values.size


def _add_key_hashes(expectations: list[Expectation], gx_idx: list[int], chunk: pd.DataFrame,
                    seen_keys: dict[int, np.ndarray], cross_dupes: dict[int, int]) -> None:
    """Count keys of this chunk already seen in earlier chunks (uniqueness across chunks)."""
    for j, i in enumerate(gx_idx):
        kwargs = expectations[i]["kwargs"]
        columns = kwargs.get("column_list", [kwargs.get("column")])
        if expectations[i]["type"] in UNIQUENESS and all(c in chunk for c in columns):
            hashes = sorted_unique(pd.util.hash_pandas_object(chunk[columns].dropna(), index=False).to_numpy())
            previous = seen_keys.get(j, np.empty(0, np.uint64))
            cross_dupes[j] = cross_dupes.get(j, 0) + int(_in_sorted(hashes, previous).sum())
            seen_keys[j] = sorted_unique(np.concatenate([previous, hashes]))


def _in_sorted(values: np.ndarray, ordered: np.ndarray) -> np.ndarray:
    """Which ``values`` occur in the sorted array ``ordered`` (binary search, vectorised)."""
    if ordered.size == 0:
        return np.zeros(values.size, dtype=bool)
    pos = np.minimum(np.searchsorted(ordered, values), ordered.size - 1)
    found: np.ndarray = ordered[pos] == values
    return found


def _finish(expectations: list[Expectation], mean_idx: list[int], gx_idx: list[int], merged: list[dict[str, Any]],
            slots: list[int], sums: dict[int, list[float]], cross_dupes: dict[int, int], rows: int) -> dict[str, Any]:
    """The report: cross-chunk duplicates on their expectation's result, the means, GX's order kept."""
    for j in range(len(gx_idx)):
        if cross_dupes.get(j):
            res = merged[slots[j]]  # j counts suite positions; GX orders its results by domain
            info = res.setdefault("result", {})
            info["unexpected_count"] = (info.get("unexpected_count") or 0) + cross_dupes[j]
            info["cross_chunk_duplicates"] = cross_dupes[j]
            res["success"] = False
    results: list[dict[str, Any]] = [{} for _ in expectations]
    for j, i in enumerate(gx_idx):
        results[i] = merged[j]
    for i in mean_idx:
        e = expectations[i]
        total, count = sums[i]
        mean = total / count if count else None
        lo, hi = e["kwargs"].get("min_value"), e["kwargs"].get("max_value")
        ok = mean is not None and (lo is None or mean >= lo) and (hi is None or mean <= hi)
        results[i] = {"success": ok, "result": {"observed_value": mean, "element_count": int(count)},
                      "expectation_config": {"type": e["type"], "kwargs": dict(e["kwargs"]), "meta": e.get("meta", {}),
                                             "severity": e.get("severity", "critical")},
                      "exception_info": {"raised_exception": False, "exception_message": None},
                      "meta": {"evaluated_by": "flightdeck (chunk-merged mean)"}}
    gx_result = {"success": all(r["success"] for r in results), "results": results}
    return _report(gx_result, rows)


def _merge_result(acc: dict[str, Any], res: dict[str, Any]) -> None:
    """Fold one chunk's result for an expectation into the running one."""
    a, b = acc.setdefault("result", {}), res.get("result", {})
    if "unexpected_count" in b and "element_count" in b:
        for key in ("element_count", "missing_count", "unexpected_count"):
            a[key] = (a.get(key) or 0) + (b.get(key) or 0)
        examples = (a.get("partial_unexpected_list") or []) + (b.get("partial_unexpected_list") or [])
        a["partial_unexpected_list"] = examples[:20]
        cfg = acc["expectation_config"]
        nulls = cfg["type"] == "expect_column_values_to_not_be_null"
        base = a["element_count"] - (0 if nulls else a.get("missing_count", 0))
        a["unexpected_percent"] = 100.0 * a["unexpected_count"] / base if base else 0.0
        mostly = cfg["kwargs"].get("mostly", 1.0)
        acc["success"] = a["unexpected_percent"] <= 100.0 * (1 - mostly) + 1e-9
    else:
        if not res["success"] and acc["success"]:
            acc["result"] = b
        acc["success"] = acc["success"] and res["success"]
    if res.get("exception_info", {}).get("raised_exception"):
        acc["exception_info"] = res["exception_info"]
        acc["success"] = False


def _report(result: dict[str, Any], rows: int) -> dict[str, Any]:
    hard: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    for res in result["results"]:
        if res["success"]:
            continue
        cfg = res["expectation_config"]
        kwargs = {k: v for k, v in cfg["kwargs"].items() if k != "batch_id"}
        info = res.get("result", {})
        failure = {"expectation": cfg["type"], "kwargs": kwargs, "severity": cfg.get("severity"),
                   "unexpected_count": info.get("unexpected_count"),
                   "unexpected_percent": info.get("unexpected_percent"),
                   "observed_value": info.get("observed_value"),
                   "examples": (info.get("partial_unexpected_list") or [])[:5],
                   "error": (res.get("exception_info") or {}).get("exception_message")}
        (hard if cfg.get("severity", "critical") == "critical" else warnings).append(failure)
    return {"success": not hard, "rows": rows, "evaluated": len(result["results"]),
            "hard_failures": hard, "warnings": warnings, "gx_result": result}


def summarise_failures(report: dict[str, Any], limit: int = 10) -> str:
    """Readable lines: which expectations failed, on how many rows, with example values."""
    lines = []
    for f in report["hard_failures"][:limit]:
        column = f["kwargs"].get("column") or f["kwargs"].get("column_list") or ""
        detail = (f"{f['unexpected_count']} rows ({f['unexpected_percent']:.2f}%)"
                  if f.get("unexpected_count") is not None else f"observed {f.get('observed_value')}")
        lines.append(f"  - {f['expectation']} {column}: {detail}; examples {f['examples']}"
                     + (f"; error {f['error']}" if f.get("error") else ""))
    more = len(report["hard_failures"]) - limit
    if more > 0:
        lines.append(f"  ... and {more} more")
    return "\n".join(lines)


def render_validation_html(report: dict[str, Any], title: str) -> str:
    rows = []
    for res in report["gx_result"]["results"]:
        cfg = res["expectation_config"]
        kwargs = {k: v for k, v in cfg["kwargs"].items() if k != "batch_id"}
        status = "pass" if res["success"] else ("FAIL" if cfg.get("severity") == "critical" else "warn")
        colour = {"pass": "#2a7", "FAIL": "#c33", "warn": "#d90"}[status]
        info = res.get("result", {})
        rows.append(f"<tr><td style='color:{colour}'><b>{status}</b></td><td>{html.escape(cfg['type'])}</td>"
                    f"<td><code>{html.escape(json.dumps(kwargs, default=str)[:300])}</code></td>"
                    f"<td>{info.get('unexpected_count', info.get('observed_value', ''))}</td>"
                    f"<td>{html.escape(str(info.get('partial_unexpected_list', [])[:5]))}</td></tr>")
    verdict = "passed" if report["success"] else "FAILED"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{border-bottom:1px solid #ddd;padding:4px;"
            "text-align:left}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{report['rows']} rows, {report['evaluated']} expectations: "
            f"<b>{verdict}</b> ({len(report['hard_failures'])} hard failures, {len(report['warnings'])} warnings)</p>"
            "<table><tr><th></th><th>expectation</th><th>arguments</th><th>unexpected / observed</th>"
            f"<th>examples</th></tr>{''.join(rows)}</table></body></html>")
