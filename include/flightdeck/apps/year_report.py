"""The "year in replay" report: model-decay and feature-drift charts plus one self-contained HTML page.

Pure rendering: the inputs are DataFrames and mappings that the replay produced, the outputs are files.
The decay chart shows the realised quality of the production model over the year with the retraining
and promotion events marked (quality drops, a retrain is triggered, a promotion restores it); the drift
chart shows the PSI of the most drifting features against warning and alert levels. Charts are drawn
with matplotlib's Agg canvas on standalone ``Figure`` objects, so no global pyplot state is touched.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

EVENT_KINDS = ("alert", "retrain", "promote", "reject", "rollback")

_LOOP, _FROZEN = "loop", "frozen"
_LOOP_COLOUR, _FROZEN_COLOUR = "#1f5fa8", "#8a8a8a"
_OTHER_COLOURS = ("#2a9d8f", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#7f7f7f")
_MODEL_LABELS = {_LOOP: "loop: champion served by continuous training", _FROZEN: "frozen: first model, never retrained"}
_METRIC_LABELS = {"roc_auc": "ROC AUC", "pr_auc": "PR AUC", "precision": "precision", "recall": "recall",
                  "f1": "F1", "accuracy": "accuracy", "log_loss": "log loss", "brier": "Brier score"}
# kind -> (colour, linestyle, linewidth, legend label) of the vertical event lines.
_EVENT_STYLE: dict[str, tuple[str, Any, float, str]] = {
    "retrain": ("#f28e2b", (0, (4, 3)), 1.1, "retrain triggered"),
    "promote": ("#2ca02c", "-", 1.6, "promotion (new champion)"),
    "reject": ("#d62728", ":", 1.4, "candidate rejected"),
    "rollback": ("#9467bd", "-.", 1.6, "rollback"),
}
_ALERT_COLOUR = "#d62728"
# Feature lines avoid the green of promotions and the red of the alert band.
_FEATURE_COLOURS = ("#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22",
                    "#393b79", "#843c39")
_MAX_GAP_DAYS = 7  # rolling lines are drawn across label gaps up to this long, broken beyond


# ------------------------------------------------------------------------------------------------ helpers
def _to_datetimes(values: Any) -> pd.Series:
    """Dates given as ``datetime.date``, ``Timestamp`` or ``"YYYY-MM-DD"`` strings; unparseable -> NaT."""
    series = pd.Series(values, dtype=object) if not isinstance(values, pd.Series) else values
    return pd.to_datetime(series, errors="coerce", format="mixed")


def _date_nums(dates: pd.Series) -> np.ndarray:
    """Matplotlib date numbers (days since the epoch) of a datetime Series."""
    from matplotlib import dates as mdates

    return np.asarray(mdates.date2num(dates.to_numpy()), dtype=float)


def _new_figure(width: float, height: float) -> Any:
    """A standalone figure on an Agg canvas with constrained layout."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (parent directories created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100, facecolor="white")
    return path


def _format_month_axis(ax: Any) -> None:
    """Month ticks with the year shown where it changes."""
    from matplotlib import dates as mdates

    locator = mdates.MonthLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, show_offset=False))


def _empty_axes(ax: Any, text: str) -> None:
    """Mark an axes as having nothing to show."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=12, color="#777777", zorder=8,
            bbox={"boxstyle": "round,pad=0.3", "facecolor": "white", "edgecolor": "#dddddd"})
    ax.set_yticks([])


def _with_gaps(x: np.ndarray, y: np.ndarray, max_gap: float) -> tuple[np.ndarray, np.ndarray]:
    """Drop missing points but insert a NaN break where consecutive points are more than ``max_gap`` apart."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 2:
        return x, y
    breaks = np.nonzero(np.diff(x) > max_gap)[0] + 1
    return np.insert(x, breaks, np.nan), np.insert(y, breaks, np.nan)


def _prepare_events(events: pd.DataFrame | None) -> pd.DataFrame:
    """Events with a parsed ``x`` (date number) column, unknown kinds and undated rows dropped, by date."""
    columns = ["date", "kind", "version", "detail"]
    if events is None or events.empty or not {"date", "kind"} <= set(events.columns):
        return pd.DataFrame(columns=[*columns, "x"])
    frame = events.copy()
    for column in ("version", "detail"):
        if column not in frame.columns:
            frame[column] = None
    frame["kind"] = frame["kind"].astype(str).str.lower()
    dates = _to_datetimes(frame["date"])
    frame = frame.loc[dates.notna().to_numpy() & frame["kind"].isin(EVENT_KINDS).to_numpy()].copy()
    frame["x"] = _date_nums(dates[dates.notna()].loc[frame.index]) if len(frame) else np.array([], dtype=float)
    return frame.sort_values("x", kind="stable")


def _version_text(version: Any) -> str | None:
    """``"v3"`` for a version, ``None`` when missing."""
    if version is None or (isinstance(version, float) and math.isnan(version)) or str(version).strip() == "":
        return None
    text = str(version).strip()
    return text if text.lower().startswith("v") else f"v{text}"


def _annotate_promotions(ax: Any, promotions: pd.DataFrame, colour: str) -> None:
    """Label each promotion line ``v<version>`` at the top of ``ax``, staggering labels that would collide."""
    from matplotlib.transforms import blended_transform_factory

    trans = blended_transform_factory(ax.transData, ax.transAxes)
    lo, hi = ax.get_xlim()
    min_sep = 0.035 * max(hi - lo, 1.0)
    last_x, level = -np.inf, 0
    for x, version in zip(promotions["x"], promotions["version"], strict=True):
        text = _version_text(version)
        if text is None:
            continue
        level = (level + 1) % 3 if x - last_x < min_sep else 0
        last_x = x
        ax.text(x, 0.97 - 0.11 * level, text, transform=trans, ha="left", va="top", fontsize=8.5, color=colour,
                fontweight="bold", clip_on=False, zorder=6,
                bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})


def _draw_event_lines(ax: Any, events: pd.DataFrame, kinds: Sequence[str]) -> None:
    """Vertical lines for the events of ``kinds`` (styles in ``_EVENT_STYLE``)."""
    for kind in kinds:
        colour, style, width, _ = _EVENT_STYLE[kind]
        for x in events.loc[events["kind"] == kind, "x"]:
            ax.axvline(x, color=colour, linestyle=style, linewidth=width, alpha=0.85, zorder=1)


def _model_order(models: Sequence[str]) -> list[str]:
    """Loop first, frozen second, the rest alphabetically."""
    rank = {_LOOP: 0, _FROZEN: 1}
    return sorted(models, key=lambda m: (rank.get(m, 2), m))


def _model_style(model: str, index: int) -> dict[str, Any]:
    """Line style of one model's rolling series."""
    if model == _LOOP:
        return {"color": _LOOP_COLOUR, "linestyle": "-", "linewidth": 2.2, "zorder": 4}
    if model == _FROZEN:
        return {"color": _FROZEN_COLOUR, "linestyle": (0, (5, 2)), "linewidth": 1.8, "zorder": 3}
    return {"color": _OTHER_COLOURS[index % len(_OTHER_COLOURS)], "linestyle": "-", "linewidth": 1.5, "zorder": 3}


# ------------------------------------------------------------------------------------------------ decay chart
def _prepare_realised(realised: pd.DataFrame | None) -> pd.DataFrame:
    """Realised metrics with ``x`` date numbers and numeric values, one row per (model, metric, window, day)."""
    needed = {"partition_date", "model", "metric", "window", "value"}
    if realised is None or realised.empty or not needed <= set(realised.columns):
        return pd.DataFrame(columns=["model", "metric", "window", "x", "value"])
    dates = _to_datetimes(realised["partition_date"])
    frame = pd.DataFrame({
        "model": realised["model"].astype(str).to_numpy(),
        "metric": realised["metric"].astype(str).to_numpy(),
        "window": realised["window"].astype(str).str.lower().to_numpy(),
        "x": _date_nums(dates),
        "value": pd.to_numeric(realised["value"], errors="coerce").astype(float).to_numpy(),
    })
    frame = frame[np.isfinite(frame["x"])]
    frame.loc[~np.isfinite(frame["value"]), "value"] = np.nan
    return frame.groupby(["model", "metric", "window", "x"], as_index=False)["value"].mean().sort_values("x")


def render_decay_chart(realised: pd.DataFrame, events: pd.DataFrame, path: Path,
                       metrics: Sequence[str] = ("roc_auc", "precision", "recall", "f1")) -> Path:
    """Draw the model-decay picture: realised quality per metric over the replay, events marked.

    One subplot per metric (shared date axis): the ``rolling`` series as lines per model (the
    continuous-training ``loop`` highlighted, the never-retrained ``frozen`` model grey and dashed),
    the loop's daily ``partition`` values as faint points; retrain / promote / reject / rollback as
    vertical lines, promotions labelled ``v<version>``, alerts as red triangles along the bottom of
    the first subplot. Metrics without labelled partitions get an empty, captioned subplot.

    Args:
        realised: Columns ``partition_date``, ``model``, ``metric``, ``window``, ``value``.
        events: Columns ``date``, ``kind``, ``version``, ``detail`` (may be empty).
        path: PNG file to write.
        metrics: Metric names, one subplot each, top to bottom.

    Returns:
        ``path``.
    """
    from matplotlib.lines import Line2D
    from matplotlib.transforms import blended_transform_factory

    metrics = list(metrics) or ["roc_auc"]
    data = _prepare_realised(realised)
    evts = _prepare_events(events)
    fig = _new_figure(13, 1.3 + 2.35 * len(metrics))
    axes = fig.subplots(len(metrics), 1, sharex=True, squeeze=False)[:, 0]
    models = _model_order(list(data.loc[data["window"] == "rolling", "model"].unique()))
    has_dates = bool(len(data) and data["value"].notna().any()) or bool(len(evts))

    drawn_models: list[str] = []
    drawn_points = False
    for ax, metric in zip(axes, metrics, strict=True):
        rows = data[(data["metric"] == metric) & data["value"].notna()]
        ax.set_ylabel(_METRIC_LABELS.get(metric, metric), fontsize=11)
        ax.grid(True, axis="y", color="#e6e6e6", linewidth=0.8)
        ax.grid(True, axis="x", color="#f0f0f0", linewidth=0.6)
        ax.set_axisbelow(True)
        if rows.empty:
            _empty_axes(ax, f"{_METRIC_LABELS.get(metric, metric)}: no labelled partitions")
        daily = rows[(rows["window"] == "partition") & (rows["model"] == _LOOP)]
        if len(daily):
            ax.scatter(daily["x"], daily["value"], s=9, color=_LOOP_COLOUR, alpha=0.22, linewidths=0, zorder=2)
            drawn_points = True
        for index, model in enumerate(models):
            series = rows[(rows["window"] == "rolling") & (rows["model"] == model)]
            if series.empty:
                continue
            x, y = _with_gaps(series["x"].to_numpy(float), series["value"].to_numpy(float), _MAX_GAP_DAYS)
            ax.plot(x, y, **_model_style(model, index))
            if model not in drawn_models:
                drawn_models.append(model)
        if len(rows):
            # Zoom on the rolling lines and the bulk of the daily points (single days can be far off).
            rolling = rows.loc[rows["window"] == "rolling", "value"]
            spread = daily["value"].quantile([0.03, 0.97]) if len(daily) >= 20 else daily["value"]
            focus = pd.concat([rolling, spread]) if len(rolling) or len(spread) else rows["value"]
            lo, hi = float(focus.min()), float(focus.max())
            pad = max(0.06 * (hi - lo), 0.01)
            ax.set_ylim(lo - pad, hi + 2.5 * pad)

    if has_dates:
        xs = np.concatenate([data["x"].to_numpy(float), evts["x"].to_numpy(float)])
        xs = xs[np.isfinite(xs)]
        lo, hi = (xs.min(), xs.max()) if xs.size else (0.0, 1.0)
        axes[0].set_xlim(lo - 3, hi + 3)
        _format_month_axis(axes[-1])
    else:
        axes[-1].set_xticks([])

    line_kinds = [k for k in ("retrain", "reject", "rollback", "promote") if (evts["kind"] == k).any()]
    for ax in axes:
        _draw_event_lines(ax, evts, line_kinds)
    promotions = evts[evts["kind"] == "promote"]
    if len(promotions):
        _annotate_promotions(axes[0], promotions, _EVENT_STYLE["promote"][0])
    alerts = evts[evts["kind"] == "alert"]
    if len(alerts):
        trans = blended_transform_factory(axes[0].transData, axes[0].transAxes)
        axes[0].plot(alerts["x"], np.full(len(alerts), 0.035), linestyle="none", marker="^", markersize=6,
                     color=_ALERT_COLOUR, markeredgecolor="white", markeredgewidth=0.5, transform=trans,
                     clip_on=False, zorder=7)

    handles: list[Any] = []
    for index, model in enumerate(drawn_models):
        style = {k: v for k, v in _model_style(model, index).items() if k != "zorder"}
        handles.append(Line2D([], [], label=f"{_MODEL_LABELS.get(model, model)} (rolling)", **style))
    if drawn_points:
        handles.append(Line2D([], [], linestyle="none", marker="o", markersize=4, color=_LOOP_COLOUR, alpha=0.35,
                              label="loop: single day (partition)"))
    for kind in ("retrain", "promote", "reject", "rollback"):
        if kind in line_kinds:
            colour, style, width, label = _EVENT_STYLE[kind]
            handles.append(Line2D([], [], color=colour, linestyle=style, linewidth=width, label=label))
    if len(alerts):
        handles.append(Line2D([], [], linestyle="none", marker="^", markersize=6, color=_ALERT_COLOUR,
                              label="monitoring alert"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5), fontsize=9.5,
                   frameon=False)
    fig.suptitle("Model decay over the replay: realised quality of the production model", fontsize=14,
                 fontweight="bold")
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------ drift chart
def render_drift_chart(drift: pd.DataFrame, path: Path, features: Sequence[str] | None = None,
                       psi_warn: float = 0.1, psi_alert: float = 0.25,
                       events: pd.DataFrame | None = None) -> Path:
    """Draw the feature-drift chart: PSI per feature and day against warning and alert levels.

    Args:
        drift: Columns ``partition_date``, ``feature``, ``psi``.
        path: PNG file to write.
        features: Features to draw; default the 6 with the highest maximum PSI.
        psi_warn: PSI from which drift is worth watching (shaded band starts here).
        psi_alert: PSI from which drift is significant (red band starts here).
        events: Optional events (``date``, ``kind``, ``version``); promotions are marked because the
            drift reference changes when a new model is promoted.

    Returns:
        ``path``.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig = _new_figure(13, 5.6)
    ax = fig.subplots()
    ax.set_ylabel("population stability index (PSI)", fontsize=11)
    ax.grid(True, axis="y", color="#e6e6e6", linewidth=0.8)
    ax.set_axisbelow(True)

    frame = pd.DataFrame(columns=["feature", "x", "psi"])
    if drift is not None and not drift.empty and {"partition_date", "feature", "psi"} <= set(drift.columns):
        frame = pd.DataFrame({"feature": drift["feature"].astype(str).to_numpy(),
                              "x": _date_nums(_to_datetimes(drift["partition_date"])),
                              "psi": pd.to_numeric(drift["psi"], errors="coerce").astype(float).to_numpy()})
        frame = frame[np.isfinite(frame["x"]) & np.isfinite(frame["psi"])]
        frame = frame.groupby(["feature", "x"], as_index=False)["psi"].mean().sort_values("x")
    if features is None:
        chosen = list(frame.groupby("feature")["psi"].max().sort_values(ascending=False, kind="stable").index[:6])
    else:
        chosen = [str(f) for f in features]
    frame = frame[frame["feature"].isin(chosen)]
    evts = _prepare_events(events)
    promotions = evts[evts["kind"] == "promote"]

    handles: list[Any] = []
    if frame.empty:
        _empty_axes(ax, "no drift measurements")
        ax.set_ylim(0, 1)
    else:
        palette = _FEATURE_COLOURS
        present = [f for f in chosen if (frame["feature"] == f).any()]
        for index, feature in enumerate(present):
            series = frame[frame["feature"] == feature]
            x, y = _with_gaps(series["x"].to_numpy(float), series["psi"].to_numpy(float), _MAX_GAP_DAYS)
            handles.append(ax.plot(x, y, color=palette[index % len(palette)], linewidth=1.6, label=feature,
                                   zorder=3)[0])
        top = max(float(frame["psi"].max()) * 1.08, psi_alert * 1.5)
        ax.set_ylim(0, top)
        if top > 20 * psi_alert:  # one-day batches drift far beyond the alert line: keep the limits readable
            ax.set_yscale("symlog", linthresh=psi_alert)
            ax.set_ylim(0, top)
        ax.axhspan(psi_warn, psi_alert, color="#f2c14e", alpha=0.16, zorder=0, linewidth=0)
        ax.axhspan(psi_alert, top, color="#d62728", alpha=0.07, zorder=0, linewidth=0)
        ax.axhline(psi_warn, color="#c99a1a", linestyle="--", linewidth=1.1, zorder=2)
        ax.axhline(psi_alert, color="#d62728", linestyle="--", linewidth=1.1, zorder=2)
        handles += [Patch(facecolor="#f2c14e", alpha=0.4, edgecolor="#c99a1a", label=f"watch: PSI ≥ {psi_warn:g}"),
                    Patch(facecolor="#d62728", alpha=0.2, edgecolor="#d62728", label=f"drift: PSI ≥ {psi_alert:g}")]

    xs = np.concatenate([frame["x"].to_numpy(float), evts["x"].to_numpy(float)])
    if xs.size:
        ax.set_xlim(xs.min() - 3, xs.max() + 3)
        _format_month_axis(ax)
    else:
        ax.set_xticks([])
    if len(promotions):
        _draw_event_lines(ax, evts, ["promote"])
        _annotate_promotions(ax, promotions, _EVENT_STYLE["promote"][0])
        handles.append(Line2D([], [], color=_EVENT_STYLE["promote"][0], linewidth=1.6,
                              label="promotion (new reference)"))
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize=9.5, frameon=False)
    title = "Feature drift over the replay: PSI against the current model's training reference"
    ax.set_title(title, fontsize=13, fontweight="bold", loc="left")
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------ HTML report
_CSS = """
body{font-family:system-ui,-apple-system,sans-serif;margin:2em auto;color:#222;max-width:1320px;padding:0 1em}
h1{margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0}th,td{border:1px solid #ddd;padding:4px 10px;text-align:left;
vertical-align:top;font-size:14px}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.summary th{width:16em}img{max-width:100%;height:auto;border:1px solid #eee}
.kind{font-weight:600}.kind-alert{color:#b22222}.kind-retrain{color:#c46a10}.kind-promote{color:#1e7a1e}
.kind-reject{color:#c0392b}.kind-rollback{color:#7b4fa6}.empty{color:#777;font-style:italic}
"""


def _is_missing(value: Any) -> bool:
    """True for None and NaN/NaT scalars."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _text(value: Any) -> str:
    """A value as HTML-escaped display text (numbers rounded, missing as a dash)."""
    if isinstance(value, str):
        return escape(value)
    if _is_missing(value):
        return "&ndash;"
    if isinstance(value, bool | np.bool_):
        return escape(str(bool(value)))
    if isinstance(value, int | np.integer):
        return escape(f"{int(value):,}" if abs(int(value)) >= 10_000 else str(int(value)))
    if isinstance(value, float | np.floating):
        number = float(value)
        if math.isinf(number):
            return "&infin;" if number > 0 else "&minus;&infin;"
        if number.is_integer() and abs(number) >= 1000:
            return escape(f"{number:,.0f}")
        return escape(f"{number:.4f}")
    if isinstance(value, pd.Timestamp):
        return escape(value.strftime("%Y-%m-%d") if value == value.normalize() else value.isoformat())
    return escape(str(value))


def _is_number(value: Any) -> bool:
    """True for real numbers (not booleans)."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def _cell(value: Any, tag: str = "td") -> str:
    """One table cell, right-aligned when numeric."""
    css = " class='num'" if _is_number(value) and not _is_missing(value) else ""
    return f"<{tag}{css}>{_text(value)}</{tag}>"


def _image(png: Path, alt: str) -> str:
    """An ``<img>`` with the PNG embedded as a base64 data URI."""
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return f"<img alt='{escape(alt)}' src='data:image/png;base64,{data}'>"


def _key_value_table(items: Mapping[str, Any], css: str, head: tuple[str, str]) -> str:
    """A two-column table of a mapping."""
    if not items:
        return "<p class='empty'>nothing recorded</p>"
    rows = "".join(f"<tr><th>{escape(str(k))}</th>{_cell(v)}</tr>" for k, v in items.items())
    return (f"<table class='{css}'><thead><tr><th>{escape(head[0])}</th><th>{escape(head[1])}</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def _frame_table(frame: pd.DataFrame | None, index_name: str) -> str:
    """A DataFrame as a table; a meaningful (non-default) index becomes the first column."""
    if frame is None or frame.empty:
        return "<p class='empty'>nothing recorded</p>"
    show_index = not (isinstance(frame.index, pd.RangeIndex) and frame.index.name is None)
    head = "".join(f"<th>{escape(str(c))}</th>" for c in frame.columns)
    if show_index:
        head = f"<th>{escape(str(frame.index.name or index_name))}</th>" + head
    body = []
    for label, row in zip(frame.index, frame.itertuples(index=False, name=None), strict=True):
        cells = "".join(_cell(v) for v in row)
        body.append(f"<tr>{_cell(label, 'th') if show_index else ''}{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _events_table(events: pd.DataFrame | None) -> str:
    """The events in date order, kinds colour-coded."""
    if events is None or events.empty:
        return "<p class='empty'>no events</p>"
    frame = events.copy()
    if "date" in frame.columns:
        order = _to_datetimes(frame["date"]).to_numpy()
        frame = frame.iloc[np.argsort(order, kind="stable")]
    columns = list(frame.columns)
    head = "".join(f"<th>{escape(str(c))}</th>" for c in columns)
    body = []
    for row in frame.itertuples(index=False, name=None):
        cells = []
        for column, value in zip(columns, row, strict=True):
            if column == "kind" and isinstance(value, str):
                cells.append(f"<td class='kind kind-{escape(value.lower())}'>{escape(value)}</td>")
            elif column == "date" and not _is_missing(value):
                parsed = _to_datetimes([value]).iloc[0]
                cells.append(f"<td>{_text(parsed if not pd.isna(parsed) else value)}</td>")
            else:
                cells.append(_cell(value))
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_year_report(path: Path, *, title: str, decay_png: Path, drift_png: Path, summary: Mapping[str, Any],
                       comparison: pd.DataFrame, delivery: Mapping[str, Any] | None,
                       events: pd.DataFrame) -> Path:
    """Write the year-in-replay report as one self-contained HTML file (charts embedded as data URIs).

    Sections: summary (key -> value), model-decay chart, comparison of realised metrics per model
    (rendered as given, including any difference row the caller adds), feature-drift chart, delivery
    metrics (omitted text when ``None``) and the events table. Every text value is HTML-escaped.

    Args:
        path: HTML file to write (the only file written).
        title: Page title and heading.
        decay_png: PNG from :func:`render_decay_chart`.
        drift_png: PNG from :func:`render_drift_chart`.
        summary: Headline facts, e.g. replay window, days, retrainings, promotions.
        comparison: Rows = models, columns = realised metrics over the year.
        delivery: Delivery metric -> value text, or ``None`` when not measured.
        events: Columns ``date``, ``kind``, ``version``, ``detail``.

    Returns:
        ``path``.

    Raises:
        FileNotFoundError: A chart PNG does not exist.
    """
    counts = ""
    if events is not None and not events.empty and "kind" in events.columns:
        tally = events["kind"].astype(str).value_counts()
        counts = ", ".join(f"{escape(str(k))}: {int(n)}" for k, n in tally.items())
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        "<h2>Summary</h2>",
        _key_value_table(summary, "summary", ("item", "value")),
        "<h2>Model decay and recovery</h2>",
        "<p>Realised quality of the production model once labels arrived: rolling lines per model, the "
        "loop's single days as faint points, retraining and promotion events as vertical lines.</p>",
        _image(decay_png, "Realised metrics of the production model over the replay, with retrain and promotion "
                          "events"),
        "<h2>Continuous training versus the never-retrained model</h2>",
        _frame_table(comparison, "model"),
        "<h2>Feature drift</h2>",
        _image(drift_png, "Population stability index of the most drifting features over the replay"),
        "<h2>Delivery metrics</h2>",
        _key_value_table(delivery, "summary", ("metric", "value")) if delivery is not None
        else "<p class='empty'>delivery metrics not measured</p>",
        "<h2>Events</h2>",
        f"<p>{counts}</p>" if counts else "",
        _events_table(events),
        "</body></html>",
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
