"""FlightDeckNotifier and notify_alerts called with a minimal context, as an Airflow callback would."""

from __future__ import annotations

import email
import json
import socketserver
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from flightdeck.monitoring.alerts import Alert


@pytest.fixture
def env_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLIGHTDECK_HOME", str(tmp_path / "fd"))
    monkeypatch.delenv("FLIGHTDECK_ALERT_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("FLIGHTDECK_ALERT_EMAIL", raising=False)
    return tmp_path / "fd"


def _context(dag_id: str = "flights_monitoring", task_id: str = "check_decay", run_id: str = "manual__n1",
             **extra) -> dict:
    from airflow.sdk import DAG

    dag = DAG(dag_id, schedule=None, default_args=extra.pop("default_args", {}))
    ti = SimpleNamespace(dag_id=dag_id, task_id=task_id, run_id=run_id, try_number=2)
    return {"dag": dag, "ti": ti, "task_instance": ti, "run_id": run_id, "params": {}, **extra}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_failure_callback_writes_an_alert_with_dag_task_run_and_exception(env_home):
    from flightdeck_airflow.notifiers import FlightDeckNotifier

    FlightDeckNotifier()(_context(exception=ValueError("labels table is empty\nmore detail")))

    (line,) = _lines(env_home / "alerts" / "flights.jsonl")
    assert line["spec_name"] == "flights"
    assert line["check"] == "task_failed" and line["severity"] == "critical"
    assert line["dag_id"] == "flights_monitoring" and line["run_id"] == "manual__n1"
    assert line["summary"] == ("flights_monitoring.check_decay failed in run manual__n1: "
                               "ValueError: labels table is empty")
    assert line["figures"] == {"task_id": "check_decay", "try_number": 2, "exception_type": "ValueError",
                               "exception": "labels table is empty\nmore detail"}


def test_summary_is_a_template_rendered_with_the_context(env_home):
    from flightdeck_airflow.notifiers import FlightDeckNotifier

    FlightDeckNotifier(check="monitoring_failed", severity="warning",
                       summary="monitoring of {{ dag.dag_id }} stopped in {{ run_id }}")(_context())

    (line,) = _lines(env_home / "alerts" / "flights.jsonl")
    assert line["summary"] == "monitoring of flights_monitoring stopped in manual__n1"
    assert (line["check"], line["severity"]) == ("monitoring_failed", "warning")


def test_given_alert_dicts_are_each_written_with_context_defaults(env_home):
    from flightdeck_airflow.notifiers import FlightDeckNotifier

    given = [
        {"check": "decay", "severity": "critical", "summary": "AUC 0.61 < 0.70", "figures": {"auc": float("nan")}},
        {"check": "drift", "summary": "dep_delay PSI 0.31", "figures": {"psi": 0.31},
         "raised_at": "2013-07-01T06:00:00+00:00"},
        {"spec_name": "taxis", "check": "dependencies", "severity": "info", "summary": "all fresh"},
    ]
    FlightDeckNotifier(severity="warning", alerts=given)(_context())

    flights = _lines(env_home / "alerts" / "flights.jsonl")
    assert [(a["check"], a["severity"], a["summary"]) for a in flights] == [
        ("decay", "critical", "AUC 0.61 < 0.70"), ("drift", "warning", "dep_delay PSI 0.31")]
    assert flights[0]["figures"] == {"auc": None}
    assert flights[1]["raised_at"] == "2013-07-01T06:00:00+00:00"
    assert all(a["run_id"] == "manual__n1" and a["dag_id"] == "flights_monitoring" for a in flights)
    (taxis,) = _lines(env_home / "alerts" / "taxis.jsonl")
    assert taxis["summary"] == "all fresh"


def test_unknown_alert_keys_are_refused(env_home):
    from flightdeck_airflow.notifiers import FlightDeckNotifier

    with pytest.raises(ValueError, match="unknown alert keys \\['colour'\\]"):
        FlightDeckNotifier(alerts=[{"check": "decay", "colour": "red"}]).notify(_context())


@pytest.mark.parametrize(("context_kwargs", "expected"), [
    ({}, "flights"),
    ({"dag_id": "nyc_flights_monitoring"}, "nyc_flights"),
    ({"dag_id": "adhoc"}, "adhoc"),
    ({"params": {"spec_name": "from_params"}}, "from_params"),
    ({"task": SimpleNamespace(task_id="t", spec_name="from_task")}, "from_task"),
    ({"task": SimpleNamespace(task_id="t", spec_name="{{ params.spec }}")}, "flights"),
    ({"default_args": {"spec_name": "from_default_args"}}, "from_default_args"),
    ({"params": {"spec_name": "from_params"}, "default_args": {"spec_name": "x"}}, "from_params"),
])
def test_spec_name_comes_from_params_task_default_args_or_dag_id(context_kwargs, expected):
    from flightdeck_airflow.notifiers import spec_name_from_context

    assert spec_name_from_context(_context(**context_kwargs)) == expected


def test_dag_level_callback_without_a_task_instance(env_home):
    from airflow.sdk import DAG
    from flightdeck_airflow.notifiers import FlightDeckNotifier

    dag = DAG("flights_monitoring", schedule=None)
    context = {"dag": dag, "dag_run": SimpleNamespace(dag_id="flights_monitoring", run_id="scheduled__d"),
               "reason": "task_failure"}
    FlightDeckNotifier()(context)

    (line,) = _lines(env_home / "alerts" / "flights.jsonl")
    assert line["summary"] == "flights_monitoring failed in run scheduled__d"
    assert line["figures"] == {"task_id": None, "reason": "task_failure"}


def test_notify_alerts_sends_operator_alerts_and_reports_email_not_configured(env_home):
    from flightdeck_airflow.notifiers import notify_alerts

    alerts = [Alert("flights", "decay", "critical", "AUC fell", {"auc": 0.6}, run_id="manual__n1")]
    result = notify_alerts(_context(), alerts)

    assert result["count"] == 1 and result["webhook"] == "not configured" and result["email"] == "not configured"
    assert _lines(Path(result["file"]))[0]["figures"] == {"auc": 0.6}


def test_email_without_an_smtp_connection_is_logged_not_raised(env_home, monkeypatch):
    from flightdeck_airflow.notifiers import notify_alerts

    monkeypatch.setenv("FLIGHTDECK_ALERT_EMAIL", "ops@example.org")
    monkeypatch.delenv("AIRFLOW_CONN_SMTP_DEFAULT", raising=False)
    result = notify_alerts(_context(), [Alert("flights", "decay", "critical", "AUC fell", run_id="r")])

    assert result["email"].startswith("failed: ") and "SMTP connection is not found" in result["email"]
    assert len(_lines(Path(result["file"]))) == 1


class _SmtpSink(socketserver.ThreadingTCPServer):
    """Just enough SMTP on loopback to receive one message (no TLS, no auth)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.messages: list[dict] = []
        super().__init__(("127.0.0.1", 0), _SmtpHandler)


class _SmtpHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        envelope: dict = {"rcpt": []}
        self.wfile.write(b"220 sink ready\r\n")
        while line := self.rfile.readline():
            verb = line.decode().strip().split(" ")[0].upper()
            if verb in ("EHLO", "HELO"):
                self.wfile.write(b"250 sink\r\n")
            elif verb == "MAIL":
                envelope["from"] = line.decode().strip()
                self.wfile.write(b"250 ok\r\n")
            elif verb == "RCPT":
                envelope["rcpt"].append(line.decode().split("<", 1)[1].split(">", 1)[0])
                self.wfile.write(b"250 ok\r\n")
            elif verb == "DATA":
                self.wfile.write(b"354 go ahead\r\n")
                data = []
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data.append(chunk)
                envelope["data"] = b"".join(data).decode()
                self.server.messages.append(dict(envelope))
                self.wfile.write(b"250 queued\r\n")
            elif verb == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


def test_email_goes_through_the_smtp_provider_to_a_real_server(env_home, monkeypatch):
    from flightdeck_airflow.notifiers import FlightDeckNotifier

    sink = _SmtpSink()
    thread = threading.Thread(target=sink.serve_forever, daemon=True)
    thread.start()
    try:
        port = sink.server_address[1]
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps({
            "conn_type": "smtp", "host": "127.0.0.1", "port": port,
            "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "flightdeck@example.org",
                      "retry_limit": 0, "timeout": 5}}))
        monkeypatch.setenv("FLIGHTDECK_ALERT_EMAIL", "ops@example.org,ml@example.org")
        FlightDeckNotifier(summary="AUC <fell> to 0.61")(_context())
    finally:
        sink.shutdown()
        sink.server_close()

    (message,) = sink.messages
    assert "flightdeck@example.org" in message["from"]
    assert message["rcpt"] == ["ops@example.org", "ml@example.org"]
    mail = email.message_from_string(message["data"])
    assert mail["Subject"] == "[FlightDeck critical] flights: AUC <fell> to 0.61"
    (body,) = [part.get_payload(decode=True).decode() for part in mail.walk() if part.get_content_type() == "text/html"]
    assert "flights/task_failed: AUC &lt;fell&gt; to 0.61" in body  # alert text is escaped, not rendered
    assert _lines(env_home / "alerts" / "flights.jsonl")[0]["summary"] == "AUC <fell> to 0.61"
