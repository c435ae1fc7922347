"""Training runners: train and track a model in MLflow, then register it as the challenger.

``train_model`` logs one parent MLflow run per training DAG run with a nested run per
candidate, dataset inputs, evaluation artifacts and the chosen model (a pyfunc that
returns probabilities, the whole Pipeline inside). ``register_model`` registers that
exact run's model and moves only the ``challenger`` alias; ``champion`` is the gates' job.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flightdeck import __version__
from flightdeck.core import lake, registry, warehouse
from flightdeck.core.context import StageContext
from flightdeck.core.errors import NothingToDo
from flightdeck.core.manifests import RegisterManifest, TrainManifest
from flightdeck.core.settings import REPO_ROOT
from flightdeck.training import evaluate, features, train


class NoDatasetError(NothingToDo, LookupError):
    """No dataset version has been published for the spec yet."""


class AlreadyTrained(NothingToDo, LookupError):
    """A registered version was already trained on this dataset version, spec and window."""


def code_version() -> str:
    """``<package version>+<commit>``, with ``.dirty`` when tracked files differ from the commit."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return f"{__version__}+unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{__version__}+{commit[:12]}" + (".dirty" if dirty else "")


def current_dataset(ctx: StageContext) -> dict[str, Any]:
    key = lake.current_dataset(ctx.name)
    if not ctx.lake.exists(key):
        raise NoDatasetError(f"no dataset version for spec {ctx.name!r} yet: run the {ctx.name}_data DAG first")
    pointer = json.loads(ctx.lake.read_bytes(key))
    manifest_key = lake.dataset_manifest(ctx.name, pointer["version_id"])
    return dict(json.loads(ctx.lake.read_bytes(manifest_key)))


def window_bounds(start: str | None, end: str | None, zone: str) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """[start, end] inclusive local dates as [lo, hi) instants; a calendar day, not 24 h, across DST."""
    lo = pd.Timestamp(start).tz_localize(zone) if start else None
    hi = (pd.Timestamp(end) + pd.Timedelta(days=1)).tz_localize(zone) if end else None
    return lo, hi


def load_splits(ctx: StageContext, manifest: dict[str, Any],
                window: tuple[str | None, str | None]) -> dict[str, pd.DataFrame]:
    """The dataset version's splits; a training window (inclusive local dates) narrows the train split only."""
    splits = {n: lake.read_parquet(ctx.lake, lake.dataset_split(ctx.name, manifest["version_id"], n), ctx.workdir)
              for n in ("train", "validation", "test")}
    start, end = window
    if start or end:
        ts = ctx.spec.event_time
        lo, hi = window_bounds(start, end, ctx.spec.timezone)
        frame = splits["train"]  # the window picks training data; validation and test stay the frozen holdouts
        mask = pd.Series(True, index=frame.index)
        if lo is not None:
            mask &= frame[ts] >= lo
        if hi is not None:
            mask &= frame[ts] < hi
        splits["train"] = frame[mask]
    return splits



@dataclass
class PreparedData:
    """A dataset version's splits with the model's features built, as training saw them."""

    splits: dict[str, pd.DataFrame]
    frames: dict[str, pd.DataFrame]
    layout: features.FeatureLayout
    X: dict[str, pd.DataFrame]
    y: dict[str, pd.Series]
    prior: float


def prepare_data(ctx: StageContext, dataset: dict[str, Any], window: tuple[str | None, str | None],
                 check: bool = True) -> PreparedData:
    """Load the splits and build the features exactly as training does (the gates reuse this)."""
    spec = ctx.spec
    splits = load_splits(ctx, dataset, window)
    target = spec.target.name
    if check:
        for name in ("train", "validation"):
            train.check_training_data(splits[name], splits[name][target], name,
                                      spec.training.min_train_rows if name == "train" else 1)
    pii_key = ctx.pii_key or ctx.settings.resolve_pseudonymisation_key()
    references = features.load_references(spec, pii_key)
    history = pd.concat(splits.values(), ignore_index=True)
    prior = float(splits["train"][target].astype("float64").mean())
    frames = {n: features.build_feature_frame(f.reset_index(drop=True), spec, references, history, prior)
              for n, f in splits.items()}
    layout = features.feature_layout(spec, frames["train"])
    X = {n: features.select_features(f, layout) for n, f in frames.items()}
    y = {n: f[target].astype(int) for n, f in frames.items()}
    return PreparedData(splits, frames, layout, X, y, prior)


def dataset_manifest(ctx: StageContext, version_id: str) -> dict[str, Any]:
    """The manifest of one published dataset version."""
    return dict(json.loads(ctx.lake.read_bytes(lake.dataset_manifest(ctx.name, version_id))))


def parse_window_tag(tag: str | None) -> tuple[str | None, str | None]:
    start, _, end = (tag or "..").partition("..")
    return start or None, end or None


def pyfunc_model(pipeline: Any, layout: features.FeatureLayout) -> Any:
    """Wrap a fitted pipeline as an MLflow pyfunc that returns the positive-class probability."""
    from flightdeck.training.model import FlightDeckClassifier

    return FlightDeckClassifier(pipeline, layout.to_dict())


def _environment() -> str:
    return "\n".join(sorted(f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()
                            if d.metadata["Name"])) + "\n"


def tracking(ctx: StageContext) -> Any:
    """The ``mlflow`` module pointed at the spec's experiment ``flightdeck/<spec>`` (created if missing)."""
    import mlflow

    name = registry.ensure_experiment(ctx.settings.mlflow_tracking_uri, ctx.name, ctx.settings.home / "mlartifacts")
    mlflow.set_experiment(name)
    return mlflow


def window_tag(window: tuple[str | None, str | None]) -> str:
    return f"{window[0] or ''}..{window[1] or ''}"


def find_trained_version(ctx: StageContext, dataset_version: str, window: tuple[str | None, str | None]) -> Any:
    """The registered version trained on this dataset version, spec version and window, if any."""
    mlflow = tracking(ctx)
    client = mlflow.MlflowClient()
    versions = client.search_model_versions(f"name = '{_quote(ctx.spec.registered_model_name)}'")
    for v in versions:
        if (v.tags.get("flightdeck.data_snapshot") == dataset_version
                and v.tags.get("flightdeck.spec_version") == ctx.spec.fingerprint()
                and v.tags.get("flightdeck.window_param") == window_tag(window)):
            return v
    return None


def train_model(ctx: StageContext, window: tuple[str | None, str | None] = (None, None),
                force: bool = False, trigger: str = "manual") -> TrainManifest:
    """Train, compare and choose a model on the current dataset version; log everything to MLflow.

    ``trigger`` records why this training ran (e.g. the monitoring alert that asked for it);
    it becomes the ``flightdeck.trigger`` tag of the run and of the registered version.

    Raises:
        NoDatasetError: nothing to train on yet.
        AlreadyTrained: this data was already trained on (training is reproducible); use ``force``.
        TrainingDataError / FeatureError: the data cannot train a model (message names why).
    """
    spec = ctx.spec
    dataset = current_dataset(ctx)
    if not force:
        existing = find_trained_version(ctx, dataset["version_id"], window)
        if existing is not None:
            raise AlreadyTrained(f"version {existing.version} of {spec.registered_model_name} was trained on "
                                 f"dataset {dataset['version_id']} with window {window_tag(window)}; "
                                 "trigger with force=true to retrain")
    data = prepare_data(ctx, dataset, window)
    splits, frames, layout, X, y = data.splits, data.frames, data.layout, data.X, data.y
    target = spec.target.name

    mlflow = tracking(ctx)
    client = mlflow.MlflowClient()
    _kill_stale_runs(mlflow, client, ctx)
    tags = {"flightdeck.spec": spec.name, "flightdeck.spec_version": spec.fingerprint(),
            "airflow.dag_id": ctx.dag_id, "airflow.run_id": ctx.run_id, "git.commit": code_version(),
            "flightdeck.dataset_version": dataset["version_id"], "flightdeck.trigger": trigger[:5000]}
    with mlflow.start_run(run_name=f"train {ctx.run_id}", tags=tags) as parent:
        for name, frame in splits.items():
            ds = mlflow.data.from_pandas(frame, source=dataset["splits"][name]["uri"], targets=target,
                                         name=f"{spec.name}-{name}-{dataset['version_id']}")
            mlflow.log_input(ds, context=name)
        mlflow.log_params({"window_start": window[0], "window_end": window[1], "metric": spec.training.metric,
                           "prior": data.prior,
                           "cv_folds": spec.training.cv_folds, "tuning_budget": spec.training.tuning_budget,
                           "seed": spec.training.seed, "features": ",".join(layout.columns),
                           "train_rows": len(X["train"]), "validation_rows": len(X["validation"])})

        def log_candidate(run_name: str, family: str, params: dict[str, Any], metrics: dict[str, float]) -> None:
            with mlflow.start_run(run_name=run_name, nested=True, tags={**tags, "flightdeck.family": family}):
                mlflow.log_params({k: str(v) for k, v in params.items()} or {"defaults": "true"})
                mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})

        outcome = train.select_model(X["train"], y["train"], X["validation"], y["validation"], spec, layout,
                                     log_candidate)
        val_proba = train.positive_proba(outcome.model, X["validation"])
        test_proba = train.positive_proba(outcome.model, X["test"])  # the frozen holdout, touched once, here
        val_metrics = evaluate.classification_metrics(y["validation"].to_numpy(), val_proba, spec.training.threshold)
        test_metrics = (evaluate.classification_metrics(y["test"].to_numpy(), test_proba, spec.training.threshold)
                        if len(X["test"]) else {})
        mlflow.log_metrics({f"val_{k}": v for k, v in val_metrics.items() if np.isfinite(v)})
        mlflow.log_metrics({f"test_{k}": v for k, v in test_metrics.items() if np.isfinite(v)})
        mlflow.set_tags({"flightdeck.chosen": outcome.chosen_name,
                         "flightdeck.prediction_fingerprint": outcome.prediction_fingerprint})
        unseen = features.count_unseen_categories(_first_pipeline(outcome.model), X["validation"], layout)
        with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp:
            out = Path(tmp)
            importance = _importance(outcome.model, layout)
            evaluate.write_evaluation_artifacts(out / "validation", y["validation"].to_numpy(), val_proba,
                                                frames["validation"], list(spec.training.slices), importance,
                                                f"{spec.name}: {outcome.chosen_name} on validation",
                                                spec.training.threshold)
            pd.DataFrame({"proba": val_proba}).to_parquet(out / "validation_predictions.parquet")  # reproducibility
            (out / "leaderboard.json").write_text(json.dumps(outcome.leaderboard, indent=2, default=str))
            (out / "feature_layout.json").write_text(json.dumps(layout.to_dict(), indent=2))
            (out / "unseen_categories_validation.json").write_text(json.dumps(unseen, indent=2))
            (out / "environment.txt").write_text(_environment())
            (out / "dataset_manifest.json").write_text(json.dumps(dataset, indent=2, default=str))
            mlflow.log_artifacts(str(out), artifact_path="evaluation")
            if spec.path is not None:
                mlflow.log_artifact(str(spec.path), artifact_path="spec")
            batches = [{k: b[k] for k in ("batch_id", "source", "file_name", "batch_date", "status", "rows_in",
                                          "rows_accepted", "rows_quarantined", "validation_success",
                                          "validation_uri", "profile_uri")}
                       for b in warehouse.list_batches(ctx.engine, spec.name, statuses=("curated",))]
            (out / "batches.json").write_text(json.dumps(batches, indent=2, default=str))
            mlflow.log_artifact(str(out / "batches.json"), artifact_path="data_reports")
            for report in ("profile_train.json", "profile_train.html"):
                key = lake.dataset(spec.name, dataset["version_id"], report)
                if ctx.lake.exists(key):
                    (out / report).write_bytes(ctx.lake.read_bytes(key))
                    mlflow.log_artifact(str(out / report), artifact_path="data_reports")
        from mlflow.models import infer_signature

        example = X["train"].head(5)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=pyfunc_model(outcome.model, layout), input_example=example,
            signature=infer_signature(example, train.positive_proba(outcome.model, example)),
        )
        run_id = parent.info.run_id
    return TrainManifest(spec=spec.name, mlflow_run_id=run_id, model_uri=info.model_uri,
                         chosen=outcome.chosen_name, dataset_version=dataset["version_id"],
                         window=list(window), features=layout.columns,
                         prediction_fingerprint=outcome.prediction_fingerprint,
                         trigger=trigger, validation={k: val_metrics[k] for k in ("roc_auc", "log_loss", "n")},
                         test={k: test_metrics[k] for k in ("roc_auc", "log_loss", "n")} if test_metrics else {},
                         training_window=[str(splits["train"][spec.event_time].min()),
                                          str(splits["train"][spec.event_time].max())])


def _first_pipeline(model: Any) -> Any:
    return model.members[0] if isinstance(model, train.SoftVotingEnsemble) else model


def _importance(model: Any, layout: features.FeatureLayout) -> dict[str, float] | None:
    est = _first_pipeline(model).named_steps["model"]
    values = getattr(est, "feature_importances_", None)
    if values is None:
        coef = getattr(est, "coef_", None)
        return None if coef is None or coef.shape[1] != len(layout.columns) else dict(
            zip(layout.columns, np.abs(coef[0]).tolist(), strict=True))
    return dict(zip(layout.columns, np.asarray(values, dtype=float).tolist(), strict=True))


def _kill_stale_runs(mlflow: Any, client: Any, ctx: StageContext) -> None:
    """Mark runs of an earlier, killed attempt of this DAG run as KILLED: nothing may pick them up."""
    exp = client.get_experiment_by_name(f"flightdeck/{ctx.name}")
    runs = client.search_runs([exp.experiment_id],
                              filter_string=f"tags.`airflow.run_id` = '{_quote(ctx.run_id)}' "
                                            "and attributes.status = 'RUNNING'")
    for run in runs:
        client.set_terminated(run.info.run_id, status="KILLED")


def _quote(value: str) -> str:
    return value.replace("'", "''")


def register_model(ctx: StageContext, trained: TrainManifest) -> RegisterManifest:
    """Register the trained run's model once, tag its lineage, move the ``challenger`` alias."""
    mlflow = tracking(ctx)
    client = mlflow.MlflowClient()
    name = ctx.spec.registered_model_name
    run = client.get_run(trained["mlflow_run_id"])
    if run.info.status != "FINISHED":
        raise RuntimeError(f"MLflow run {run.info.run_id} is {run.info.status}; only finished runs are registered")
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException as exc:
        if not registry.is_not_found(exc):
            raise
        client.create_registered_model(name, tags={"flightdeck.spec": ctx.spec.name},
                                       description=ctx.spec.title)
    existing = [v for v in client.search_model_versions(f"name = '{_quote(name)}'")
                if v.tags.get("flightdeck.training_run_id") == run.info.run_id]
    if existing:
        version = existing[0]
    else:
        version = mlflow.register_model(trained["model_uri"], name,
                                        tags={"flightdeck.training_run_id": run.info.run_id})
    tags = {"flightdeck.data_snapshot": trained["dataset_version"],
            "flightdeck.training_window": " .. ".join(trained["training_window"]),
            "flightdeck.features": ",".join(trained["features"]),
            "flightdeck.chosen": trained["chosen"],
            "flightdeck.prediction_fingerprint": trained["prediction_fingerprint"],
            "flightdeck.code_version": code_version(),
            "flightdeck.spec_version": ctx.spec.fingerprint(),
            "flightdeck.window_param": window_tag(tuple(trained["window"])),  # type: ignore[arg-type]
            "flightdeck.trigger": str(trained.get("trigger") or "")[:5000],
            "airflow.dag_id": ctx.dag_id, "airflow.run_id": ctx.run_id,
            **{f"validation.{k}": str(v) for k, v in trained["validation"].items()},
            **{f"test.{k}": str(v) for k, v in trained["test"].items()}}
    for key, value in tags.items():
        client.set_model_version_tag(name, version.version, key, value)
    client.set_registered_model_alias(name, registry.CHALLENGER, version.version)
    return RegisterManifest(spec=ctx.spec.name, registered_model=name, version=str(version.version),
                            alias=registry.CHALLENGER, mlflow_run_id=run.info.run_id)
