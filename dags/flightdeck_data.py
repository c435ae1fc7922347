"""Data engineering DAGs: one per dataset spec in include/specs/.

landing zone --sensor--> ingest -> profile -> validate -> wrangle -> split --Asset--> training

This file only wires operators; it imports no pandas, GX, MLflow, LightGBM or sklearn
and makes no database or network call when it is parsed.
"""

from __future__ import annotations

from datetime import timedelta

from flightdeck_airflow.assets import curated_asset, training_data_asset
from flightdeck_airflow.dags import flightdeck_specs, spec_dag
from flightdeck_airflow.operators import (
    IngestDeliveriesOperator,
    ProfileBatchesOperator,
    SplitDatasetOperator,
    ValidateBatchesOperator,
    WrangleBatchesOperator,
)
from flightdeck_airflow.sensors import LandingZoneSensor

for spec in flightdeck_specs():
    with spec_dag(
        spec, "data",
        description="ingest, profile, validate, wrangle, split",
        doc_md=__doc__ + f"\n\nSpec `{spec.name}` ({spec.fingerprint()}): {spec.description}",
        schedule=spec.schedule,
        retries=2, retry_delay=timedelta(minutes=1),
    ):
        wait = LandingZoneSensor(task_id="wait_for_deliveries", poke_interval=30,
                                 timeout=timedelta(hours=12).total_seconds(),
                                 doc_md="Deferrable wait for files in the landing zone; skips the run if none land.")
        ingest = IngestDeliveriesOperator(task_id="ingest")
        profile = ProfileBatchesOperator(task_id="profile")
        validate = ValidateBatchesOperator(task_id="validate")
        wrangle = WrangleBatchesOperator(task_id="wrangle", outlets=[curated_asset(spec.name)])
        split = SplitDatasetOperator(task_id="split", outlets=[training_data_asset(spec.name)])
        wait >> ingest >> profile >> validate >> wrangle >> split
