"""The FlightDeck views against a real SQLite warehouse, MLflow registry and lake, filled by the library's writers.

Also the escaping promise: a delivery whose file name, quarantined values and reasons carry
``<script>`` and ``'); DROP TABLE fd_catalog; --`` renders them as text, and the table is
still there afterwards.
"""

from __future__ import annotations

import html
import re
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from flightdeck.apps.ui import charts, pages, sample, views
from flightdeck.core import warehouse
from flightdeck.core.settings import Settings
from flightdeck.core.spec import load_spec
from markupsafe import escape

REPO = Path(__file__).resolve().parents[3]
HOSTILE = "<script>alert(1)</script>'); DROP TABLE fd_catalog; --"
SPECS = ["flights", "weather"]


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, sample.History]:
    """Ninety days of the flights spec's life, with a hostile delivery on the first day."""
    home = tmp_path_factory.mktemp("ui")
    settings = Settings.from_env({"FLIGHTDECK_HOME": str(home)})
    spec = load_spec(settings.specs_dir / "flights.yaml")
    return settings, sample.fill_history(settings, spec, date(2013, 1, 1), 90, rows_per_day=200, text=HOSTILE)


@pytest.fixture
def empty(tmp_path: Path) -> Settings:
    return Settings.from_env({"FLIGHTDECK_HOME": str(tmp_path / "fd")})


def test_the_models_view_shows_versions_aliases_the_score_card_gates_and_history(filled):
    settings, history = filled
    view = views.models_view(settings, "flights")
    assert view.aliases == {"champion": history.champion, "challenger": history.champion,
                            "previous_champion": history.versions[-2]}
    assert [v.version for v in view.versions] == list(reversed(history.versions))
    assert view.versions[0].aliases == ["champion", "challenger"]
    assert view.versions[0].mlflow_url and view.versions[0].run_id in view.versions[0].mlflow_url
    assert view.card is not None and view.card_error is None
    assert len(view.card["tests"]) == 28 and set(view.card["sections"]) == {"data", "model", "infra", "monitor"}
    assert view.card["final"] == min(view.card["sections"].values())
    assert {g.gate for g in view.gates} == {"min_roc_auc", "max_log_loss", "no_regression", "leakage"}
    assert [h["action"] for h in view.history] == ["promote"] * len(history.versions)
    assert view.report_version == history.champion
    html_text = pages.render_models(view, SPECS, "/flightdeck")
    assert f'id="alias-champion">v{history.champion}<' in html_text
    assert f'id="ml-test-score">{pages._num(view.card["final"])}<' in html_text
    assert view.card["band"] in html.unescape(html_text)
    assert html_text.count('<tr id="test-') == 28


def test_the_data_view_shows_the_catalog_quarantine_samples_and_dataset_versions(filled):
    settings, _ = filled
    view = views.data_view(settings, "flights")
    spec = load_spec(settings.specs_dir / "flights.yaml")
    assert view.batch_total == 90 * len(spec.sources) and view.status_counts == {"curated": view.batch_total}
    assert sum(q["rows"] for q in view.quarantine) > 0
    assert set(view.samples) == {q["reason"] for q in view.quarantine}
    assert all(0 < len(rows) <= 5 for rows in view.samples.values())
    assert len(view.dataset_versions) >= 12
    batch = view.batches[0]
    key = views.batch_report_key(settings, "flights", batch["batch_id"], "profile")
    assert key and views.read_lake(settings, key).startswith(b"<html>")
    assert views.batch_report_key(settings, "flights", batch["batch_id"], "../../etc/passwd") is None
    assert views.lake_key(settings, "/etc/passwd") is None
    assert views.lake_key(settings, f"{settings.lake_uri}/../secrets/x") is None


def test_the_predictions_view_looks_up_a_key_and_shows_the_riskiest_rows_and_runs(filled):
    settings, history = filled
    key = {k: str(v) for k, v in history.key.items()}
    view = views.predictions_view(settings, "flights", key)
    assert view.lookup_error is None and view.found and len(view.found) == 1
    assert view.found[0]["model_version"] == history.champion
    assert view.partition == history.last_day.isoformat()
    scores = [r["score"] for r in view.riskiest]
    assert len(scores) == 20 and scores == sorted(scores, reverse=True)
    assert {r["status"] for r in view.runs} == {"published"} and len(view.runs) == 90
    page = pages.render_predictions(view, SPECS)
    assert 'id="lookup-result"' in page and f"v{history.champion}" in page


@pytest.mark.parametrize(("key", "partition", "error"), [
    ({"nope": "1"}, None, "unknown key column"),
    ({"flight": "not-a-number"}, None, "is int"),
    ({}, "2013-13-45", "YYYY-MM-DD"),
])
def test_a_bad_lookup_is_reported_on_the_page_not_raised(filled, key, partition, error):
    settings, _ = filled
    view = views.predictions_view(settings, "flights", key, partition)
    assert error in (view.lookup_error or "")
    assert error in html.unescape(pages.render_predictions(view, SPECS))


def test_the_monitoring_view_has_decay_with_its_events_drift_alerts_retraining_and_delivery_metrics(filled):
    settings, history = filled
    view = views.monitoring_view(settings, "flights")
    assert len(view.decay["partition"]) == 90 and len(view.decay["rolling"]) == 90
    kinds = {e.kind for e in view.events}
    assert {"promote", "alert", "retrain"} <= kinds
    assert [e.label for e in view.events if e.kind == "promote"] == [f"promote v{v}" for v in history.versions]
    assert view.drift_partition == history.last_day.isoformat()
    assert len(view.drift) == len(load_spec(settings.specs_dir / "flights.yaml").features)
    assert view.alerts and view.retraining
    assert view.delivery is not None and view.delivery["promotions"] == len(history.versions)
    page = pages.render_monitoring(view, SPECS)
    assert 'id="decay-chart"' in page and 'class="rolling"' in page and 'id="drift-chart"' in page
    assert page.count("event-promote") == len(history.versions)


def test_pages_of_a_fresh_home_say_what_is_missing(empty):
    settings = empty
    models = views.models_view(settings, "flights")
    assert models.versions == [] and models.card is None and set(models.aliases.values()) == {None}
    assert "No registered version yet" in pages.render_models(models, SPECS)
    assert views.summaries(settings)[0]["aliases"] == {"champion": None, "challenger": None,
                                                       "previous_champion": None}
    assert "No batch delivered yet" in pages.render_data(views.data_view(settings, "flights"), SPECS)
    assert "No scoring run yet" in pages.render_predictions(views.predictions_view(settings, "flights"), SPECS)
    monitoring = pages.render_monitoring(views.monitoring_view(settings, "flights"), SPECS)
    assert "No realised quality yet" in monitoring and "No drift figures yet" in monitoring
    with pytest.raises(views.UnknownSpec):
        views.data_view(settings, "../flights")


def test_delivered_markup_and_sql_render_as_text_and_the_tables_survive(filled):
    settings, _ = filled
    rendered = {
        "models": pages.render_models(views.models_view(settings, "flights"), SPECS),
        "data": pages.render_data(views.data_view(settings, "flights"), SPECS),
        "predictions": pages.render_predictions(views.predictions_view(settings, "flights", {"carrier": HOSTILE}),
                                                SPECS),
    }
    for name, page in rendered.items():
        assert "<script>" not in page, name
        assert re.search(r"<(?!/?(!doctype|html|head|meta|title|style|body|header|span|a|nav|main|h1|h2|h3|p|div|"
                         r"table|tr|th|td|code|pre|details|summary|form|label|input|button|select|option|i|b|svg|"
                         r"br)\b)", page) is None, name
    assert str(escape(HOSTILE)) in rendered["data"]          # the file name and the quarantined value
    assert str(escape(HOSTILE)) in rendered["models"]        # the promotion's reasons
    engine = warehouse.connect(settings.warehouse_url)
    assert "fd_catalog" in sa.inspect(engine).get_table_names()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM fd_catalog")).scalar_one() > 0


def test_chart_text_is_escaped():
    svg = str(charts.decay_chart({"partition": [("2013-01-01", 0.7)], "rolling": []},
                                 [views.Event("2013-01-01", "promote", HOSTILE)], "roc_auc", 0.6))
    assert "<script>" not in svg and str(escape(HOSTILE)) in svg
    bars = str(charts.drift_chart([{"subject": HOSTILE, "value": 0.3, "status": "alert"}], 0.1, 0.25))
    assert "<script>" not in bars and str(escape(HOSTILE)) in bars
