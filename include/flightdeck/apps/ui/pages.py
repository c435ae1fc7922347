"""The pages: Jinja2 templates rendered with autoescaping, so every value from the data is text.

One ``render_*`` per page takes a view model from :mod:`flightdeck.apps.ui.views` and returns
HTML. ``base`` is the URL prefix the app is mounted at (``/flightdeck`` in Airflow).
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from flightdeck.apps.ui import charts
from flightdeck.apps.ui.views import DataView, ModelsView, MonitoringView, PredictionsView
from flightdeck.gates.rubric import SECTIONS

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:g}"
    return str(value)


def _dt(value: Any) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    return f"{value:%Y-%m-%d %H:%M}"


def _duration(value: Any) -> str:
    """A delivery-metrics duration (``{"seconds": ..., "text": ...}``) as its text."""
    if isinstance(value, dict):
        return str(value.get("text") or f"{value.get('seconds', 0):.0f} s")
    return "n/a" if value is None else str(value)


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.1%}"


def _json_text(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True, default=str)


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The template environment: autoescape on for every template (also ``.svg``, ``.txt``)."""
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(default=True,
                      default_for_string=True), trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=_num, dt=_dt, duration=_duration, pct=_pct, tojson_text=_json_text)
    return env


def render(template: str, **context: Any) -> str:
    context.setdefault("spec", None)
    context.setdefault("specs", [])
    context.setdefault("base", "")
    return environment().get_template(template).render(**context)


def render_index(summaries: list[dict[str, Any]], specs: list[str], base: str = "") -> str:
    """The landing page: per spec its champion, challenger, the champion's score, the newest partition."""
    return render("index.html", title="Specs", page="index", specs=specs, base=base, summaries=summaries)


def render_error(title: str, message: str, specs: list[str], base: str = "", spec: str | None = None) -> str:
    return render("error.html", title=title, message=message, page="error", specs=specs, base=base, spec=spec)


def render_models(view: ModelsView, specs: list[str], base: str = "") -> str:
    return render("models.html", title="Models", page="models", spec=view.spec, specs=specs, base=base, v=view,
                  sections=SECTIONS)


def render_data(view: DataView, specs: list[str], base: str = "") -> str:
    return render("data.html", title="Data", page="data", spec=view.spec, specs=specs, base=base, v=view)


def render_predictions(view: PredictionsView, specs: list[str], base: str = "") -> str:
    return render("predictions.html", title="Predictions", page="predictions", spec=view.spec, specs=specs,
                  base=base, v=view)


def render_monitoring(view: MonitoringView, specs: list[str], base: str = "") -> str:
    return render("monitoring.html", title="Monitoring", page="monitoring", spec=view.spec, specs=specs, base=base,
                  v=view, decay_chart=charts.decay_chart(view.decay, view.events, view.metric, view.reference),
                  drift_chart=charts.drift_chart(view.drift, view.psi_warn, view.psi_alert))
