"""Operators and the sensor of the scoring DAG: thin calls into ``flightdeck.serving.scoring``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from flightdeck_airflow.operators import FlightDeckStageOperator, run_type_of

if TYPE_CHECKING:
    from flightdeck.core.manifests import ScoreManifest


def _flag(value: bool | str | None) -> bool:
    return value if isinstance(value, bool) else str(value or "").strip().lower() == "true"


def _dates(value: str | Sequence[str] | None) -> list[str]:
    """Partitions from a Param: a comma/space separated string or a list."""
    if value is None:
        return []
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    return [str(v).strip() for v in items if str(v).strip() and str(v).strip() not in ("None", "[]")]


def _run_day(context: Context, zone: str) -> date:
    """The run's business date (``run_after`` in the spec's time zone)."""
    import pendulum

    dag_run = context.get("dag_run")
    when = getattr(dag_run, "run_after", None) or context.get("logical_date") or pendulum.now("UTC")
    return pendulum.instance(when).in_timezone(zone).date()


class ResolveChampionOperator(FlightDeckStageOperator):
    """Resolve ``models:/<name>@champion`` once for the run, load it, and push its exact version.

    No champion yet: the run is skipped (nothing the gates promoted to score with). A
    champion that cannot be loaded fails the run, naming the version; nothing is written.
    """

    stage = "resolve_champion"

    def execute(self, context: Context) -> dict[str, Any]:
        from flightdeck.serving import scoring

        manifest = self.run_stage(scoring.resolve_champion, self.stage_context(context))
        self.log.info("scoring with %s (@%s)", manifest["model_uri"], manifest["alias"])
        return manifest


class ScorablePartitionsSensor(BaseSensorOperator):
    """Wait until curated partitions need scoring; push their list (the map of the scoring task).

    Open partitions (schedules curated, outcomes not yet) up to the run's date plus the
    spec's horizon that this model version has not yet published from the same input; or
    the partitions a backfill names (``partitions``). Only scheduled runs wait (in
    ``reschedule`` mode, no worker slot held), skipping the run if nothing comes; runs
    triggered by a champion move or by hand score what is there now (possibly nothing).
    If the champion moves while a run waits, the run skips so the move's own run goes next.
    """

    template_fields: Sequence[str] = ("spec_name", "model_version", "partitions", "force")
    ui_color = "#e8f4fd"

    def __init__(self, *, spec_name: str, model_version: str, partitions: str | Sequence[str] | None = None,
                 force: bool | str = False, **kwargs: Any) -> None:
        kwargs.setdefault("soft_fail", True)
        kwargs.setdefault("mode", "reschedule")
        super().__init__(**kwargs)
        self.spec_name = spec_name
        self.model_version = model_version
        self.partitions = partitions
        self.force = force

    def poke(self, context: Context) -> PokeReturnValue:
        from flightdeck.core.context import StageContext
        from flightdeck.core.settings import Settings
        from flightdeck.core.spec import spec_named
        from flightdeck.serving import scoring
        from flightdeck.serving.champion import ScoringInputError

        settings = Settings.from_env()
        spec = spec_named(settings.specs_dir, self.spec_name)
        ctx = StageContext(spec=spec, settings=settings, run_id=context["run_id"], dag_id=self.dag_id)
        champion = scoring.current_champion_version(ctx)
        if scoring.champion_moved(str(self.model_version), champion):
            # the run queued behind this one (triggered by that move) scores with the new champion
            raise AirflowSkipException(f"the champion moved from version {self.model_version} to {champion} "
                                       "while waiting; the run its move triggered scores with it")
        requested = _dates(self.partitions)
        until = scoring.horizon_end(spec.serving.horizon, _run_day(context, spec.timezone))
        try:
            parts = scoring.partitions_to_score(ctx, str(self.model_version), requested, force=_flag(self.force),
                                                until=until)
        except ScoringInputError as exc:
            raise AirflowFailException(str(exc)) from exc
        self.log.info("partitions to score with version %s (until %s): %s", self.model_version, until, parts)
        # only scheduled runs wait for schedules to arrive; a champion move or a person scores what is there now
        return PokeReturnValue(is_done=bool(parts) or run_type_of(context) != "scheduled", xcom_value=parts)


class ScorePartitionOperator(FlightDeckStageOperator):
    """Validate, score (streaming in record batches) and atomically publish one partition.

    Args:
        partition: the batch date (YYYY-MM-DD); mapped over the sensor's list.
        model_version: the version the run resolved (templated from the ``champion`` task).
        validate_batch: run the spec's GX suite on the batch first.
    """

    stage = "score_partition"
    template_fields: Sequence[str] = ("spec_name", "partition", "model_version")

    def __init__(self, *, partition: str, model_version: str, validate_batch: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.partition = partition
        self.model_version = model_version
        self.validate_batch = validate_batch

    def execute(self, context: Context) -> ScoreManifest:
        from flightdeck.serving import scoring

        ctx = self.stage_context(context)
        try:
            manifest = scoring.score_partition(ctx, str(self.partition), str(self.model_version) or None,
                                               validate_batch=self.validate_batch)
        except (scoring.ScoringInputError, scoring.NoChampionError, scoring.ChampionLoadError) as exc:
            raise AirflowFailException(str(exc)) from exc
        if manifest["empty"]:
            self.log.warning("partition %s is empty: published an empty partition", self.partition)
        self.log.info("published %d predictions of %s with version %s", manifest["rows"], self.partition,
                      manifest["model_version"])
        return manifest


class ScoringReportOperator(FlightDeckStageOperator):
    """Sum up the run: partitions, rows, empty partitions and unknown categories."""

    stage = "report_scoring"

    def __init__(self, *, score_task_id: str = "score", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.score_task_id = score_task_id

    def execute(self, context: Context) -> dict[str, Any]:
        pulled = context["ti"].xcom_pull(task_ids=self.score_task_id) or []
        if isinstance(pulled, dict):  # a mapped task that ran once hands back its one value, not a list
            pulled = [pulled]
        manifests = [m for m in pulled if isinstance(m, dict)]
        unknown: dict[str, int] = {}
        for m in manifests:
            for column, n in m.get("unknown_categories", {}).items():
                unknown[column] = unknown.get(column, 0) + n
        summary = {"spec": self.spec_name, "partitions": sorted(m["partition"] for m in manifests),
                   "rows": sum(m["rows"] for m in manifests),
                   "empty": sorted(m["partition"] for m in manifests if m["empty"]),
                   "model_versions": sorted({m["model_version"] for m in manifests}),
                   "unknown_categories": unknown}
        self.log.info("scoring run: %s", summary)
        return summary
