"""Profiling: per-attribute statistics, a distribution-shape guess and correlations,
stored as JSON, with a self-contained HTML report (inline SVG, opens without a server).
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import pandas as pd

TOP_VALUES = 10
HIST_BINS = 20


def _clean(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else round(float(value), 6)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def type_class(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_numeric_dtype(series):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "datetime"
    return "categorical"


def guess_shape(values: np.ndarray) -> str:
    """A coarse guess of the distribution from moments and histogram peaks."""
    if values.size == 0:
        return "empty"
    if np.all(values == values[0]):
        return "constant"
    uniq = np.unique(values)
    if uniq.size <= 2:
        return "binary"
    std = values.std()
    skew = float(((values - values.mean()) ** 3).mean() / std**3)
    kurt = float(((values - values.mean()) ** 4).mean() / std**4 - 3)
    counts, _ = np.histogram(values, bins=min(HIST_BINS, uniq.size))
    peaks = sum(1 for i in range(1, len(counts) - 1)
                if counts[i] > counts[i - 1] and counts[i] > counts[i + 1] and counts[i] > 0.05 * counts.sum())
    if peaks >= 2:
        return "multimodal"
    if skew > 1:
        return "right-skewed"
    if skew < -1:
        return "left-skewed"
    if kurt > 3:
        return "heavy-tailed"
    if kurt < -1.0:
        return "uniform-like"
    return "normal-like"


def profile_column(series: pd.Series) -> dict[str, Any]:
    """Statistics of one attribute; vectorised, no row loops."""
    n = int(len(series))
    missing = int(series.isna().sum())
    out: dict[str, Any] = {
        "count": n, "missing": missing, "missing_ratio": _clean(missing / n) if n else 0.0,
        "type_class": type_class(series), "distinct": int(series.nunique(dropna=True)),
    }
    present = series.dropna()
    if out["type_class"] == "numeric" and not present.empty:
        values = present.to_numpy(dtype="float64")
        finite = values[np.isfinite(values)]
        if finite.size:
            out.update(min=_clean(finite.min()), max=_clean(finite.max()), mean=_clean(finite.mean()),
                       median=_clean(np.median(finite)), std=_clean(finite.std(ddof=1) if finite.size > 1 else 0.0),
                       p01=_clean(np.quantile(finite, 0.01)), p99=_clean(np.quantile(finite, 0.99)),
                       shape=guess_shape(finite))
            counts, edges = np.histogram(finite, bins=HIST_BINS)
            out["histogram"] = {"counts": counts.tolist(), "edges": [_clean(e) for e in edges]}
    elif out["type_class"] == "datetime" and not present.empty:
        out.update(min=present.min().isoformat(), max=present.max().isoformat())
    if out["type_class"] in ("categorical", "boolean") and not present.empty:
        top = present.astype(str).value_counts().head(TOP_VALUES)
        out["top_values"] = [{"value": k, "count": int(v)} for k, v in top.items()]
    return out


def profile_frame(frame: pd.DataFrame, label: str | None = None) -> dict[str, Any]:
    """Profile every attribute, plus numeric correlations and correlations with ``label``."""
    columns = [c for c in frame.columns if not c.startswith("_")]
    profile: dict[str, Any] = {"rows": int(len(frame)),
                               "columns": {c: profile_column(frame[c]) for c in columns}}
    numeric = [c for c in columns if type_class(frame[c]) in ("numeric", "boolean") and frame[c].nunique() > 1]
    if len(numeric) >= 2 and len(frame) > 2:
        corr = frame[numeric].astype("float64").corr()
        profile["correlations"] = {a: {b: _clean(corr.loc[a, b]) for b in numeric} for a in numeric}
    if label is not None and label in frame and frame[label].notna().any():
        y = frame[label].astype("float64")
        profile["label"] = {"name": label, "positive_rate": _clean(y.mean())}
        profile["label_correlations"] = {
            c: _clean(frame[c].astype("float64").corr(y)) for c in numeric if c != label}
    return profile


def _svg_bars(counts: list[int], labels: list[str] | None = None, width: int = 320, height: int = 90) -> str:
    if not counts or max(counts) == 0:
        return ""
    bw = width / len(counts)
    top = max(counts)
    bars = []
    for i, c in enumerate(counts):
        h = (height - 4) * c / top
        title = html.escape(labels[i]) + f": {c}" if labels else str(c)
        bars.append(f'<rect x="{i * bw:.1f}" y="{height - h:.1f}" width="{max(bw - 1, 1):.1f}" '
                    f'height="{h:.1f}" fill="#4c78a8"><title>{title}</title></rect>')
    return f'<svg width="{width}" height="{height}" role="img">{"".join(bars)}</svg>'


def render_profile_html(profile: dict[str, Any], title: str) -> str:
    """One self-contained HTML page with a distribution plot per attribute."""
    rows = []
    for name, col in profile["columns"].items():
        stats = ", ".join(f"{k}={col[k]}" for k in ("missing_ratio", "distinct", "min", "max", "mean",
                                                      "median", "std", "shape") if k in col)
        if "histogram" in col:
            edges = col["histogram"]["edges"]
            labels = [f"{edges[i]}..{edges[i + 1]}" for i in range(len(edges) - 1)]
            plot = _svg_bars(col["histogram"]["counts"], labels)
        elif "top_values" in col:
            top = col["top_values"]
            plot = _svg_bars([t["count"] for t in top], [t["value"] for t in top])
        else:
            plot = ""
        rows.append(f"<tr><td><b>{html.escape(name)}</b><br><small>{col['type_class']}</small></td>"
                    f"<td>{html.escape(stats)}</td><td>{plot}</td></tr>")
    label = profile.get("label")
    label_html = ""
    if label:
        corr = profile.get("label_correlations", {})
        items = "".join(f"<li>{html.escape(k)}: {v}</li>" for k, v in
                        sorted(corr.items(), key=lambda kv: -abs(kv[1] or 0)))
        label_html = (f"<h2>Label {html.escape(label['name'])}</h2><p>positive rate "
                      f"{label['positive_rate']}</p><ul>{items}</ul>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td{border-bottom:1px solid #ddd;padding:4px;"
            "vertical-align:top}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{profile['rows']} rows</p><table>{''.join(rows)}</table>"
            f"{label_html}</body></html>")
