"""Gate DAGs: one per dataset spec.

Runs when training registers a challenger (Asset), or by hand with a version. `judge`
computes the ML Test Score (Breck et al. 2017) from evidence that its checks produce and
evaluates the hard promotion gates: absolute thresholds, no regression against the
champion (bootstrap CI), a simpler baseline, slices, leakage, reproducibility, numerical
stability and a canary into the shadow table. `decide` moves `champion` (keeping
`previous_champion`) only when every hard gate passes; a rejection is recorded and skips it.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param
from flightdeck_airflow.assets import challenger_asset, champion_asset
from flightdeck_airflow.dags import flightdeck_specs, spec_dag
from flightdeck_airflow.gates import DecidePromotionOperator, JudgeChallengerOperator

for spec in flightdeck_specs():
    with spec_dag(
        spec, "gate",
        description="ML Test Score and champion/challenger promotion",
        doc_md=__doc__ + f"\n\nRegistered model `{spec.registered_model_name}`; thresholds in the spec's `gates:`.",
        schedule=challenger_asset(spec.name),
        tag="gates",
        retries=1, retry_delay=timedelta(minutes=2),
        params={"version": Param(None, type=["null", "string"],
                                 description="registered version to judge; empty: the challenger")},
    ):
        judge = JudgeChallengerOperator(task_id="judge", version="{{ params.version or '' }}",
                                        execution_timeout=timedelta(hours=1))
        decide = DecidePromotionOperator(task_id="decide", outlets=[champion_asset(spec.name)])
        judge >> decide
