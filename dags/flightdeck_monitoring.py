"""Monitoring DAGs: one per dataset spec.

monitor -> request_retraining (emits the retrain Asset only when decay or drift call for it)

Runs after every scoring run (the scored Asset), when deliveries are curated (labels
arriving are what decay monitoring waits for) and daily in the evening of the spec's
time zone. `monitor` measures drift, training/serving skew, numerical stability, the
serving batch's invariants, staleness, scoring performance, dependency changes and decay
with late labels into `fd_monitoring_metrics`, writes the ML Test Score's monitoring
evidence and notifies on alerts. `request_retraining` emits the retrain Asset (which
schedules the training DAG) unless the cooldown holds. Monitoring never blocks scoring:
it is its own DAG, and a failure notifies.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param
from flightdeck_airflow.assets import curated_asset, retrain_asset, scored_asset
from flightdeck_airflow.dags import flightdeck_specs, spec_dag
from flightdeck_airflow.monitoring import MonitorModelOperator, RequestRetrainingOperator
from flightdeck_airflow.notifiers import FlightDeckNotifier

for spec in flightdeck_specs():
    with spec_dag(
        spec, "monitoring",
        description="drift, skew, decay with late labels; retraining when quality falls",
        doc_md=__doc__ + f"\n\nSpec `{spec.name}` ({spec.fingerprint()}): retrains on "
                         f"{', '.join(spec.monitoring.retrain_on) or 'nothing'}, cooldown {spec.monitoring.cooldown}.",
        schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 21 * * *", timezone=spec.timezone),
                                     assets=scored_asset(spec.name) | curated_asset(spec.name)),
        retries=1, retry_delay=timedelta(minutes=2),
        params={
            "as_of": Param("", type="string", description="data date (YYYY-MM-DD) the run is about; "
                                                          "empty: the newest published partition"),
            "partitions": Param("", type="string",
                                description="partitions to re-check (comma separated); empty: what changed"),
        },
        on_failure_callback=FlightDeckNotifier(check="monitoring_failed", severity="critical"),
    ):
        monitor = MonitorModelOperator(task_id="monitor", as_of="{{ params.as_of }}",
                                       partitions="{{ params.partitions }}", execution_timeout=timedelta(hours=1))
        request = RequestRetrainingOperator(task_id="request_retraining", outlets=[retrain_asset(spec.name)])
        monitor >> request
