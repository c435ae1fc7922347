"""The gate report as one self-contained HTML page (no external assets): the 28 tests with
score, outcome, evidence and band, then the gate decisions with their figures."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from flightdeck.gates.rubric import SECTIONS

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;width:100%;margin:1em 0}th,td{border:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:top;font-size:14px}th{background:#f4f4f4}
.pass{color:#116611;font-weight:600}.fail,.error{color:#aa1111;font-weight:600}.not_run{color:#777}
.decision{font-size:1.4em;padding:.5em 1em;display:inline-block;border-radius:4px}
.promote{background:#e3f5e3}.reject{background:#fbe3e3}code{font-size:12px;word-break:break-all}
details{font-size:12px}
"""


def _cell(value: Any) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))


def render_html(report: dict[str, Any]) -> str:
    """Render the report dict that :func:`flightdeck.gates.promotion.judge_version` writes as JSON."""
    verdict, card = report["verdict"], report["score_card"]
    model = escape(verdict["registered_model"])
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Gate report: {model}"
             f" v{escape(verdict['version'])}</title><style>{_CSS}</style></head><body>",
             f"<h1>{escape(verdict['registered_model'])} version {escape(verdict['version'])}</h1>",
             f"<p class='decision {escape(verdict['decision'])}'>Decision: <b>{escape(verdict['decision'].upper())}</b>"
             f"</p><p>Gate run <code>{escape(verdict['run_id'])}</code> of <code>{escape(verdict['dag_id'])}</code>; "
             f"champion compared with: {_cell(verdict['champion'])}.</p>"]
    if verdict["reasons"]:
        parts.append("<ul>" + "".join(f"<li>{escape(r)}</li>" for r in verdict["reasons"]) + "</ul>")
    parts.append(f"<h2>ML Test Score: {card['final']:g}</h2><p><i>{escape(card['band'])}</i></p>"
                 "<p>Breck et al. 2017: 0 absent, 0.5 manual with results documented, 1 automated and repeated; "
                 "the final score is the minimum of the four section sums.</p><table><tr>"
                 + "".join(f"<th>{SECTIONS[s]}</th>" for s in card["sections"]) + "</tr><tr>"
                 + "".join(f"<td>{v:g}</td>" for v in card["sections"].values()) + "</tr></table>")
    parts.append("<table><tr><th>test</th><th>name</th><th>score</th><th>outcome</th><th>mode</th>"
                 "<th>evidence</th><th>note</th><th>figures</th></tr>")
    for t in card["tests"]:
        evidence = (f"{_cell(t['run_type'])}<br><code>{_cell(t['run_id'])}</code><br>checked {_cell(t['checked_at'])}"
                    f"<br>valid until {_cell(t['valid_until'])}" if t["run_id"] else "&ndash;")
        if t.get("artifact_uri"):
            evidence += f"<br><code>{escape(t['artifact_uri'])}</code>"
        figures = json.dumps({"metrics": t["metrics"], "threshold": t["threshold"]}, indent=1, default=str)
        parts.append(f"<tr><td>{escape(t['id'])}</td><td>{escape(t['name'])}</td><td>{t['score']:g}</td>"
                     f"<td class='{escape(t['outcome'])}'>{escape(t['outcome'])}</td><td>{escape(t['mode'])}</td>"
                     f"<td>{evidence}</td><td>{escape(t['note'])}</td>"
                     f"<td><details><summary>show</summary><pre>{escape(figures)}</pre></details></td></tr>")
    parts.append("</table><h2>Promotion gates</h2><table><tr><th>gate</th><th>hard</th><th>result</th>"
                 "<th>value</th><th>threshold</th><th>detail</th><th>figures</th></tr>")
    for g in report["gates"]:
        result = "pass" if g["passed"] else "fail"
        figures = json.dumps(g["figures"], indent=1, default=str)
        parts.append(f"<tr><td>{escape(g['gate'])}</td><td>{'yes' if g['hard'] else 'no'}</td>"
                     f"<td class='{result}'>{result}</td><td>{_cell(g['value'])}</td><td>{_cell(g['threshold'])}</td>"
                     f"<td>{escape(g['detail'])}</td><td><details><summary>show</summary><pre>{escape(figures)}"
                     "</pre></details></td></tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)
