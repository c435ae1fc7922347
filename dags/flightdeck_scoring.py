"""Scoring DAGs (Precompute serving): one per dataset spec.

champion (models:/<name>@champion, exact version) -> wait_for_partitions -> score[partition]* -> report

Runs when the data DAG has curated newly landed deliveries (Asset), whenever the gates
move the `champion` alias (Asset), so a newly promoted model rescores the open
partitions, and daily in the evening of the spec's time zone as a safety net. Trigger by hand with the
Params `partitions` (backfill: dates to (re)score, comma separated) and `force`.

Each partition is validated with the spec's GX suite, streamed through the training-time
feature code and the packaged model, and published atomically into the predictions table
(one task per partition, dynamic task mapping). This file only wires operators; it
imports no pandas, GX, MLflow, LightGBM or sklearn and touches no database when parsed.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, Param
from flightdeck.core.settings import Settings
from flightdeck.core.spec import discover_specs
from flightdeck_airflow.assets import champion_asset, curated_asset, scored_asset
from flightdeck_airflow.scoring import (
    ResolveChampionOperator,
    ScorablePartitionsSensor,
    ScorePartitionOperator,
    ScoringReportOperator,
)

VERSION = "{{ ti.xcom_pull(task_ids='champion')['model_version'] }}"

for spec in discover_specs(Settings.from_env().specs_dir):
    with DAG(
        dag_id=f"{spec.name}_scoring",
        description=f"{spec.title}: score open partitions with the champion into {spec.predictions_table}",
        doc_md=__doc__ + f"\n\nSpec `{spec.name}` ({spec.fingerprint()}): model `{spec.registered_model_name}"
                         f"@champion`, table `{spec.predictions_table}`, horizon {spec.serving.horizon}.",
        schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 20 * * *", timezone=spec.timezone),
                                     assets=champion_asset(spec.name) | curated_asset(spec.name)),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["flightdeck", spec.name, "scoring"],
        params={
            "partitions": Param("", type="string",
                                description="backfill: partitions (YYYY-MM-DD, comma separated) to (re)score; "
                                            "empty: the open partitions not yet scored by the champion"),
            "force": Param(False, type="boolean",
                           description="rescore open partitions already published by this version"),
        },
        default_args={"owner": spec.owner, "retries": 2, "retry_delay": timedelta(minutes=1),
                      "spec_name": spec.name},
    ) as dag:
        champion = ResolveChampionOperator(task_id="champion", execution_timeout=timedelta(minutes=30))
        wait = ScorablePartitionsSensor(task_id="wait_for_partitions", model_version=VERSION,
                                        partitions="{{ params.partitions }}", force="{{ params.force }}",
                                        poke_interval=300, timeout=timedelta(hours=12).total_seconds(),
                                        doc_md="Waits (reschedule mode) for curated partitions to score.")
        score = ScorePartitionOperator.partial(
            task_id="score", model_version=VERSION, max_active_tis_per_dagrun=2,
            execution_timeout=timedelta(hours=2),
        ).expand(partition=wait.output)
        report = ScoringReportOperator(task_id="report", outlets=[scored_asset(spec.name)])
        champion >> wait >> score >> report
    globals()[dag.dag_id] = dag
