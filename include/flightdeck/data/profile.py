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


SAMPLE_ROWS = 200_000
DISTINCT_CAP = 200_000
COUNTS_CAP = 10_000


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` by sorting (radix sort for integers): numpy 2's hash-based unique is slower on hashes."""
    ordered = np.sort(values, kind="stable")
    out: np.ndarray = ordered[np.r_[True, ordered[1:] != ordered[:-1]]] if ordered.size else ordered
    return out


def _merge_sorted_unique(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    both = np.sort(np.concatenate([a, b]), kind="stable")
    return both[np.r_[True, both[1:] != both[:-1]]] if both.size else both


class ProfileAccumulator:
    """Mergeable per-attribute statistics, fed chunk by chunk, so memory stays bounded.

    Counts, missing values, min, max, mean, standard deviation (Chan's parallel update),
    top values and Pearson correlations (pairwise-complete sums) are exact. Median,
    percentiles, histogram and shape come from a uniform sample of ``SAMPLE_ROWS`` rows,
    exact for smaller inputs. Distinct counts are exact up to ``DISTINCT_CAP``.
    """

    def __init__(self, label: str | None = None, seed: int = 0) -> None:
        self.label = label
        self.rows = 0
        self.columns: list[str] = []
        self.kind: dict[str, str] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self.sample: pd.DataFrame | None = None
        self.rng = np.random.default_rng(seed)
        self.corr_cols: list[str] = []
        self.sums: dict[str, np.ndarray] = {}

    def update(self, frame: pd.DataFrame) -> None:
        if not self.columns:
            self.columns = [c for c in frame.columns if not str(c).startswith("_")]
            for c in self.columns:
                self.kind[c] = type_class(frame[c])
                self.stats[c] = {"count": 0, "missing": 0, "distinct": np.empty(0, np.uint64), "capped": False,
                                 "n": 0, "mean": 0.0, "m2": 0.0, "min": None, "max": None, "counts": None}
            self.corr_cols = [c for c in self.columns if self.kind[c] in ("numeric", "boolean")]
            k = len(self.corr_cols)
            self.sums = {name: np.zeros((k, k)) for name in ("n", "x", "x2", "xy")}
        self.rows += len(frame)
        for c in self.columns:
            self._update_column(c, frame[c])
        self._update_sample(frame)
        self._update_correlation(frame)

    def _update_column(self, c: str, series: pd.Series) -> None:
        st, kind = self.stats[c], self.kind[c]
        present = series.dropna()
        st["count"] += len(series)
        st["missing"] += len(series) - len(present)
        if not st["capped"] and len(present):
            hashed = sorted_unique(pd.util.hash_pandas_object(present, index=False).to_numpy())
            st["distinct"] = _merge_sorted_unique(st["distinct"], hashed)
            if st["distinct"].size > DISTINCT_CAP:
                st["capped"], st["distinct"] = True, np.empty(0, np.uint64)
        if kind == "numeric" and len(present):
            values = present.to_numpy(dtype="float64")
            values = values[np.isfinite(values)]
            if values.size:
                n_b, mean_b = values.size, float(values.mean())
                m2_b = float(((values - mean_b) ** 2).sum())
                n_a, mean_a = st["n"], st["mean"]
                n = n_a + n_b
                delta = mean_b - mean_a
                st["mean"] = mean_a + delta * n_b / n
                st["m2"] += m2_b + delta**2 * n_a * n_b / n
                st["n"] = n
                st["min"] = float(values.min()) if st["min"] is None else min(st["min"], float(values.min()))
                st["max"] = float(values.max()) if st["max"] is None else max(st["max"], float(values.max()))
        elif kind == "datetime" and len(present):
            lo, hi = present.min(), present.max()
            st["min"] = lo if st["min"] is None else min(st["min"], lo)
            st["max"] = hi if st["max"] is None else max(st["max"], hi)
        if kind in ("categorical", "boolean") and len(present):
            counts = present.astype(str).value_counts()
            st["counts"] = counts if st["counts"] is None else st["counts"].add(counts, fill_value=0)
            if len(st["counts"]) > COUNTS_CAP:
                st["counts"] = st["counts"].nlargest(COUNTS_CAP)

    def _update_sample(self, frame: pd.DataFrame) -> None:
        numeric = [c for c in self.columns if self.kind[c] == "numeric"]
        if not numeric:
            return
        part = frame[numeric].astype("float64").assign(_u=self.rng.random(len(frame)))
        merged = part if self.sample is None else pd.concat([self.sample, part], ignore_index=True)
        if len(merged) > SAMPLE_ROWS:
            keep = np.argpartition(merged["_u"].to_numpy(), SAMPLE_ROWS)[:SAMPLE_ROWS]
            merged = merged.iloc[np.sort(keep)].reset_index(drop=True)
        self.sample = merged

    def _update_correlation(self, frame: pd.DataFrame) -> None:
        if len(self.corr_cols) < 2 and self.label is None:
            return
        x = frame[self.corr_cols].astype("float64").to_numpy()
        mask = np.isfinite(x)
        xz, m = np.where(mask, x, 0.0), mask.astype("float64")
        self.sums["n"] += m.T @ m
        self.sums["x"] += xz.T @ m
        self.sums["x2"] += (xz * xz).T @ m
        self.sums["xy"] += xz.T @ xz

    def _corr(self) -> pd.DataFrame:
        n, sx, sxx, sxy = self.sums["n"], self.sums["x"], self.sums["x2"], self.sums["xy"]
        with np.errstate(invalid="ignore", divide="ignore"):
            num = n * sxy - sx * sx.T
            den = np.sqrt((n * sxx - sx**2) * (n * sxx.T - (sx.T) ** 2))
            corr = np.where(den > 0, num / den, np.nan)
        return pd.DataFrame(corr, index=self.corr_cols, columns=self.corr_cols)

    def result(self) -> dict[str, Any]:
        columns = {}
        for c in self.columns:
            st, kind = self.stats[c], self.kind[c]
            out: dict[str, Any] = {"count": st["count"], "missing": st["missing"],
                                   "missing_ratio": _clean(st["missing"] / st["count"]) if st["count"] else 0.0,
                                   "type_class": kind,
                                   "distinct": DISTINCT_CAP if st["capped"] else int(st["distinct"].size)}
            if st["capped"]:
                out["distinct_at_least"] = True
            if kind == "numeric" and st["n"]:
                sample = self.sample[c].to_numpy() if self.sample is not None else np.empty(0)
                sample = sample[np.isfinite(sample)]
                std = math.sqrt(st["m2"] / (st["n"] - 1)) if st["n"] > 1 else 0.0
                out.update(min=_clean(st["min"]), max=_clean(st["max"]), mean=_clean(st["mean"]), std=_clean(std))
                if sample.size:
                    out.update(median=_clean(np.median(sample)), p01=_clean(np.quantile(sample, 0.01)),
                               p99=_clean(np.quantile(sample, 0.99)), shape=guess_shape(sample))
                    counts, edges = np.histogram(sample, bins=HIST_BINS, range=(st["min"], st["max"]))
                    if self.rows > SAMPLE_ROWS:
                        counts = np.round(counts * (st["n"] / sample.size)).astype(int)
                        out["sampled_rows"] = int(sample.size)
                    out["histogram"] = {"counts": counts.tolist(), "edges": [_clean(e) for e in edges]}
            elif kind == "datetime" and st["min"] is not None:
                out.update(min=st["min"].isoformat(), max=st["max"].isoformat())
            if kind in ("categorical", "boolean") and st["counts"] is not None:
                top = st["counts"].sort_values(ascending=False, kind="stable").head(TOP_VALUES)
                out["top_values"] = [{"value": k, "count": int(v)} for k, v in top.items()]
            columns[c] = out
        profile: dict[str, Any] = {"rows": self.rows, "columns": columns}
        varying = [c for c in self.corr_cols if columns[c]["distinct"] > 1]
        if len(varying) >= 2 and self.rows > 2:
            corr = self._corr()
            profile["correlations"] = {a: {b: _clean(corr.loc[a, b]) for b in varying} for a in varying}
        if self.label is not None and self.label in self.corr_cols and self.stats[self.label]["n"]:
            corr = self._corr()
            profile["label"] = {"name": self.label, "positive_rate": _clean(self.stats[self.label]["mean"])}
            profile["label_correlations"] = {c: _clean(corr.loc[c, self.label]) for c in varying if c != self.label}
        return profile


def profile_column(series: pd.Series) -> dict[str, Any]:
    """Statistics of one attribute; vectorised, no row loops."""
    acc = ProfileAccumulator()
    acc.update(series.to_frame(name=str(series.name)))
    return next(iter(acc.result()["columns"].values()))


def profile_frame(frame: pd.DataFrame, label: str | None = None) -> dict[str, Any]:
    """Profile every attribute, plus numeric correlations and correlations with ``label``."""
    acc = ProfileAccumulator(label=label)
    acc.update(frame)
    return acc.result()


def profile_chunks(chunks: Any, label: str | None = None) -> dict[str, Any]:
    """Profile an iterable of data-frame chunks with memory bounded by the chunk and sample sizes."""
    acc = ProfileAccumulator(label=label)
    for chunk in chunks:
        acc.update(chunk)
    return acc.result()


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
