"""Notifiers: how FlightDeck alerts leave Airflow (file + log always, webhook and e-mail when configured).

``FlightDeckNotifier`` plugs into any ``on_failure_callback`` / ``on_success_callback``;
``notify_alerts`` lets an operator send alerts it computed from inside ``execute``. Both hand
the work to ``flightdeck.monitoring.alerts.deliver_alerts`` and never raise on a delivery failure.
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import Context
from airflow.sdk.bases.notifier import BaseNotifier

if TYPE_CHECKING:
    from flightdeck.monitoring.alerts import Alert

log = logging.getLogger(__name__)
_ALERT_KEYS = ("spec_name", "check", "severity", "summary", "figures", "run_id", "dag_id", "raised_at")


class FlightDeckNotifier(BaseNotifier):
    """Send FlightDeck alerts from an Airflow callback.

    Without ``alerts`` it builds one alert about the task (or DAG run) in the context, with the
    exception when there is one. Settings are read when notifying, never at import.

    Args:
        check: the alert's check name (default ``task_failed``).
        severity: ``info``, ``warning`` or ``critical``.
        summary: one line (templated); default ``"<dag>.<task> failed in run <run>"``.
        alerts: alert dicts to send instead (keys of ``flightdeck.monitoring.alerts.Alert``); missing
            ``spec_name``, ``check``, ``severity``, ``summary``, ``run_id`` and ``dag_id`` are
            filled from the notifier and the context.
    """

    template_fields: Sequence[str] = ("summary",)

    def __init__(self, check: str = "task_failed", severity: str = "critical", summary: str = "",
                 alerts: Sequence[Mapping[str, Any]] | None = None) -> None:
        super().__init__()
        self.check = check
        self.severity = severity
        self.summary = summary
        self.alerts = alerts

    def notify(self, context: Context) -> None:
        """Build the alert(s) from the context and deliver them (see ``notify_alerts``)."""
        alerts = self.build_alerts(context)
        result = notify_alerts(context, alerts)
        self.log.info("FlightDeck notification: %s", result)

    async def async_notify(self, context: Context) -> None:
        """Deliver from the triggerer (deadline alerts) without blocking its event loop."""
        await asyncio.to_thread(self.notify, context)

    def build_alerts(self, context: Context) -> list[Alert]:
        """Return the alerts this notifier would send for ``context``."""
        from flightdeck.monitoring.alerts import Alert

        dag_id, task_id, run_id = _dag_task_run(context)
        defaults: dict[str, Any] = {"spec_name": spec_name_from_context(context), "check": self.check,
                                    "severity": self.severity, "run_id": run_id, "dag_id": dag_id}
        if self.alerts is not None:
            alerts = []
            for given in self.alerts:
                unknown = set(given) - set(_ALERT_KEYS)
                if unknown:
                    raise ValueError(f"unknown alert keys {sorted(unknown)}; expected some of {list(_ALERT_KEYS)}")
                fields = {**defaults, "summary": self.summary or f"{self.check} for {dag_id} run {run_id}",
                          **{k: v for k, v in given.items() if v is not None}}
                if isinstance(fields.get("raised_at"), str):
                    from datetime import datetime

                    fields["raised_at"] = datetime.fromisoformat(fields["raised_at"])
                alerts.append(Alert(**fields))
            return alerts
        where = f"{dag_id}.{task_id}" if task_id else str(dag_id)
        figures: dict[str, Any] = {"task_id": task_id}
        ti = context.get("ti") or context.get("task_instance")
        if ti is not None and getattr(ti, "try_number", None) is not None:
            figures["try_number"] = ti.try_number
        if context.get("reason"):
            figures["reason"] = context.get("reason")
        exception = context.get("exception")
        if exception is not None:
            figures["exception_type"] = type(exception).__name__
            figures["exception"] = str(exception)[:2000]
        summary = self.summary or f"{where} failed in run {run_id}"
        if exception is not None and not self.summary:
            first_line = next(iter(str(exception).splitlines()), "")
            summary += f": {type(exception).__name__}: {first_line}".rstrip(": ")
        return [Alert(summary=summary, figures=figures, **defaults)]


def notify_alerts(context: Context, alerts: Sequence[Alert]) -> dict[str, Any]:
    """Deliver alerts computed by an operator: file + log, webhook and e-mail when configured.

    Args:
        context: the Airflow context (used for the e-mail's template environment).
        alerts: the alerts to send.

    Returns:
        ``deliver_alerts``'s result plus ``"email": "sent" | "failed: <reason>" | "not configured"``.
    """
    from flightdeck.core.settings import Settings
    from flightdeck.monitoring.alerts import deliver_alerts

    settings = Settings.from_env()
    result = deliver_alerts(alerts, settings)
    result["email"] = "not configured"
    if settings.alert_emails and alerts:
        result["email"] = _send_email(context, alerts, settings.alert_emails)
    return result


def spec_name_from_context(context: Context) -> str:
    """The spec an alert is about: params, the task's ``spec_name``, the DAG's default_args, else the dag_id.

    DAG ids are ``<spec>_<kind>`` (``flights_monitoring``) and spec names may hold underscores,
    so the fallback drops the part after the *last* underscore.
    """
    params = context.get("params") or {}
    task = context.get("task")
    dag = context.get("dag")
    candidates = (params.get("spec_name") if hasattr(params, "get") else None,
                  getattr(task, "spec_name", None),
                  (getattr(dag, "default_args", None) or {}).get("spec_name"))
    for candidate in candidates:
        if isinstance(candidate, str) and candidate and "{{" not in candidate:
            return candidate
    dag_id = _dag_task_run(context)[0] or "unknown"
    return dag_id.rsplit("_", 1)[0] if "_" in dag_id else dag_id


def _dag_task_run(context: Context) -> tuple[str | None, str | None, str]:
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    dag = context.get("dag")
    task = context.get("task")
    dag_id = (getattr(dag, "dag_id", None) or getattr(dag_run, "dag_id", None) or getattr(ti, "dag_id", None))
    task_id = getattr(ti, "task_id", None) or getattr(task, "task_id", None)
    run_id = context.get("run_id") or getattr(dag_run, "run_id", None) or getattr(ti, "run_id", None) or ""
    return dag_id, task_id, str(run_id)


def _send_email(context: Context, alerts: Sequence[Alert], to: Sequence[str]) -> str:
    """Send one e-mail for the batch through the SMTP provider; log and report a failure, never raise."""
    worst = max(alerts, key=lambda a: ("info", "warning", "critical").index(a.severity))
    specs = sorted({a.spec_name for a in alerts})
    subject = f"[FlightDeck {worst.severity}] {', '.join(specs)}: {worst.summary}"
    if len(alerts) > 1:
        subject += f" (+{len(alerts) - 1} more)"
    rows = "".join(
        f"<li><b>{html.escape(a.severity)}</b> {html.escape(a.spec_name)}/{html.escape(a.check)}: "
        f"{html.escape(a.summary)} <small>(run {html.escape(a.run_id)}, {a.raised_at.isoformat()})</small></li>"
        for a in alerts)
    try:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        # notify() directly, not __call__: the alert text is data, not a Jinja template.
        SmtpNotifier(to=list(to), subject=subject[:250], html_content=f"<ul>{rows}</ul>").notify(context)
    except Exception as exc:  # no SMTP connection, refused, auth... must not break monitoring
        reason = f"{type(exc).__name__}: {exc}"
        log.error("FlightDeck alert e-mail to %d recipient(s) failed: %s", len(to), reason)
        return f"failed: {reason}"
    return "sent"

