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
from pathlib import Path
from typing import Any

import pandas as pd

from flightdeck.spec import DatasetSpec

Expectation = dict[str, Any]
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
    if keys:
        out.append({"type": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": keys}})
    for e in out:
        e.update(severity="critical", meta={"layer": "declared"})
    return out


def bootstrap_expectations(spec: DatasetSpec, source_name: str, profile: dict[str, Any],
                           tolerance: float = 0.1) -> list[Expectation]:
    """Statistical expectations learned from a training-data profile, for review and commit.

    Ranges widen the observed 1st..99th percentile band by ``tolerance`` of its width;
    missing-ratio bounds allow twice the observed ratio plus one point; observed category
    sets become warnings (new categories are expected in production and are counted).
    """
    source = spec.sources[source_name]
    out: list[Expectation] = []
    for name, col in source.columns.items():
        stats = profile["columns"].get(name)
        if stats is None or col.pii == "drop":
            continue
        ratio = stats.get("missing_ratio") or 0.0
        if not col.required:
            out.append({"type": "expect_column_values_to_not_be_null", "severity": "critical",
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
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("flightdeck")
    asset = source.add_dataframe_asset("batch")
    batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(
        batch_parameters={"dataframe": frame.reset_index(drop=True)})
    result = batch.validate(_to_gx(expectations), result_format="SUMMARY").to_json_dict()
    hard, warnings = [], []
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
                   "examples": info.get("partial_unexpected_list", [])[:5],
                   "error": (res.get("exception_info") or {}).get("exception_message")}
        (hard if cfg.get("severity", "critical") == "critical" else warnings).append(failure)
    return {"success": not hard, "rows": int(len(frame)), "evaluated": len(result["results"]),
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
