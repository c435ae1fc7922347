"""Monitoring operators: measure the model in production, notify, and ask for retraining."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException

from flightdeck_airflow.operators import FlightDeckStageOperator, run_type_of

if TYPE_CHECKING:
    from flightdeck.core.manifests import MonitorManifest


class MonitorModelOperator(FlightDeckStageOperator):
    """Run every monitoring check (drift, skew, stability, invariants, staleness, performance,
    dependencies, decay with late labels), store the figures and the ML Test Score's
    monitoring evidence, and notify on alerts.

    Args:
        as_of: the data date (YYYY-MM-DD) the run is about; empty: the newest published partition.
        partitions: comma-separated partitions to re-check; empty: what changed since the last run.
    """

    template_fields: Sequence[str] = ("spec_name", "as_of", "partitions")
    ui_color = "#e4f0ea"

    def __init__(self, *, as_of: str | None = None, partitions: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.as_of = as_of
        self.partitions = partitions

    def execute(self, context: Context) -> MonitorManifest:
        from flightdeck.monitoring import monitor as monitoring

        ctx = self.stage_context(context)
        parts = [p.strip() for p in (self.partitions or "").split(",") if p.strip()]
        manifest = self.run_stage(monitoring.run_monitoring, ctx, as_of=self.as_of or None,
                                  partitions=parts or None, run_type=run_type_of(context))
        self.log.info("monitoring %s as of %s: %s", self.spec_name, manifest["as_of"], manifest["status"])
        if manifest["alerts"]:
            from flightdeck.monitoring.alerts import Alert, severity_of

            from flightdeck_airflow.notifiers import notify_alerts

            alerts = [Alert(spec_name=self.spec_name, check=a["check"], severity=severity_of(a),
                            summary=f"{a['check']} {a['metric']} = {a['value']} (limit {a['threshold']}) on "
                                    f"{a['partition']} [{a['status']}], version {a['model_version']}",
                            figures=a, run_id=ctx.run_id, dag_id=self.dag_id) for a in manifest["alerts"]]
            manifest["notified"] = notify_alerts(context, alerts)
        return manifest


class RequestRetrainingOperator(FlightDeckStageOperator):
    """Ask the training DAG for a retrain when this run's alerts call for it and the cooldown allows.

    Emits the retrain Asset (its extra carries the reasons) only on a request; otherwise the
    task is skipped, so no event fires. Every decision with a reason is recorded in ``fd_retraining``.
    """

    ui_color = "#f0e4e4"

    def __init__(self, *, monitor_task_id: str = "monitor", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.monitor_task_id = monitor_task_id

    def execute(self, context: Context) -> dict[str, Any]:
        from flightdeck.monitoring import monitor as monitoring

        ctx = self.stage_context(context)
        manifest = context["ti"].xcom_pull(task_ids=self.monitor_task_id) or {}
        decision = monitoring.decide_retraining(ctx, ctx.run_id, manifest.get("as_of") or "",
                                                manifest.get("champion"))
        if not decision.retrain:
            why = ("no alert calls for retraining" if decision.action == "none"
                   else f"cooldown until {decision.cooldown_until}: {decision.reason_text()}")
            raise AirflowSkipException(why)
        self.log.info("requesting retraining: %s", decision.reason_text())
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = {"reason": decision.reason_text(), "as_of": decision.as_of,
                                                      "monitoring_run_id": ctx.run_id,
                                                      "window_start": decision.window_start,
                                                      "model_version": decision.model_version}
        return decision.to_dict()
