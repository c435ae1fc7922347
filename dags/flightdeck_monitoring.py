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

import pendulum
from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, Param
from flightdeck.core.settings import Settings
from flightdeck.core.spec import discover_specs
from flightdeck_airflow.assets import curated_asset, retrain_asset, scored_asset
from flightdeck_airflow.monitoring import MonitorModelOperator, RequestRetrainingOperator
from flightdeck_airflow.notifiers import FlightDeckNotifier

for spec in discover_specs(Settings.from_env().specs_dir):
    with DAG(
        dag_id=f"{spec.name}_monitoring",
        description=f"{spec.title}: drift, skew, decay with late labels; retraining when quality falls",
        doc_md=__doc__ + f"\n\nSpec `{spec.name}` ({spec.fingerprint()}): retrains on "
                         f"{', '.join(spec.monitoring.retrain_on) or 'nothing'}, cooldown {spec.monitoring.cooldown}.",
        schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 21 * * *", timezone=spec.timezone),
                                     assets=scored_asset(spec.name) | curated_asset(spec.name)),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["flightdeck", spec.name, "monitoring"],
        params={
            "as_of": Param("", type="string", description="data date (YYYY-MM-DD) the run is about; "
                                                          "empty: the newest published partition"),
            "partitions": Param("", type="string",
                                description="partitions to re-check (comma separated); empty: what changed"),
        },
        default_args={"owner": spec.owner, "retries": 1, "retry_delay": timedelta(minutes=2),
                      "spec_name": spec.name,
                      "on_failure_callback": FlightDeckNotifier(check="monitoring_failed", severity="critical")},
    ) as dag:
        monitor = MonitorModelOperator(task_id="monitor", as_of="{{ params.as_of }}",
                                       partitions="{{ params.partitions }}", execution_timeout=timedelta(hours=1))
        request = RequestRetrainingOperator(task_id="request_retraining", outlets=[retrain_asset(spec.name)])
        monitor >> request
    globals()[dag.dag_id] = dag
