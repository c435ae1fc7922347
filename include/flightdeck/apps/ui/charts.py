"""Server-drawn SVG charts: no JavaScript, nothing loaded from anywhere else.

Every text that reaches the SVG goes through :func:`markupsafe.escape`; the charts are
returned as :class:`markupsafe.Markup`, so templates embed them as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date

from markupsafe import Markup, escape

from flightdeck.apps.ui.views import Event

WIDTH, HEIGHT = 900, 300
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 24, 40
EVENT_COLOURS = {"alert": "#c62828", "retrain": "#ef6c00", "promote": "#2e7d32", "rollback": "#6a1b9a"}


def _day(text: str) -> int:
    return date.fromisoformat(text).toordinal()


def _scale(lo: float, hi: float, out_lo: float, out_hi: float):  # type: ignore[no-untyped-def]
    span = (hi - lo) or 1.0
    return lambda v: out_lo + (v - lo) / span * (out_hi - out_lo)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    step = (hi - lo) / (n - 1) if hi > lo else 1.0
    return [lo + i * step for i in range(n)]


def decay_chart(series: Mapping[str, Sequence[tuple[str, float]]], events: Sequence[Event], metric: str,
                threshold: float | None = None) -> Markup:
    """Realised ``metric`` per partition (points) and over the rolling window (line), events as marks.

    Args:
        series: window (``partition``, ``rolling``) -> [(YYYY-MM-DD, value)].
        events: alerts, retraining requests, promotions and rollbacks at their data dates.
        threshold: the rolling alert limit, drawn as a dashed line.
    """
    points = [(d, v) for values in series.values() for d, v in values]
    if not points:
        return Markup('<p class="empty" id="decay-chart-empty">No realised quality yet: the labels of the '
                      'scored partitions have not arrived.</p>')
    days = [_day(d) for d, _ in points] + [_day(e.date) for e in events]
    values = [v for _, v in points] + ([threshold] if threshold is not None else [])
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.1 or 0.05
    x = _scale(min(days) - 0.5, max(days) + 0.5, LEFT, WIDTH - RIGHT)
    y = _scale(lo - pad, hi + pad, HEIGHT - BOTTOM, TOP)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="decay-chart" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}"'
             f' role="img" aria-label="realised {escape(metric)} over time">',
             f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{HEIGHT - TOP - BOTTOM}" '
             'fill="#fafafa" stroke="#ccc"/>']
    for tick in _ticks(lo - pad, hi + pad):
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#eee"/>'
                     f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" font-size="11">{tick:.3f}</text>')
    first, last = min(days), max(days)
    ticks = _ticks(first, last, 6 if last > first else 1)
    for i, tick in enumerate(ticks):
        label = date.fromordinal(round(tick)).isoformat()
        anchor = "end" if i == len(ticks) - 1 and len(ticks) > 1 else "middle"
        parts.append(f'<text x="{x(tick):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="{anchor}" font-size="11">'
                     f'{label}</text>')
    for e in events:
        colour = EVENT_COLOURS.get(e.kind, "#555")
        ex = x(_day(e.date))
        if e.kind == "alert":
            parts.append(f'<path d="M{ex - 5:.1f},{HEIGHT - BOTTOM - 2} l5,-9 l5,9 z" fill="{colour}" '
                         f'class="event event-alert"><title>{escape(e.date)}: {escape(e.label)}</title></path>')
        else:
            parts.append(f'<line x1="{ex:.1f}" x2="{ex:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="{colour}" '
                         f'stroke-width="1.5" stroke-dasharray="{"4 3" if e.kind == "retrain" else "none"}" '
                         f'class="event event-{escape(e.kind)}"><title>{escape(e.date)}: {escape(e.label)}</title>'
                         f'</line><text x="{ex + 3:.1f}" y="{TOP + (26 if e.kind == "retrain" else 12)}" '
                         f'font-size="10" fill="{colour}">'
                         f'{escape(e.label)}</text>')
    if threshold is not None:
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" '
                     f'stroke="#c62828" stroke-dasharray="6 4"><title>alert limit {threshold:.4g}</title></line>')
    for d, v in series.get("partition", ()):
        parts.append(f'<circle cx="{x(_day(d)):.1f}" cy="{y(v):.1f}" r="2.5" fill="#90a4ae">'
                     f'<title>{escape(d)}: {v:.4f} (partition)</title></circle>')
    rolling = series.get("rolling", ())
    if rolling:
        path = " ".join(f"{'M' if i == 0 else 'L'}{x(_day(d)):.1f},{y(v):.1f}" for i, (d, v) in enumerate(rolling))
        parts.append(f'<path d="{path}" fill="none" stroke="#1565c0" stroke-width="2" class="rolling"/>')
    parts.append(f'<text x="{LEFT}" y="{TOP - 8}" font-size="12">realised {escape(metric)}: rolling window (line), '
                 'single partitions (points), alert limit (dashed red)</text></svg>')
    return Markup("".join(parts))


def drift_chart(rows: Sequence[dict[str, object]], warn: float, alert: float) -> Markup:
    """Horizontal bars: PSI per feature, coloured by status, with the warn and alert limits."""
    if not rows:
        return Markup('<p class="empty">No drift figures yet.</p>')
    bar, gap = 16, 6
    height = TOP + len(rows) * (bar + gap) + 24
    label_w = 170
    top = max([float(r["value"] or 0) for r in rows] + [alert * 1.2])  # type: ignore[arg-type]
    x = _scale(0, top, label_w, WIDTH - RIGHT - 50)
    colours = {"alert": "#c62828", "warn": "#ef6c00", "ok": "#2e7d32"}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="drift-chart" class="chart" viewBox="0 0 {WIDTH} {height}"'
             ' role="img" aria-label="PSI per feature">']
    for i, r in enumerate(rows):
        value = float(r["value"] or 0)  # type: ignore[arg-type]
        y0 = TOP + i * (bar + gap)
        colour = colours.get(str(r["status"]), "#90a4ae")
        parts.append(f'<text x="{label_w - 6}" y="{y0 + 12}" text-anchor="end" font-size="11">'
                     f'{escape(str(r["subject"]))}</text>'
                     f'<rect x="{label_w}" y="{y0}" width="{max(x(value) - label_w, 1):.1f}" height="{bar}" '
                     f'fill="{colour}"><title>{escape(str(r["subject"]))}: PSI {value:.4f} '
                     f'({escape(str(r["status"]))})</title></rect>'
                     f'<text x="{x(value) + 4:.1f}" y="{y0 + 12}" font-size="11">{value:.3f}</text>')
    for limit, colour, name, label_y in ((warn, "#ef6c00", "warn", TOP - 8), (alert, "#c62828", "alert", height - 6)):
        parts.append(f'<line x1="{x(limit):.1f}" x2="{x(limit):.1f}" y1="{TOP - 4}" y2="{height - 20}" '
                     f'stroke="{colour}" stroke-dasharray="5 3"/><text x="{x(limit) + 2:.1f}" y="{label_y}" '
                     f'font-size="10" fill="{colour}">{name} {limit:g}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
