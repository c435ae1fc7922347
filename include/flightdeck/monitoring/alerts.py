"""Alerts: what monitoring tells people, and how it leaves FlightDeck.

Every alert is appended as one JSON line to ``<FLIGHTDECK_HOME>/alerts/<spec_name>.jsonl`` and
logged; when ``FLIGHTDECK_ALERT_WEBHOOK_URL`` is set the batch is also POSTed there as JSON.
Delivery never raises: a failed notification must not break monitoring, so failures are
logged at ERROR and reported in the returned dict instead. (E-mail goes through Airflow's
SMTP notifier, in ``plugins/flightdeck_airflow/notifiers.py``.)
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flightdeck.core.settings import Settings
from flightdeck.core.values import jsonable, safe_name

log = logging.getLogger(__name__)

SEVERITIES: dict[str, int] = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}
WEBHOOK_TIMEOUT_S = 10.0
WEBHOOK_RETRIES = 2  # attempts after the first one
WEBHOOK_BACKOFF_S = 0.5  # doubled after each failed attempt


@dataclass(frozen=True)
class Alert:
    """One notification about one spec.

    Attributes:
        spec_name: the dataset spec the alert is about.
        check: what raised it, e.g. ``decay``, ``drift``, ``dependencies``, ``monitoring_failed``.
        severity: ``info``, ``warning`` or ``critical``.
        summary: one line for humans.
        figures: the numbers behind it (JSON-able; NaN and infinities become null).
        run_id: the Airflow run (or CLI run) that raised it.
        dag_id: the DAG that raised it, if any.
        raised_at: when, in UTC (a naive datetime is taken as UTC).
    """

    spec_name: str
    check: str
    severity: str
    summary: str
    figures: Mapping[str, Any] = field(default_factory=dict)
    run_id: str = ""
    dag_id: str | None = None
    raised_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"alert severity must be one of {sorted(SEVERITIES)}, got {self.severity!r}")
        if not self.spec_name or not self.check:
            raise ValueError("an alert needs a spec_name and a check")
        if "\n" in self.summary:
            object.__setattr__(self, "summary", " ".join(self.summary.split()))
        raised = self.raised_at
        raised = raised.replace(tzinfo=UTC) if raised.tzinfo is None else raised.astimezone(UTC)
        object.__setattr__(self, "raised_at", raised)

    def to_dict(self) -> dict[str, Any]:
        """Return the alert as a JSON-able dict (NaN and infinities become ``None``)."""
        return {
            "spec_name": self.spec_name,
            "check": self.check,
            "severity": self.severity,
            "summary": self.summary,
            "figures": jsonable(dict(self.figures)),
            "run_id": self.run_id,
            "dag_id": self.dag_id,
            "raised_at": self.raised_at.isoformat(),
        }


def deliver_alerts(alerts: Sequence[Alert], settings: Settings) -> dict[str, Any]:
    """Write, log and (when configured) POST alerts; never raise.

    Args:
        alerts: the alerts to send; may span several specs (one file each).
        settings: where ``home`` and the optional webhook come from.

    Returns:
        ``{"file": path, "files": [paths], "webhook": "sent" | "failed: <reason>" | "not configured",
        "count": n}``; ``file`` is the first spec's file (``None`` with no alerts) and a failed file
        write adds ``file_error``. With no alerts nothing is written and ``webhook`` is
        ``"skipped: no alerts"`` when one is configured.
    """
    records = [alert.to_dict() for alert in alerts]
    result: dict[str, Any] = {"file": None, "files": [], "webhook": "not configured", "count": len(records)}
    for alert in alerts:
        log.log(SEVERITIES[alert.severity], "alert [%s] %s/%s (run %s): %s", alert.severity, alert.spec_name,
                alert.check, alert.run_id, alert.summary)
    errors = []
    for spec_name, lines in _lines_by_spec(records).items():
        path = settings.home / "alerts" / f"{safe_name(spec_name)}.jsonl"
        try:
            _append_lines(path, lines)
        except OSError as exc:
            log.error("could not write alerts for %s to %s: %s", spec_name, path, exc)
            errors.append(f"{path}: {exc}")
        result["files"].append(str(path))
    result["file"] = result["files"][0] if result["files"] else None
    if errors:
        result["file_error"] = "; ".join(errors)
    if settings.alert_webhook_url:
        if not records:
            result["webhook"] = "skipped: no alerts"
        else:
            result["webhook"] = _post_webhook(settings.alert_webhook_url, {"alerts": records})
    return result


def _lines_by_spec(records: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    by_spec: dict[str, list[str]] = {}
    for record in records:
        by_spec.setdefault(record["spec_name"], []).append(json.dumps(record, allow_nan=False) + "\n")
    return by_spec


def _append_lines(path: Path, lines: Sequence[str]) -> None:
    """Append each line with one ``write`` on an ``O_APPEND`` descriptor, so concurrent writers never interleave."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for line in lines:
            os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def _post_webhook(url: str, body: Mapping[str, Any]) -> str:
    """POST ``body`` as JSON with retries; return ``"sent"`` or ``"failed: <reason>"``."""
    data = json.dumps(body, allow_nan=False).encode("utf-8")
    target = _redacted(url)
    if not _is_http_url(url):
        log.error("alert webhook URL is not an http(s) URL (%s); nothing sent", target)
        return "failed: not an http(s) URL"  # the URL itself stays out of the report: it may carry a token
    reason = "not attempted"
    for attempt in range(WEBHOOK_RETRIES + 1):
        if attempt:
            time.sleep(WEBHOOK_BACKOFF_S * 2 ** (attempt - 1))
        request = urllib.request.Request(url, data=data, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
                response.read()
            return "sent"
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code} {exc.reason}"
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                break  # the request itself is wrong: sending it again cannot help
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = str(getattr(exc, "reason", exc)) or type(exc).__name__
        log.warning("alert webhook %s attempt %d failed: %s", target, attempt + 1, reason)
    log.error("alert webhook %s failed: %s", target, reason)
    return f"failed: {reason}"


def _is_http_url(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 1) > 0
    except ValueError:  # e.g. a bad port or an unclosed IPv6 bracket
        return False


def _redacted(url: str) -> str:
    """Scheme and host only: webhook paths and queries often carry a token."""
    try:
        parts = urllib.parse.urlsplit(url)
        return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}/..."
    except ValueError:
        return "<unparsable URL>"


def severity_of(figure: Mapping[str, Any]) -> str:
    """How loud an alerting monitoring figure is: ``critical`` or ``warning``.

    Critical: a check that failed to run (status ``error``) or realised quality decaying over a
    rolling window (sustained, it retrains); anything else, a single partition's alert, warns.
    """
    if figure.get("status") == "error" or (figure.get("check") == "decay" and figure.get("window") != "partition"):
        return "critical"
    return "warning"
