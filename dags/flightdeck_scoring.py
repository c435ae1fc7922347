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

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param
from flightdeck_airflow.assets import champion_asset, curated_asset, scored_asset
from flightdeck_airflow.dags import flightdeck_specs, spec_dag
from flightdeck_airflow.scoring import (
    ResolveChampionOperator,
    ScorablePartitionsSensor,
    ScorePartitionOperator,
    ScoringReportOperator,
)

VERSION = "{{ ti.xcom_pull(task_ids='champion')['model_version'] }}"

for spec in flightdeck_specs():
    with spec_dag(
        spec, "scoring",
        description=f"score open partitions with the champion into {spec.predictions_table}",
        doc_md=__doc__ + f"\n\nSpec `{spec.name}` ({spec.fingerprint()}): model `{spec.registered_model_name}"
                         f"@champion`, table `{spec.predictions_table}`, horizon {spec.serving.horizon}.",
        schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 20 * * *", timezone=spec.timezone),
                                     assets=champion_asset(spec.name) | curated_asset(spec.name)),
        retries=2, retry_delay=timedelta(minutes=1),
        params={
            "partitions": Param("", type="string",
                                description="backfill: partitions (YYYY-MM-DD, comma separated) to (re)score; "
                                            "empty: the open partitions not yet scored by the champion"),
            "force": Param(False, type="boolean",
                           description="rescore open partitions already published by this version"),
        },
    ):
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
