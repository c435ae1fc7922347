"""Gate operators: judge a challenger with the ML Test Score and the promotion gates, then act."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from flightdeck_airflow.operators import FlightDeckStageOperator, run_type_of


class JudgeChallengerOperator(FlightDeckStageOperator):
    """Run every automatable ML Test Score check and the hard gates on one registered version.

    Writes evidence, gate results and the JSON/HTML report (lake + the version's MLflow run)
    and returns the verdict. The version comes from ``version`` (templated), else from the
    triggering Asset event's ``version`` extra, else from the ``challenger`` alias.

    Args:
        version: registered model version to judge; empty for the above fallbacks.
    """

    stage = "judge_version"
    template_fields: Sequence[str] = ("spec_name", "version")
    ui_color = "#e8e4f0"

    def __init__(self, *, version: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.version = version

    def execute(self, context: Context) -> dict[str, Any]:
        from flightdeck.gates import promotion as gates

        ctx = self.stage_context(context)
        version = self.version or self._version_from_asset_event(context)
        return self.run_stage(gates.judge_version, ctx, version or None, run_type=run_type_of(context),
                              min_ml_test_score=ctx.settings.min_ml_test_score)

    @staticmethod
    def _version_from_asset_event(context: Context) -> str | None:
        events = context.get("triggering_asset_events") or {}
        for asset_events in events.values():
            for event in reversed(list(asset_events)):
                version = (event.extra or {}).get("version")
                if version:
                    return str(version)
        return None


class DecidePromotionOperator(FlightDeckStageOperator):
    """Promote the judged version to ``champion`` (keeping ``previous_champion``) or record its rejection.

    A rejection skips this task, so its ``champion`` Asset outlet only fires on a promotion.
    """

    stage = "decide"
    ui_color = "#e4f0e8"

    def __init__(self, *, judge_task_id: str = "judge", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.judge_task_id = judge_task_id

    def execute(self, context: Context) -> dict[str, Any]:
        from flightdeck.gates import promotion as gates

        verdict = context["ti"].xcom_pull(task_ids=self.judge_task_id)
        if not verdict:
            raise AirflowFailException(f"no verdict from task {self.judge_task_id!r} in this run")
        outcome = self.run_stage(gates.decide, self.stage_context(context), verdict)
        if not outcome["promoted"]:
            raise AirflowSkipException(f"version {verdict['version']} rejected; champion stays "
                                       f"{outcome['champion']}: " + " | ".join(verdict["reasons"]))
        self.log.info("version %s is now champion (previous champion %s)", outcome["version"],
                      outcome["previous_champion"])
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = {"version": outcome["version"],
                                                      "previous_champion": outcome["previous_champion"]}
        return outcome
