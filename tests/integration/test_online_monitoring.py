"""Monitoring of online serving through the request log: a real uvicorn server, registry, warehouse and lake.

The precompute path publishes a partition; the same rows are then scored online. For the
same input and model version the two scores must agree to 1e-9 (``online_skew``); a row sent
with another input is counted, not judged; a tampered published score is caught and named.
"""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from test_service import DAY, _ctx, _curated_rows, serving
from test_service import home as home  # noqa: F401 - the fixture, used by name

pytestmark = pytest.mark.slow


def _figures(figures, check: str) -> dict[tuple[str, str], object]:
    return {(f.metric, f.subject): f for f in figures if f.check == check}


def _send_partition_online(ctx) -> tuple[list[dict], dict]:
    """Every row of the partition online in batches of 100, one row with another input, one bad request."""
    rows = _curated_rows(ctx, DAY)
    changed = {**rows[0], "distance": rows[0]["distance"] + 10}
    with serving() as (url, _app), httpx.Client(base_url=url, timeout=120) as http:
        for start in range(0, len(rows), 100):
            assert http.post("/predict", json=rows[start:start + 100]).status_code == 200
        assert http.post("/predict", json=changed, headers={"X-Request-ID": "changed-1"}).status_code == 200
        assert http.post("/predict", json={"carrier": "UA"}, headers={"X-Request-ID": "bad-1"}).status_code == 422
    return rows, changed


def test_online_scores_agree_with_precomputed_ones_and_a_tampered_score_is_caught(home):
    from flightdeck.core import warehouse
    from flightdeck.monitoring.online import check_online
    from flightdeck.serving import predictions, scoring

    ctx = _ctx()
    model = scoring.load_model(ctx)
    manifest = scoring.score_partition(ctx, DAY, model=model)
    rows, changed = _send_partition_online(ctx)
    assert len(rows) == manifest["rows"] >= ctx.spec.monitoring.drift.min_rows
    at = warehouse.now() + timedelta(seconds=1)

    figures = check_online(ctx, model, at)
    skew = _figures(figures, "online_skew")[("max_abs_diff", "")]
    assert skew.status == "ok" and skew.threshold == 1e-9
    assert skew.value <= 1e-9, f"online and precomputed scores differ by {skew.value}"
    assert skew.detail["same_input_pairs"] == len(rows) == skew.rows
    assert skew.detail["input_differs_pairs"] == 1, "the row sent with another distance is counted, not judged"
    assert skew.detail["not_precomputed_rows"] == 0 and skew.detail["online_rows"] == len(rows) + 1

    traffic = _figures(figures, "online")
    requests = -(-len(rows) // 100) + 2
    assert traffic[("requests", "")].value == requests and traffic[("requests", "")].rows == len(rows) + 1
    invalid = traffic[("invalid_share", "")]
    assert invalid.value == pytest.approx(1 / requests) and invalid.detail["invalid_requests"] == 1
    assert traffic[("latency_p99_ms", "")].value >= traffic[("latency_p50_ms", "")].value > 0

    drift = _figures(figures, "online_drift")
    assert drift[("score_psi", "")].rows == len(rows) + 1 and drift[("score_psi", "")].status != "error"
    judged = {s for (m, s), f in drift.items() if m == "psi"}
    assert judged == set(ctx.spec.monitoring.drift.features), "every monitored feature is measured online"
    assert drift[("features_in_alert", "")].status in ("ok", "warn", "alert")

    # a published score off by 1e-6 for one flight: the skew check alerts and names it
    key = {k: rows[5][k] for k in ctx.spec.entity_key}
    pt = predictions.ensure_tables(ctx.engine, ctx.spec)
    with ctx.engine.begin() as conn:
        conn.execute(pt.table.update().where(*(pt.table.c[k] == v for k, v in key.items()))
                     .values(score=pt.table.c.score + 1e-6))
    tampered = _figures(check_online(ctx, model, at), "online_skew")[("max_abs_diff", "")]
    assert tampered.status == "alert" and tampered.value == pytest.approx(1e-6, rel=1e-3)
    assert tampered.detail["disagreeing_pairs"] == 1
    worst = tampered.detail["worst"][0]
    assert worst["key"] == {k: str(v) for k, v in key.items()}
    assert worst["partition"] == DAY


def test_the_online_window_ends_before_the_run_and_starts_exactly_a_window_earlier(home):
    from flightdeck.core import warehouse
    from flightdeck.monitoring.online import check_online
    from flightdeck.serving import scoring

    ctx = _ctx()
    model = scoring.load_model(ctx)
    scoring.score_partition(ctx, DAY, model=model)
    _send_partition_online(ctx)
    logged = warehouse.queries.serving_requests_of(ctx.engine, "flights", limit=100_000)
    first = min(r["received_at"] for r in logged)
    last = max(r["received_at"] for r in logged)
    if first.tzinfo is None:  # SQLite gives naive UTC back
        from datetime import UTC

        first, last = first.replace(tzinfo=UTC), last.replace(tzinfo=UTC)
    window = timedelta(days=7)
    assert ctx.spec.monitoring.online_window == "P7D"

    # a run at the instant of the newest request does not see it ([since, until) is half-open)
    at_last = _figures(check_online(ctx, model, last), "online")[("requests", "")]
    newest = {r["request_id"] for r in logged if r["received_at"].replace(tzinfo=None) == last.replace(tzinfo=None)}
    assert at_last.value == len({r["request_id"] for r in logged}) - len(newest)
    # a run exactly one window after the oldest request still sees it; a microsecond later it does not
    edge = _figures(check_online(ctx, model, first + window), "online")[("requests", "")]
    oldest = {r["request_id"] for r in logged if r["received_at"].replace(tzinfo=None) == first.replace(tzinfo=None)}
    assert edge.value >= len(oldest) >= 1
    later = _figures(check_online(ctx, model, first + window + timedelta(microseconds=1)), "online")
    assert later[("requests", "")].value == edge.value - len(oldest)
    # a week after the last request there is nothing to judge: insufficient, never an alert
    quiet = check_online(ctx, model, last + window + timedelta(seconds=1))
    assert [(f.check, f.metric, f.status) for f in quiet] == [("online", "requests", "insufficient")]


def test_the_monitoring_run_stores_the_online_figures(home):
    from flightdeck.core import warehouse
    from flightdeck.monitoring.monitor import run_monitoring
    from flightdeck.serving import scoring

    ctx = _ctx()
    scoring.score_partition(ctx, DAY)
    _send_partition_online(ctx)
    manifest = run_monitoring(ctx, partitions=[DAY])
    assert not {k for k in manifest["errors"] if k.startswith("online")}, manifest["errors"]
    stored = warehouse.select_rows(ctx.engine, warehouse.monitoring_metrics,
                                   {"spec_name": "flights", "window": "run"})
    checks = {(r["check_name"], r["metric"]) for r in stored}
    assert {("online", "requests"), ("online_skew", "max_abs_diff"), ("online_drift", "score_psi")} <= checks
    again = run_monitoring(ctx, partitions=[DAY])
    assert again["figures"] == manifest["figures"]
    stored_again = warehouse.select_rows(ctx.engine, warehouse.monitoring_metrics,
                                         {"spec_name": "flights", "window": "run", "check_name": "online_skew"})
    assert len(stored_again) == 1, "a repeated run replaces its online figures"
