"""Custom operators, one per pipeline stage, each a thin call into a stage package's runner."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

if TYPE_CHECKING:
    from flightdeck.core.manifests import RegisterManifest


def run_type_of(context: Context) -> str:
    """The run's type as text: ``scheduled``, ``asset_triggered``, ``manual`` or ``backfill``."""
    run_type = getattr(context.get("dag_run"), "run_type", "") or ""
    return str(getattr(run_type, "value", run_type))


class FlightDeckStageOperator(BaseOperator):
    """Run one stage of a dataset spec and push its small manifest to XCom.

    How a stage ends is mapped to Airflow once (:meth:`run_stage`): a ``Rejected`` error (a
    rejected delivery, failed hard expectations, leakage, a malformed spec) fails the task
    without retries, since re-running cannot fix the input; ``NothingToDo`` (no champion, no
    dataset yet) skips it with the reason in the log; any other error retries.

    Args:
        spec_name: the spec's name (file ``<specs_dir>/<spec_name>.yaml``).
        pii_key_conn_id: optional Airflow connection whose password is the pseudonymisation
            key; otherwise ``FLIGHTDECK_PSEUDONYMISATION_KEY`` or the generated local key.
    """

    stage: ClassVar[str] = ""
    template_fields: Sequence[str] = ("spec_name",)
    ui_color = "#f0ede4"

    def __init__(self, *, spec_name: str, pii_key_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec_name = spec_name
        self.pii_key_conn_id = pii_key_conn_id

    def stage_context(self, context: Context) -> Any:
        from flightdeck.core.context import StageContext
        from flightdeck.core.settings import Settings
        from flightdeck.core.spec import spec_named

        settings = Settings.from_env()
        pii_key = None
        if self.pii_key_conn_id:
            from airflow.sdk import BaseHook

            pii_key = BaseHook.get_connection(self.pii_key_conn_id).password
        return StageContext(spec=spec_named(settings.specs_dir, self.spec_name), settings=settings,
                            run_id=context["run_id"], dag_id=self.dag_id, pii_key=pii_key)

    def execute(self, context: Context) -> Mapping[str, Any]:
        from flightdeck.data import runners

        manifest = self.run_stage(getattr(runners, self.stage), self.stage_context(context))
        self.log.info("%s manifest: %s", self.stage, manifest)
        return manifest

    def run_stage(self, stage: Any, *args: Any, **kwargs: Any) -> Any:
        """Call a stage function, mapping how it ends to Airflow: Rejected fails (no retry), NothingToDo skips."""
        from flightdeck.core.errors import NothingToDo, Rejected

        try:
            return stage(*args, **kwargs)
        except NothingToDo as exc:
            raise AirflowSkipException(str(exc)) from exc
        except Rejected as exc:
            raise AirflowFailException(str(exc)) from exc


class IngestDeliveriesOperator(FlightDeckStageOperator):
    """Claim landed files, keep them immutable in raw/, parse, quarantine, pseudonymise, stage.

    Skips (and so does the rest of the run) when nothing new was ingested and no batch of an
    earlier run waits, with the reason in the log: a run never succeeds having done nothing.
    """

    stage = "ingest_deliveries"

    def execute(self, context: Context) -> Mapping[str, Any]:
        from flightdeck.data import runners

        ctx = self.stage_context(context)
        manifest = self.run_stage(runners.ingest_deliveries, ctx)
        self.log.info("%s manifest: %s", self.stage, manifest)
        reason = runners.nothing_ingested(ctx, manifest)
        if reason:
            self.log.info(reason)
            raise AirflowSkipException(reason)
        return manifest


class ProfileBatchesOperator(FlightDeckStageOperator):
    """Profile each staged batch of the run (JSON + HTML report)."""

    stage = "profile_batches"


class ValidateBatchesOperator(FlightDeckStageOperator):
    """Validate each staged batch with the spec's Great Expectations suite."""

    stage = "validate_batches"


class WrangleBatchesOperator(FlightDeckStageOperator):
    """Join outcomes, derive columns and publish curated partitions."""

    stage = "curate_batches"


class SplitDatasetOperator(FlightDeckStageOperator):
    """Time-split the curated data, check leakage, fit wrangling on train, publish a dataset version."""

    stage = "split_dataset"


class TrainModelOperator(FlightDeckStageOperator):
    """Train, compare, tune and choose a model on the current dataset version; track it in MLflow.

    Args:
        window_start: first day (YYYY-MM-DD) of the training window, or empty for all.
        window_end: last day of the training window, or empty for all.
        force: retrain even if a registered version already used this dataset version.
    """

    stage = "train_model"
    template_fields: Sequence[str] = ("spec_name", "window_start", "window_end", "force")

    def __init__(self, *, window_start: str | None = None, window_end: str | None = None,
                 force: bool | str = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.window_start = window_start
        self.window_end = window_end
        self.force = force

    def execute(self, context: Context) -> dict[str, Any]:
        from flightdeck.training import pipeline as training

        ctx = self.stage_context(context)
        window = (self.window_start or None, self.window_end or None)
        force = self.force if isinstance(self.force, bool) else str(self.force).lower() == "true"
        trigger, request = self.training_trigger(context)
        if request is None and not force and not self._may_retrain_on_data(ctx):
            raise AirflowSkipException(
                f"{trigger}: the champion stays until monitoring asks for retraining (spec "
                f"monitoring.retrain_on: {list(ctx.spec.monitoring.retrain_on)}) or someone triggers this DAG")
        if request is not None and request.get("window_start") and window == (None, None):
            window = (str(request["window_start"]), str(request.get("as_of") or "") or None)
        self.log.info("training because: %s", trigger)
        manifest = self.run_stage(training.train_model, ctx, window, force=force, trigger=trigger)
        self.log.info("trained %s: validation %s, test %s", manifest["chosen"], manifest["validation"],
                      manifest["test"])
        return manifest

    @staticmethod
    def training_trigger(context: Context) -> tuple[str, dict[str, Any] | None]:
        """Why this run trains (:func:`flightdeck.training.triggers.training_trigger` on the run's context)."""
        from flightdeck.training.triggers import training_trigger

        events = context.get("triggering_asset_events") or {}
        flat = [(str(getattr(asset, "name", asset)), event.extra) for asset, asset_events in events.items()
                for event in asset_events]
        return training_trigger(flat, run_type_of(context), context["dag_run"].run_id)

    @staticmethod
    def _may_retrain_on_data(ctx: Any) -> bool:
        from flightdeck.training.triggers import may_retrain_on_new_data

        return may_retrain_on_new_data(ctx)


class RegisterModelOperator(FlightDeckStageOperator):
    """Register the model of this run's training task and give it the ``challenger`` alias."""

    stage = "register_model"

    def __init__(self, *, train_task_id: str = "train", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.train_task_id = train_task_id

    def execute(self, context: Context) -> RegisterManifest:
        from flightdeck.training import pipeline as training

        trained = context["ti"].xcom_pull(task_ids=self.train_task_id)
        if not trained:
            raise AirflowFailException(f"no manifest from task {self.train_task_id!r} in this run: nothing to register")
        manifest = training.register_model(self.stage_context(context), trained)
        self.log.info("registered %s version %s as %s", manifest["registered_model"], manifest["version"],
                      manifest["alias"])
        for outlet in self.outlets:  # the gate DAG judges exactly this version
            context["outlet_events"][outlet].extra = {"version": manifest["version"]}
        return manifest
