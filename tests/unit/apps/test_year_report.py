"""The year-in-replay report: decay and drift charts on a synthetic year (real, non-blank PNGs of a
sensible size), empty inputs, and the self-contained, escaped HTML page."""

from __future__ import annotations

import base64
import datetime as dt
import re
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flightdeck.apps import year_report
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METRICS = ("roc_auc", "precision", "recall", "f1")
START = dt.date(2024, 1, 1)
PROMOTION_DAY = 200
NASTY = "<script>alert(1)</script>"


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk of a PNG file."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def _assert_real_png(path: Path) -> None:
    """The file is a PNG over 600 px wide and not a blank canvas."""
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    width, height = _png_size(path)
    assert width > 600 and height > 300
    with Image.open(path) as image:
        assert image.size == (width, height)
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 20


@pytest.fixture
def realised() -> pd.DataFrame:
    """A year of daily metrics: the loop decays, a retrain is promoted on day 200 and quality recovers;
    the frozen model keeps decaying. Some days have no labels (value None/NaN), dates mix types."""
    rng = np.random.default_rng(3)
    base = {"roc_auc": 0.78, "precision": 0.62, "recall": 0.55, "f1": 0.58}
    rows = []
    for day in range(366):
        date = START + dt.timedelta(days=day)
        key = date if day % 2 else date.isoformat()
        decay = 0.12 * min(day, 330) / 330
        loop_decay = decay if day < PROMOTION_DAY else 0.01 + 0.05 * (day - PROMOTION_DAY) / 330
        for metric, level in base.items():
            for model, drop in (("loop", loop_decay), ("frozen", decay)):
                daily = level - drop + rng.normal(0, 0.03)
                rolling = level - drop + rng.normal(0, 0.004)
                missing = day % 37 == 5
                rows.append({"partition_date": key, "model": model, "metric": metric, "window": "partition",
                             "value": None if missing else daily})
                rows.append({"partition_date": key, "model": model, "metric": metric, "window": "rolling",
                             "value": float("nan") if day < 6 else rolling})
    return pd.DataFrame(rows)


@pytest.fixture
def events() -> pd.DataFrame:
    """Events of every kind, including a detail string that must be escaped."""
    day = lambda n: START + dt.timedelta(days=n)  # noqa: E731
    return pd.DataFrame([
        {"date": day(0), "kind": "promote", "version": "1", "detail": "initial model"},
        {"date": day(90), "kind": "alert", "version": None, "detail": "recall below floor"},
        {"date": day(91), "kind": "retrain", "version": "2", "detail": "triggered by alert"},
        {"date": day(93), "kind": "reject", "version": "2", "detail": "worse than champion on slices"},
        {"date": day(150), "kind": "alert", "version": None, "detail": NASTY},
        {"date": day(151), "kind": "alert", "version": None, "detail": "drift on dep_hour"},
        {"date": day(152), "kind": "retrain", "version": "3", "detail": "triggered by drift"},
        {"date": day(155), "kind": "promote", "version": "3", "detail": "beats champion"},
        {"date": day(170), "kind": "rollback", "version": "1", "detail": "serving errors on v3"},
        {"date": (day(198)).isoformat(), "kind": "retrain", "version": "4", "detail": "scheduled"},
        {"date": day(PROMOTION_DAY), "kind": "promote", "version": "4", "detail": "restores quality"},
        {"date": day(300), "kind": "alert", "version": None, "detail": "precision dip"},
    ])


@pytest.fixture
def drift() -> pd.DataFrame:
    """Daily PSI of 8 features; two drift well past the alert level, the reference resets on promotion."""
    rng = np.random.default_rng(5)
    features = ["dep_hour", "distance", "carrier", "origin", "dest", "month", "day_of_week", "taxi_out"]
    slopes = [0.0025, 0.0012, 0.0006, 0.0004, 0.0003, 0.0002, 0.0001, 0.00005]
    rows = []
    for day in range(366):
        since = day if day < PROMOTION_DAY else day - PROMOTION_DAY
        for feature, slope in zip(features, slopes, strict=True):
            rows.append({"partition_date": START + dt.timedelta(days=day), "feature": feature,
                         "psi": max(0.0, slope * since + rng.normal(0, 0.008))})
    return pd.DataFrame(rows)


@pytest.fixture
def comparison() -> pd.DataFrame:
    """Realised metrics over the year per model plus the caller's difference row."""
    frame = pd.DataFrame({"roc_auc": [0.7412, 0.6987], "precision": [0.5731, 0.5212], "recall": [0.5123, 0.4655],
                          "f1": [0.5409, 0.4918]}, index=pd.Index(["loop champions", "frozen"], name="model"))
    frame.loc["difference"] = frame.loc["loop champions"] - frame.loc["frozen"]
    return frame


# ------------------------------------------------------------------------------------------------ charts
def test_decay_chart_is_a_real_png(tmp_path: Path, realised: pd.DataFrame, events: pd.DataFrame) -> None:
    out = year_report.render_decay_chart(realised, events, tmp_path / "charts" / "decay.png")
    assert out == tmp_path / "charts" / "decay.png"
    _assert_real_png(out)


def test_decay_chart_handles_missing_metrics_and_models(tmp_path: Path, realised: pd.DataFrame,
                                                        events: pd.DataFrame) -> None:
    only_loop = realised[(realised["model"] == "loop") & (realised["metric"] != "f1")]
    out = year_report.render_decay_chart(only_loop, events, tmp_path / "decay.png",
                                         metrics=("roc_auc", "f1", "pr_auc"))
    _assert_real_png(out)


def test_drift_chart_is_a_real_png(tmp_path: Path, drift: pd.DataFrame, events: pd.DataFrame) -> None:
    out = year_report.render_drift_chart(drift, tmp_path / "drift.png", events=events)
    _assert_real_png(out)
    chosen = year_report.render_drift_chart(drift, tmp_path / "drift2.png", features=["month", "carrier"],
                                            psi_warn=0.05, psi_alert=0.2)
    _assert_real_png(chosen)


def test_empty_inputs_render(tmp_path: Path) -> None:
    empty_realised = pd.DataFrame(columns=["partition_date", "model", "metric", "window", "value"])
    empty_events = pd.DataFrame(columns=["date", "kind", "version", "detail"])
    for realised in (empty_realised, pd.DataFrame()):
        for events in (empty_events, pd.DataFrame()):
            out = year_report.render_decay_chart(realised, events, tmp_path / "decay.png")
            assert out.read_bytes()[:8] == PNG_SIGNATURE
            assert _png_size(out)[0] > 600
    all_missing = pd.DataFrame({"partition_date": ["2024-01-01", "2024-01-02"], "model": "loop",
                                "metric": "roc_auc", "window": "rolling", "value": [None, None]})
    assert year_report.render_decay_chart(all_missing, empty_events, tmp_path / "d2.png").is_file()
    for drift in (pd.DataFrame(columns=["partition_date", "feature", "psi"]), pd.DataFrame()):
        out = year_report.render_drift_chart(drift, tmp_path / "drift.png", events=empty_events)
        assert out.read_bytes()[:8] == PNG_SIGNATURE
    html = year_report.render_year_report(
        tmp_path / "report.html", title="empty", decay_png=tmp_path / "decay.png", drift_png=tmp_path / "drift.png",
        summary={}, comparison=pd.DataFrame(), delivery=None, events=empty_events)
    assert "no events" in html.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------------ HTML report
def test_html_report_is_self_contained_and_escaped(tmp_path: Path, realised: pd.DataFrame, events: pd.DataFrame,
                                                   drift: pd.DataFrame, comparison: pd.DataFrame) -> None:
    decay = year_report.render_decay_chart(realised, events, tmp_path / "decay.png")
    drift_png = year_report.render_drift_chart(drift, tmp_path / "drift.png", events=events)
    before = set(tmp_path.iterdir())
    summary = {"replay window": "2024-01-01 .. 2024-12-31", "days": 366, "retrainings": 3, "promotions": 3,
               "note <b>": "a & b"}
    delivery = {"lead time for changes": "2.5 days", "deployment frequency": "every 61 days"}
    out = year_report.render_year_report(
        tmp_path / "report.html", title="Year in replay <2024>", decay_png=decay, drift_png=drift_png,
        summary=summary, comparison=comparison, delivery=delivery, events=events)
    assert set(tmp_path.iterdir()) - before == {out}
    html = out.read_text(encoding="utf-8")

    # Both charts embedded byte for byte; nothing external referenced.
    uris = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert [base64.b64decode(u) for u in uris] == [decay.read_bytes(), drift_png.read_bytes()]
    assert "http://" not in html and "https://" not in html

    for version in ("1", "2", "3", "4"):
        assert f"<td>{version}</td>" in html
    for kind in year_report.EVENT_KINDS:
        assert f">{kind}</td>" in html
    for value in ("0.7412", "0.6987", "0.0425", "0.0519", "loop champions", "difference"):
        assert value in html
    for text in ("2.5 days", "every 61 days", "2024-01-01 .. 2024-12-31", "366", "2024-07-19"):
        assert text in html

    assert NASTY not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Year in replay &lt;2024&gt;" in html and "<2024>" not in html
    assert "note &lt;b&gt;" in html and "a &amp; b" in html


def test_html_report_without_delivery_metrics(tmp_path: Path, realised: pd.DataFrame, events: pd.DataFrame,
                                              drift: pd.DataFrame, comparison: pd.DataFrame) -> None:
    decay = year_report.render_decay_chart(realised, events, tmp_path / "decay.png")
    drift_png = year_report.render_drift_chart(drift, tmp_path / "drift.png")
    html = year_report.render_year_report(
        tmp_path / "r.html", title="t", decay_png=decay, drift_png=drift_png, summary={"days": 1},
        comparison=comparison.reset_index(), delivery=None, events=events).read_text(encoding="utf-8")
    assert "delivery metrics not measured" in html
    assert "loop champions" in html and "0.7412" in html
