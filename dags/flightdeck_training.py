"""Training DAGs: one per dataset spec.

Runs when monitoring asks for retraining (the retrain Asset: decay, drift or staleness past
the spec's limits, its reasons in the event), when the data DAG publishes a new dataset
version (Asset), weekly on Monday 04:00 UTC, or by hand with Params (training window,
forced retrain). New data and the weekly schedule train only while nothing is promoted yet,
unless the spec sets `monitoring.retrain_on_new_data`; by hand always trains. `train`
records why it ran (MLflow tag `flightdeck.trigger`), compares model families with
time-series CV, tunes, tries an ensemble and chooses on validation, all tracked in MLflow;
`register` registers the chosen model and moves only `challenger`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param
from flightdeck_airflow.assets import challenger_asset, retrain_asset, training_data_asset
from flightdeck_airflow.dags import flightdeck_specs, spec_dag
from flightdeck_airflow.operators import RegisterModelOperator, TrainModelOperator

for spec in flightdeck_specs():
    with spec_dag(
        spec, "training",
        description="train, track and register a challenger",
        doc_md=__doc__ + f"\n\nSpec `{spec.name}` ({spec.fingerprint()}), registered model "
                         f"`{spec.registered_model_name}`.",
        schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 4 * * 1", timezone="UTC"),
                                     assets=training_data_asset(spec.name) | retrain_asset(spec.name)),
        retries=1, retry_delay=timedelta(minutes=2),
        params={
            "window_start": Param(None, type=["null", "string"], format="date",
                                  description="first day of the training window (YYYY-MM-DD); empty: all"),
            "window_end": Param(None, type=["null", "string"], format="date",
                                description="last day of the training window (YYYY-MM-DD); empty: all"),
            "force": Param(False, type="boolean",
                           description="retrain even if a version was already trained on this dataset version"),
        },
    ):
        train = TrainModelOperator(task_id="train", window_start="{{ params.window_start or '' }}",
                                   window_end="{{ params.window_end or '' }}", force="{{ params.force }}",
                                   execution_timeout=timedelta(hours=2))
        register = RegisterModelOperator(task_id="register", outlets=[challenger_asset(spec.name)])
        train >> register
