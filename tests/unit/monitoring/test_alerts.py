"""Alert delivery: the JSON-lines file sink, and a webhook on a real loopback HTTP server."""

from __future__ import annotations

import dataclasses
import http.server
import json
import logging
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from flightdeck.core.settings import Settings
from flightdeck.monitoring import alerts as alerts_mod
from flightdeck.monitoring.alerts import Alert, deliver_alerts


class _Receiver:
    """A loopback HTTP server that records POSTs and answers with a fixed status."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[dict] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"path": self.path, "content_type": self.headers["Content-Type"],
                                          "body": json.loads(body)})
                self.send_response(receiver.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/secret-token-123"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alerts_mod, "WEBHOOK_BACKOFF_S", 0.01)


@pytest.fixture
def two_alerts() -> list[Alert]:
    raised = datetime(2013, 7, 1, 6, 30, tzinfo=UTC)
    return [
        Alert("flights", "decay", "critical", "AUC fell from 0.74 to 0.61",
              {"auc": 0.61, "baseline_auc": 0.74, "missing": float("nan"), "np_nan": np.float64("nan"),
               "n": np.int64(1200), "windows": (1, 2), "inf": float("inf")},
              run_id="scheduled__2013-07-01", dag_id="flights_monitoring", raised_at=raised),
        Alert("flights", "drift", "warning", "dep_delay drifted", {"psi": 0.31}, run_id="scheduled__2013-07-01"),
    ]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _lines(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_file_sink_writes_one_json_line_per_alert_and_fields_round_trip(settings, two_alerts):
    result = deliver_alerts(two_alerts, settings)

    path = settings.home / "alerts" / "flights.jsonl"
    assert result == {"file": str(path), "files": [str(path)], "webhook": "not configured", "count": 2}
    raw = path.read_text()
    assert "NaN" not in raw and "Infinity" not in raw
    first, second = _lines(path)
    assert first == {
        "spec_name": "flights", "check": "decay", "severity": "critical", "summary": "AUC fell from 0.74 to 0.61",
        "figures": {"auc": 0.61, "baseline_auc": 0.74, "missing": None, "np_nan": None, "n": 1200,
                    "windows": [1, 2], "inf": None},
        "run_id": "scheduled__2013-07-01", "dag_id": "flights_monitoring", "raised_at": "2013-07-01T06:30:00+00:00",
    }
    assert second["check"] == "drift" and second["dag_id"] is None
    assert datetime.fromisoformat(second["raised_at"]).tzinfo is not None


def test_file_sink_appends_and_keeps_one_file_per_spec(settings, two_alerts):
    deliver_alerts(two_alerts, settings)
    other = Alert("taxis", "dependencies", "info", "all good", run_id="r2")
    result = deliver_alerts([two_alerts[0], other], settings)

    assert [r["check"] for r in _lines(settings.home / "alerts" / "flights.jsonl")] == ["decay", "drift", "decay"]
    assert _lines(settings.home / "alerts" / "taxis.jsonl")[0]["summary"] == "all good"
    assert len(result["files"]) == 2 and result["count"] == 2


def test_concurrent_writers_never_interleave_lines(settings):
    big = {"blob": "x" * 20_000}  # well past any stdio buffer, so a split write would show

    def write(worker: int) -> None:
        for i in range(25):
            deliver_alerts([Alert("flights", "drift", "info", f"w{worker} a{i}", big, run_id="r")], settings)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = _lines(settings.home / "alerts" / "flights.jsonl")
    assert len(lines) == 200
    assert {line["summary"] for line in lines} == {f"w{w} a{i}" for w in range(8) for i in range(25)}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"severity": "fatal"}, "severity must be one of"),
    ({"spec_name": ""}, "needs a spec_name"),
])
def test_alert_rejects_bad_fields(kwargs, message):
    fields = {"spec_name": "flights", "check": "decay", "severity": "info", "summary": "s"} | kwargs
    with pytest.raises(ValueError, match=message):
        Alert(**fields)


def test_alert_keeps_summary_on_one_line_and_times_in_utc():
    alert = Alert("flights", "decay", "info", "line one\nline two", raised_at=datetime(2013, 7, 1, 8, 0))
    assert alert.summary == "line one line two"
    assert alert.to_dict()["raised_at"] == "2013-07-01T08:00:00+00:00"
    assert alert.figures == {} and alert.run_id == "" and alert.dag_id is None


def test_webhook_receives_the_alerts_as_json(settings, two_alerts, caplog):
    with _Receiver() as receiver:
        hooked = dataclasses.replace(settings, alert_webhook_url=receiver.url)
        with caplog.at_level(logging.INFO, logger="flightdeck.monitoring.alerts"):
            result = deliver_alerts(two_alerts, hooked)

    assert result["webhook"] == "sent"
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request["path"] == "/hooks/secret-token-123"
    assert request["content_type"] == "application/json"
    assert request["body"] == {"alerts": [a.to_dict() for a in two_alerts]}
    assert request["body"]["alerts"][0]["figures"]["missing"] is None
    assert len(_lines(result["file"])) == 2
    assert "secret-token-123" not in caplog.text


def test_webhook_server_error_is_retried_then_reported_not_raised(settings, two_alerts, caplog):
    with _Receiver(status=500) as receiver:
        hooked = dataclasses.replace(settings, alert_webhook_url=receiver.url)
        with caplog.at_level(logging.WARNING, logger="flightdeck.monitoring.alerts"):
            result = deliver_alerts(two_alerts, hooked)

    assert result["webhook"].startswith("failed: HTTP 500")
    assert len(receiver.requests) == 1 + alerts_mod.WEBHOOK_RETRIES
    assert len(_lines(result["file"])) == 2, "the file sink is written whatever the webhook does"
    assert any(r.levelno == logging.ERROR and "webhook" in r.getMessage() for r in caplog.records)
    assert "secret-token-123" not in caplog.text


def test_webhook_client_error_is_not_retried(settings, two_alerts):
    with _Receiver(status=404) as receiver:
        result = deliver_alerts(two_alerts, dataclasses.replace(settings, alert_webhook_url=receiver.url))
    assert result["webhook"].startswith("failed: HTTP 404")
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("url", [
    f"http://127.0.0.1:{_closed_port()}/hook",
    "not-a-url",
    "file:///etc/hostname",
    "http://127.0.0.1:notaport/hook",
    "http://[::1/hook",
])
def test_unreachable_webhook_is_reported_not_raised(settings, two_alerts, url):
    result = deliver_alerts(two_alerts, dataclasses.replace(settings, alert_webhook_url=url))
    assert result["webhook"].startswith("failed: ")
    assert result["count"] == 2 and len(_lines(result["file"])) == 2


def test_webhook_that_never_answers_times_out(settings, two_alerts, monkeypatch):
    monkeypatch.setattr(alerts_mod, "WEBHOOK_TIMEOUT_S", 0.2)
    monkeypatch.setattr(alerts_mod, "WEBHOOK_RETRIES", 0)
    with socket.socket() as silent:  # accepts connections (backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        result = deliver_alerts(two_alerts, dataclasses.replace(settings, alert_webhook_url=url))
    assert result["webhook"].startswith("failed: ") and "timed out" in result["webhook"]


def test_no_alerts_writes_nothing(settings):
    result = deliver_alerts([], dataclasses.replace(settings, alert_webhook_url="http://127.0.0.1:9/x"))
    assert result == {"file": None, "files": [], "webhook": "skipped: no alerts", "count": 0}
    assert not (settings.home / "alerts").exists()


def test_settings_read_alert_targets_and_hide_the_webhook(tmp_path):
    settings = Settings.from_env({"FLIGHTDECK_HOME": str(tmp_path),
                                  "FLIGHTDECK_ALERT_WEBHOOK_URL": "https://hooks.example.org/T0K3N",
                                  "FLIGHTDECK_ALERT_EMAIL": " ops@example.org, ,ml@example.org "})
    assert settings.alert_webhook_url == "https://hooks.example.org/T0K3N"
    assert settings.alert_emails == ("ops@example.org", "ml@example.org")
    assert "T0K3N" not in repr(settings)
    default = Settings.from_env({"FLIGHTDECK_HOME": str(tmp_path)})
    assert default.alert_webhook_url is None and default.alert_emails == ()


@pytest.mark.parametrize(("figure", "severity"), [
    ({"check": "decay", "status": "alert", "window": "rolling"}, "critical"),
    ({"check": "decay", "status": "alert", "window": "partition"}, "warning"),
    ({"check": "drift", "status": "alert", "window": "partition"}, "warning"),
    ({"check": "drift", "status": "error", "window": "partition"}, "critical"),
    ({"check": "staleness", "status": "alert", "window": "run"}, "warning"),
])
def test_rolling_decay_and_failed_checks_are_critical_the_rest_warns(figure, severity):
    from flightdeck.monitoring.alerts import severity_of

    assert severity_of(figure) == severity
