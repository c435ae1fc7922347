"""What monitoring measures, as records: the ``Figure`` (check, metric, value, threshold, status,
subject, partition, window) kept in ``fd_monitoring_metrics``, and reading and formatting them
back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from flightdeck.core import warehouse

STATUSES = ("ok", "warn", "alert", "no_labels", "insufficient", "error")


MONITOR_TESTS = {"dependencies": "monitor_1", "invariants": "monitor_2", "skew": "monitor_3",
                 "staleness": "monitor_4", "stability": "monitor_5", "performance": "monitor_6",
                 "decay": "monitor_7"}


QUALITY_CHECKS = ("decay", "drift", "score_drift", "stability", "skew")


@dataclass
class Figure:
    """One measured figure; becomes one ``fd_monitoring_metrics`` row."""

    check: str
    metric: str
    value: float | None
    status: str
    threshold: float | None = None
    subject: str = ""
    partition: str = ""
    window: str = "partition"
    rows: int | None = None
    model_version: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def row(self, spec_name: str, model_name: str, run_id: str, at: datetime) -> dict[str, Any]:
        value = None if self.value is None or not math.isfinite(float(self.value)) else float(self.value)
        return {"spec_name": spec_name, "check_name": self.check, "metric": self.metric, "subject": self.subject,
                "partition_date": self.partition, "window": self.window, "value": value,
                "threshold": self.threshold, "status": self.status, "rows": self.rows, "model_name": model_name,
                "model_version": self.model_version, "run_id": run_id, "detail": detail_json(self.detail),
                "measured_at": at}


def detail_json(value: Any) -> str:
    """Strict JSON (NaN and infinity become null)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, np.generic):
            return clean(v.item())
        return v
    return json.dumps(clean(value), default=str, sort_keys=True, allow_nan=False)


def status_of(bad: bool, warn: bool = False) -> str:
    return "alert" if bad else "warn" if warn else "ok"


def summarise(f: Figure) -> dict[str, Any]:
    """A figure as a small JSON-able dict (what alerts and the manifest carry)."""
    return {"check": f.check, "metric": f.metric, "subject": f.subject, "partition": f.partition, "window": f.window,
            "value": None if f.value is None or not math.isfinite(f.value) else round(float(f.value), 6),
            "threshold": f.threshold, "status": f.status, "model_version": f.model_version}


def latest_figures(engine: Any, spec_name: str, limit_partitions: int = 3) -> list[dict[str, Any]]:
    """The newest figures per check (what the demo and ``flightdeck monitor`` print)."""
    rows = warehouse.queries.figures_newest_first(engine, spec_name)
    parts = sorted({r["partition_date"] for r in rows}, reverse=True)[:limit_partitions]
    return [r for r in rows if r["partition_date"] in parts]


def format_figures(rows: Sequence[dict[str, Any]], subjects: bool = False) -> str:
    """Figures as an aligned text table (per-feature and per-slice rows only with ``subjects``)."""
    shown = [r for r in rows if subjects or not r["subject"]]
    if not shown:
        return "no monitoring figures yet"
    head = ("partition", "window", "check", "metric", "subject", "value", "threshold", "status", "rows", "version")
    cells = [(r["partition_date"], r["window"], r["check_name"], r["metric"], r["subject"] or "",
              "-" if r["value"] is None else f"{r['value']:.4g}",
              "-" if r["threshold"] is None else f"{r['threshold']:.4g}", r["status"],
              "-" if r["rows"] is None else str(r["rows"]), r["model_version"] or "-") for r in shown]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)

