"""The model as a dependency: resolve the spec's champion and predict with training's feature code.

An application (or the scoring DAG) gets a :class:`ServingModel` with
:func:`load_serving_model`: it resolves ``models:/<name>@champion`` in the MLflow registry,
records the exact version it resolved, and loads everything the training-time feature
code needs: the wrangling parameters of the dataset version the model was trained on
(fill values, caps), the reference tables of the spec's joins, the labelled history for
the leakage-safe historical rates and the training prior. Then::

    from flightdeck.serving.champion import load_serving_model
    from flightdeck.core.settings import Settings

    model = load_serving_model("flights", Settings.from_env())    # @champion, version recorded
    scores = model.predict(schedule_rows)                          # rows as the schedule delivers them
    model.version, model.model_uri                                 # what scored them

Categories the model never saw map to its unknown bucket and are counted, never a crash.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flightdeck.core import lake, registry
from flightdeck.core.errors import NothingToDo, Rejected
from flightdeck.core.registry import CHAMPION, PREVIOUS_CHAMPION, PROMOTED, RegistryError
from flightdeck.core.settings import Settings
from flightdeck.core.spec import DatasetSpec, spec_named
from flightdeck.core.storage import Store, open_store
from flightdeck.data import ingest, wrangle
from flightdeck.training import features
from flightdeck.training.compiled import CompiledLightGBM, compile_pipeline

log = logging.getLogger(__name__)


class NoChampionError(NothingToDo, LookupError):
    """The spec's registered model has no version with the alias (the gates have not promoted one)."""


class ChampionLoadError(Rejected, RuntimeError):
    """The resolved model version (named in the message) cannot be loaded or is not promoted."""


class ScoringInputError(Rejected, ValueError):
    """A serving batch cannot be scored: missing columns, failed validation (names what)."""


@dataclass(frozen=True)
class ResolvedModel:
    """One exact registered model version, as resolved from an alias."""

    name: str
    version: str
    alias: str | None
    run_id: str | None
    dataset_version: str | None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def model_uri(self) -> str:
        """The version-pinned URI (never the alias, which may move)."""
        return f"models:/{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {"model_name": self.name, "model_version": self.version, "alias": self.alias,
                "model_uri": self.model_uri, "mlflow_run_id": self.run_id, "dataset_version": self.dataset_version}


def resolve_model(spec: DatasetSpec, settings: Settings, alias: str = CHAMPION,
                  version: str | None = None, require_promoted: bool = True) -> ResolvedModel:
    """Resolve ``alias`` (default ``champion``) to an exact version, or check a given version.

    A given ``version`` must still carry a promoted alias (``champion`` or
    ``previous_champion``): scoring never uses a version the gates have not promoted.
    Monitoring passes ``require_promoted=False`` to reload a version that served earlier.

    Raises:
        NoChampionError: the registry answers that no version has the alias (or no such model).
        ChampionLoadError: the given version is unknown or not promoted.
        RegistryError: the registry cannot answer (server down, store broken); names the tracking URI.
    """
    from mlflow.exceptions import MlflowException

    uri = registry.safe_uri(settings.mlflow_tracking_uri)
    client = registry.mlflow_client(settings.mlflow_tracking_uri)
    name = spec.registered_model_name
    if version is None:
        try:
            mv = client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            if not registry.is_not_found(exc):
                raise RegistryError(f"MLflow registry {uri} failed to resolve {name}@{alias}: {exc}") from exc
            raise NoChampionError(f"registered model {name!r} has no @{alias} version yet: the gates promote "
                                  f"one (the {spec.name}_gate DAG)") from None
        found_alias: str | None = alias
    else:
        try:
            mv = client.get_model_version(name, str(version))
        except MlflowException as exc:
            if not registry.is_not_found(exc):
                raise RegistryError(f"MLflow registry {uri} failed to look up {name} version {version}: "
                                    f"{exc}") from exc
            raise ChampionLoadError(f"{name} version {version}: not in the registry ({exc})") from None
        aliases = set(getattr(mv, "aliases", []) or [])
        if require_promoted and not aliases & set(PROMOTED):
            raise ChampionLoadError(f"{name} version {version} carries none of the aliases {list(PROMOTED)} "
                                    f"(it has {sorted(aliases)}): not promoted by the gates, not scored")
        found_alias = CHAMPION if CHAMPION in aliases else PREVIOUS_CHAMPION if PREVIOUS_CHAMPION in aliases else None
    tags = dict(mv.tags or {})
    return ResolvedModel(name=name, version=str(mv.version), alias=found_alias, run_id=mv.run_id,
                         dataset_version=tags.get("flightdeck.data_snapshot"), tags=tags)


# ---------------------------------------------------------------- training-time state
def read_dataset_manifest(store: Store, spec_name: str, version_id: str) -> dict[str, Any]:
    key = lake.dataset_manifest(spec_name, version_id)
    if not store.exists(key):
        raise FileNotFoundError(f"dataset manifest {store.uri(key)} not found")
    return dict(json.loads(store.read_bytes(key)))




def training_prior(store: Store, spec: DatasetSpec, manifest: dict[str, Any], window_param: str | None,
                   workdir: Path) -> float:
    """The positive rate of the training split the model saw (the training window narrows it)."""
    start, _, end = (window_param or "..").partition("..")
    if not start and not end:
        return float(manifest["splits"]["train"]["positive_rate"])
    key = lake.dataset_split(spec.name, manifest["version_id"], "train")
    frame = lake.read_parquet(store, key, workdir, columns=[spec.event_time, spec.target.name])
    from flightdeck.training.pipeline import window_bounds

    lo, hi = window_bounds(start or None, end or None, spec.timezone)
    mask = pd.Series(True, index=frame.index)
    if lo is not None:
        mask &= frame[spec.event_time] >= lo
    if hi is not None:
        mask &= frame[spec.event_time] < hi
    return float(frame.loc[mask, spec.target.name].astype("float64").mean())


def history_columns(spec: DatasetSpec) -> list[str]:
    by = [c for h in spec.training.history for c in h.by]
    return list(dict.fromkeys([*by, spec.event_time, spec.target.name]))


def load_history(store: Store, spec: DatasetSpec, params: dict[str, Any], workdir: Path) -> pd.DataFrame:
    """All labelled curated rows (only the columns the history features read), wrangled like training.

    The history features only use outcomes known (``label_delay`` after the event) before
    each scored row, so passing every labelled row is leakage-safe.
    """
    columns = history_columns(spec)
    if not spec.training.history:
        return pd.DataFrame(columns=columns)
    frames = [lake.read_parquet(store, k, workdir, columns=columns) for k in lake.curated_keys(store, spec.name)]
    frames = [f[f[spec.target.name].notna()] for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=columns)
    history = pd.concat(frames, ignore_index=True)
    return wrangle.apply_wrangle(history, spec, restrict_params(params, history.columns))


def restrict_params(params: dict[str, Any], columns: Any) -> dict[str, Any]:
    """Wrangling parameters limited to the columns present (history reads only a few)."""
    present = set(columns)
    return {"fill": {k: v for k, v in params.get("fill", {}).items() if k in present},
            "cap": {k: v for k, v in params.get("cap", {}).items() if k in present}}


# ---------------------------------------------------------------- the model
@dataclass
class Scored:
    """Scores of a chunk plus what the model could not place."""

    frame: pd.DataFrame  # entity key columns, score, label, feature_hash
    unknown_categories: dict[str, int]


class ServingModel:
    """A promoted model version with the training-time feature code and state around it.

    Attributes:
        resolved: the exact registry version (name, version, alias it was resolved from).
        threshold: ``serving.threshold`` or ``training.threshold`` of the spec.
        prior: the training split's positive rate (smoothing target of the history rates).
    """

    def __init__(self, spec: DatasetSpec, resolved: ResolvedModel, python_model: Any, wrangle_params: dict[str, Any],
                 references: dict[str, pd.DataFrame], history: pd.DataFrame, prior: float,
                 pii_key: str | None = None) -> None:
        self.spec = spec
        self.resolved = resolved
        self.python_model = python_model
        self.wrangle_params = wrangle_params
        self.references = references
        self.history = history
        self.prior = prior
        self.threshold = spec.serving.threshold if spec.serving.threshold is not None else spec.training.threshold
        self._pii_key = pii_key
        layout = python_model.layout
        self.layout = features.FeatureLayout(tuple(layout["numeric"]), tuple(layout["categorical"]))
        pipeline = python_model.pipeline
        first = pipeline.members[0] if hasattr(pipeline, "members") else pipeline
        self.known_categories = features.known_categories(first, self.layout)
        # the Pipeline as numpy steps + Booster.predict (bit-identical), or None: its own predict_proba
        self.compiled = compile_pipeline(pipeline, spec.training.threads)

    def __repr__(self) -> str:
        return f"ServingModel({self.resolved.model_uri!r}, alias={self.resolved.alias!r})"

    @property
    def version(self) -> str:
        return self.resolved.version

    @property
    def model_uri(self) -> str:
        return self.resolved.model_uri

    def describe(self) -> dict[str, Any]:
        """What scored: version, threshold, prior and the history used (for the run table)."""
        ts = self.history[self.spec.event_time] if len(self.history) else pd.Series(dtype="datetime64[us, UTC]")
        delay = pd.Timedelta(self.spec.label_delay_timedelta)
        return {**self.resolved.to_dict(), "threshold": self.threshold, "prior": self.prior,
                "history_rows": len(self.history),
                "history_known_until": str(ts.max() + delay) if len(ts) else None,
                "features": self.layout.columns}

    @cached_property
    def history_tables(self) -> dict[str, features.HistoryTable]:
        """The history features' prepared outcomes (the same for every batch this model scores)."""
        return features.history_tables(self.history, self.spec)

    # -- feature code shared with training
    def feature_matrix(self, curated: pd.DataFrame, categorical: bool = False) -> pd.DataFrame:
        """Model input from curated rows (delivered + derived columns), exactly as training built it.

        ``categorical`` gives the categorical features as ``Categorical`` of the same texts
        (for the compiled fast path; same values, same feature hashes).
        """
        frame = wrangle.apply_wrangle(curated.reset_index(drop=True), self.spec, self.wrangle_params)
        frame = features.build_feature_frame(frame, self.spec, self.references, self.history, self.prior,
                                             self.history_tables)
        if categorical:
            return features.select_features_categorical(frame, self.layout)
        return features.select_features(frame, self.layout)

    def predict_matrix(self, X: pd.DataFrame) -> np.ndarray:
        """Positive-class probabilities of a feature matrix: the compiled fast path, else the Pipeline's own."""
        if self.compiled is not None:
            return self.compiled.predict(X)
        return np.asarray(self.python_model.pipeline.predict_proba(X))[:, 1]

    def count_unknown(self, X: pd.DataFrame) -> dict[str, int]:
        """Non-missing categorical values the (first) model never saw, per column that has some."""
        if isinstance(self.compiled, CompiledLightGBM):
            return self.compiled.unknown_categories(X)
        out = {}
        for column, known in self.known_categories.items():
            values = X[column]
            n = int((values.notna() & ~values.isin(known)).sum())
            if n:
                out[column] = n
        return out

    def score_curated(self, curated: pd.DataFrame) -> Scored:
        """Score curated rows: entity key, score, label at the threshold and a hash of each feature row."""
        missing = [c for c in self.required_columns() if c not in curated.columns]
        if missing:
            raise ScoringInputError(f"serving batch lacks column(s) {missing} needed by the features "
                                    f"of {self.resolved.model_uri}")
        if len(curated) == 0:
            return Scored(pd.DataFrame({**{k: curated[k] for k in self.spec.entity_key},
                                        "score": pd.Series(dtype="float64"), "label": pd.Series(dtype="int8"),
                                        "feature_hash": pd.Series(dtype="int64")}), {})
        X = self.feature_matrix(curated, categorical=self.compiled is not None and not self.compiled.needs_text)
        score = self.predict_matrix(X)
        out = curated[list(self.spec.entity_key)].reset_index(drop=True)
        out["score"] = score
        out["label"] = (score >= self.threshold).astype("int8")
        out["feature_hash"] = pd.util.hash_pandas_object(X, index=False).to_numpy().view(np.int64)
        return Scored(out, self.count_unknown(X))

    def required_columns(self) -> list[str]:
        """Curated columns the features read: delivered and derived inputs, join keys, the key and event time."""
        spec = self.spec
        needed = [*spec.entity_key, spec.event_time]
        joined = {c for j in spec.training.joins for c in j.columns.values()}
        history = {h.name for h in spec.training.history}
        needed += [c for c in self.layout.columns if c not in joined and c not in history]
        needed += [k for j in spec.training.joins for k in j.keys]
        needed += [c for h in spec.training.history for c in h.by]
        return list(dict.fromkeys(needed))

    # -- for applications: rows as the features source delivers them
    def score_delivered(self, rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Score rows shaped like a delivery of the features source (text or typed columns).

        They go through the ingestion row rules first (typing, ranges, allowed sets,
        duplicate keys, pseudonymisation), then derivation, wrangling and the features.

        Returns:
            (scored rows: key, score, label, feature_hash; rejected rows: row_number,
            reason, column_name, value), row numbers 1-based as in the input.

        Raises:
            ScoringInputError: a column of the features source is missing (named).
        """
        spec = self.spec
        source = spec.features_source
        missing = [c for c in source.columns if c not in rows.columns]
        if missing:
            raise ScoringInputError(f"rows lack column(s) {missing} of source {spec.features_source_name!r}; "
                                    f"expected {list(source.columns)}")
        rules = ingest.RowRules(batch_id="serving", batch_date=None, received_at=datetime.now(UTC))
        pii_key = self._pii_key or Settings.from_env().resolve_pseudonymisation_key()
        parsed = ingest.parse_rows(rows[list(source.columns)], spec, source, rules, 1, pii_key)
        accepted = parsed.accepted.drop(columns=["_batch_id", "_row_number"])
        curated = wrangle.wrangle_frame(accepted, None, spec)
        scored = self.score_curated(curated)
        frame = scored.frame
        frame.insert(0, "row_number", parsed.accepted["_row_number"].to_numpy())
        issues = parsed.issues[["row_number", "reason", "column_name", "value"]].sort_values("row_number")
        frame.attrs["unknown_categories"] = scored.unknown_categories
        return frame, issues.reset_index(drop=True)

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        """Probabilities for delivered-shaped rows, in input order; NaN where a row rule rejects the row."""
        scored, _ = self.score_delivered(rows.reset_index(drop=True))
        out = np.full(len(rows), np.nan)
        out[scored["row_number"].to_numpy(dtype=np.int64) - 1] = scored["score"].to_numpy(dtype="float64")
        return out


def load_serving_model(spec: DatasetSpec | str, settings: Settings, *, alias: str = CHAMPION,
                       version: str | None = None, pii_key: str | None = None,
                       workdir: Path | None = None, require_promoted: bool = True) -> ServingModel:
    """Resolve the champion (or check a given promoted version) and load it with its training-time state.

    Raises:
        NoChampionError: nothing promoted yet.
        ChampionLoadError: the version (named) cannot be loaded, or its dataset version is gone.
    """
    if isinstance(spec, str):
        spec = spec_named(settings.specs_dir, spec)
    workdir = workdir or Path(tempfile.gettempdir())
    resolved = resolve_model(spec, settings, alias=alias, version=version, require_promoted=require_promoted)
    import mlflow.pyfunc

    try:
        pyfunc = mlflow.pyfunc.load_model(resolved.model_uri)
        python_model = pyfunc.unwrap_python_model()
        if not hasattr(python_model, "pipeline") or not hasattr(python_model, "layout"):
            raise TypeError(f"{type(python_model).__name__} is not a FlightDeck packaged model")
    except Exception as exc:  # noqa: BLE001 - any failure to load is the same failure to the caller
        raise ChampionLoadError(f"cannot load {resolved.name} version {resolved.version} "
                                f"({resolved.model_uri}, @{resolved.alias}): {type(exc).__name__}: {exc}") from exc
    store = open_store(settings.lake_uri, settings.s3_endpoint_url)
    if not resolved.dataset_version:
        raise ChampionLoadError(f"{resolved.name} version {resolved.version} has no flightdeck.data_snapshot tag: "
                                "its wrangling parameters are unknown")
    try:
        manifest = read_dataset_manifest(store, spec.name, resolved.dataset_version)
    except FileNotFoundError as exc:
        raise ChampionLoadError(f"{resolved.name} version {resolved.version}: {exc}") from None
    params = manifest["wrangle_params"]
    prior = training_prior(store, spec, manifest, resolved.tags.get("flightdeck.window_param"), workdir)
    pii_key = pii_key or settings.resolve_pseudonymisation_key()
    references = features.load_references(spec, pii_key)
    history = load_history(store, spec, params, workdir)
    log.info("loaded %s (@%s): prior %.4f, %d history rows", resolved.model_uri, resolved.alias, prior, len(history))
    return ServingModel(spec, resolved, python_model, params, references, history, prior, pii_key)
