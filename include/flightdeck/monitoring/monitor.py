"""Monitoring: what the monitoring DAG measures about the model in production, and when it asks to retrain.

Every check writes figures (metric, value, threshold, status, model version, partition, run)
to ``fd_monitoring_metrics`` and, where the ML Test Score has a test for it, evidence to
``fd_test_evidence`` for the champion (``monitor_1`` ... ``monitor_7``):

============  ===========================================================================  =========
check         what                                                                         test
============  ===========================================================================  =========
dependencies  fingerprint of the installed packages and of each source's delivered schema  monitor_1
invariants    the spec's GX suite ran on every scoring batch (the scoring run records it)   monitor_2
skew          a sample of scored rows rebuilt from the raw delivery with the training code  monitor_3
staleness     champion age (data and registry) and input freshness                         monitor_4
stability     NaN, infinite, out-of-range and extreme scores                               monitor_5
performance   scoring throughput and peak memory against the rolling median of runs        monitor_6
decay         realised quality once labels arrive, per partition and rolling, per slice     monitor_7
drift         PSI + KS / chi-squared of each feature against the training reference        (decay)
score_drift   PSI + KS of the scores against the reference scores                          (decay)
============  ===========================================================================  =========

Per-partition figures are keyed by (check, partition): a re-run replaces them, so labels
delivered twice or a monitoring run repeated never count twice. :func:`decide_retraining`
turns alerts of the spec's ``monitoring.retrain_on`` checks into a retraining request,
unless the cooldown holds.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from flightdeck.core import registry, warehouse
from flightdeck.core.errors import NothingToDo
from flightdeck.core.spec import parse_duration
from flightdeck.data import drift, ingest, runners
from flightdeck.data.runners import StageContext
from flightdeck.monitoring import realised
from flightdeck.serving import predictions
from flightdeck.serving.champion import NoChampionError, ServingModel, load_serving_model, resolve_model

log = logging.getLogger(__name__)

STATUSES = ("ok", "warn", "alert", "no_labels", "insufficient", "error")
MONITOR_TESTS = {"dependencies": "monitor_1", "invariants": "monitor_2", "skew": "monitor_3",
                 "staleness": "monitor_4", "stability": "monitor_5", "performance": "monitor_6",
                 "decay": "monitor_7"}
QUALITY_CHECKS = ("decay", "drift", "score_drift", "stability", "skew")
REFERENCE_ROWS = 20_000
DRIFT_ROWS = 100_000


@dataclass
class Figure:
    """One measured figure; becomes one ``fd_monitoring_metrics`` row."""

    check: str
    metric: str
    value: float | None
    status: str
    threshold: float | None = None
    subject: str = ""
    partition: str = ""
    window: str = "partition"
    rows: int | None = None
    model_version: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def row(self, spec_name: str, model_name: str, run_id: str, at: datetime) -> dict[str, Any]:
        value = None if self.value is None or not math.isfinite(float(self.value)) else float(self.value)
        return {"spec_name": spec_name, "check_name": self.check, "metric": self.metric, "subject": self.subject,
                "partition_date": self.partition, "window": self.window, "value": value,
                "threshold": self.threshold, "status": self.status, "rows": self.rows, "model_name": model_name,
                "model_version": self.model_version, "run_id": run_id, "detail": _json(self.detail),
                "measured_at": at}


def _json(value: Any) -> str:
    """Strict JSON (NaN and infinity become null)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, np.generic):
            return clean(v.item())
        return v
    return json.dumps(clean(value), default=str, sort_keys=True, allow_nan=False)


def _status(bad: bool, warn: bool = False) -> str:
    return "alert" if bad else "warn" if warn else "ok"


# ---------------------------------------------------------------- inputs
def published_partitions(ctx: StageContext) -> dict[str, dict[str, Any]]:
    """Partition -> the scoring run row that published what the predictions table holds now."""
    return predictions.latest_published(ctx.engine, ctx.name)


def read_predictions(ctx: StageContext, partition: str) -> pd.DataFrame:
    """The published predictions of one partition: the entity key, score, label, version, feature hash."""
    pt = predictions.ensure_tables(ctx.engine, ctx.spec)
    t = pt.table
    cols = [t.c[k] for k in pt.keys] + [t.c.score, t.c.label, t.c.model_version, t.c.feature_hash]
    query = sa.select(*cols).where(t.c[predictions.PARTITION] == partition)
    with ctx.engine.connect() as conn:
        frame = pd.read_sql_query(query, conn)  # columnar build: much faster than rows -> DataFrame
    return frame.reindex(columns=[*pt.keys, "score", "label", "model_version", "feature_hash"])


def read_scores(ctx: StageContext, partition: str) -> np.ndarray:
    """Only the published scores of one partition (what stability and score drift need)."""
    t = predictions.ensure_tables(ctx.engine, ctx.spec).table
    with ctx.engine.connect() as conn:
        frame = pd.read_sql_query(sa.select(t.c.score).where(t.c[predictions.PARTITION] == partition), conn)
    return frame["score"].to_numpy(dtype="float64")


def read_prediction_sample(ctx: StageContext, partition: str, rows: int) -> pd.DataFrame:
    """A deterministic sample of published rows (key, score, feature hash): the ``rows`` lowest feature hashes.

    The hash of the feature row is as good as random with respect to the rows, and the
    database picks the sample, so a 1M-row partition is never fetched for it.
    """
    pt = predictions.ensure_tables(ctx.engine, ctx.spec)
    t = pt.table
    query = (sa.select(*[t.c[k] for k in pt.keys], t.c.score, t.c.feature_hash)
             .where(t.c[predictions.PARTITION] == partition).order_by(t.c.feature_hash).limit(rows))
    with ctx.engine.connect() as conn:
        return pd.read_sql_query(query, conn)


def read_curated(ctx: StageContext, partition: str) -> pd.DataFrame | None:
    key = runners.curated_key(ctx.name, partition)
    if not ctx.lake.exists(key):
        return None
    return runners.read_lake_parquet(ctx.lake, key, ctx.workdir)


def key_frame(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Entity-key columns as strings, so keys typed differently by each store compare equal."""
    out = pd.DataFrame(index=frame.index)
    for k in keys:
        values = frame[k]
        if pd.api.types.is_datetime64_any_dtype(values):
            out[k] = pd.to_datetime(values, utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S")
        elif pd.api.types.is_float_dtype(values) and values.dropna().eq(values.dropna().round()).all():
            out[k] = values.astype("Int64").astype(str)
        else:
            out[k] = values.astype(str)
    return out


class ModelCache:
    """Serving models by version, loaded once per monitoring run (also versions no longer promoted)."""

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self._models: dict[str, ServingModel] = {}

    def get(self, version: str) -> ServingModel:
        if version not in self._models:
            self._models[version] = load_serving_model(self.ctx.spec, self.ctx.settings, version=version,
                                                       pii_key=self.ctx.pii_key, workdir=self.ctx.workdir,
                                                       require_promoted=False)
        return self._models[version]


# ---------------------------------------------------------------- drift
def reference_sample(ctx: StageContext, model: ServingModel) -> pd.DataFrame:
    """Features and scores of a sample of the version's training split, cached in the lake per version."""
    key = f"monitoring/{ctx.name}/reference/v{model.version}.parquet"
    if ctx.lake.exists(key):
        return runners.read_lake_parquet(ctx.lake, key, ctx.workdir)
    dataset = model.resolved.dataset_version
    train = runners.read_lake_parquet(ctx.lake, f"{runners.dataset_prefix(ctx.name, dataset)}/train.parquet",
                                      ctx.workdir)
    if len(train) > REFERENCE_ROWS:
        train = train.sample(REFERENCE_ROWS, random_state=ctx.spec.training.seed)
    X = model.feature_matrix(train)
    sample = X.copy()
    sample["_score"] = model.predict_matrix(X)
    runners.write_parquet(ctx.lake, key, sample, ctx.workdir)
    return sample


def check_drift(ctx: StageContext, model: ServingModel, curated: pd.DataFrame, scores: np.ndarray,
                partition: str) -> list[Figure]:
    """Drift of every monitored feature and of the scores, against the version's training reference."""
    cfg = ctx.spec.monitoring.drift
    reference = reference_sample(ctx, model)
    if len(curated) > DRIFT_ROWS:  # a uniform sample measures PSI as well and keeps memory flat
        curated = curated.sample(DRIFT_ROWS, random_state=ctx.spec.training.seed)
    current = model.feature_matrix(curated)
    wanted = list(cfg.features) or model.layout.columns
    numeric = [c for c in model.layout.numeric if c in wanted]
    categorical = [c for c in model.layout.categorical if c in wanted]
    results = drift.feature_drift(reference, current, numeric, categorical, psi_warn=cfg.psi_warn,
                                  psi_alert=cfg.psi_alert, p_value=cfg.p_value, min_rows=cfg.min_rows,
                                  bins=cfg.bins)
    v = model.version
    figures = [Figure("drift", "psi", r.psi, r.status, cfg.psi_alert, subject=r.feature, partition=partition,
                      rows=r.current_rows, model_version=v, detail=r.to_dict()) for r in results]
    alerts = [r.feature for r in results if r.status == "alert"]
    judged = [r for r in results if r.status != "insufficient"]
    overall = ("insufficient" if not judged else
               _status(len(alerts) >= cfg.alert_features, bool(alerts) or any(r.status == "warn" for r in results)))
    figures.append(Figure("drift", "features_in_alert", float(len(alerts)), overall, float(cfg.alert_features),
                          partition=partition, rows=len(current), model_version=v,
                          detail={"alert": alerts, "warn": [r.feature for r in results if r.status == "warn"]}))
    sd = drift.score_drift(reference["_score"].to_numpy(), scores, bins=cfg.bins, min_rows=cfg.min_rows,
                           psi_alert=ctx.spec.monitoring.score_psi_alert, p_value=cfg.p_value)
    figures.append(Figure("score_drift", "psi", sd.psi, sd.status, ctx.spec.monitoring.score_psi_alert,
                          partition=partition, rows=sd.current_rows, model_version=v, detail=sd.to_dict()))
    return figures


# ---------------------------------------------------------------- skew
def raw_partition_rows(ctx: StageContext, partition: str, only: pd.DataFrame | None = None) -> pd.DataFrame:
    """The features source's raw deliveries of one batch date, parsed by ingestion's row rules again.

    ``only`` (entity-key columns as strings) keeps just those entities, chunk by chunk.
    """
    spec = ctx.spec
    source_name = spec.features_source_name
    source = spec.features_source
    pii_key = ctx.pii_key or ctx.settings.resolve_pseudonymisation_key()
    frames = []
    for batch in warehouse.list_batches(ctx.engine, ctx.name, statuses=("curated",), source=source_name):
        if batch["batch_date"] != partition:
            continue
        rules = ingest.RowRules(batch_id=batch["batch_id"], batch_date=ingest.batch_date_of(source, batch["file_name"]),
                                received_at=batch["received_at"])
        local = ctx.lake.download(runners.raw_key(ctx.name, source_name, batch["batch_id"], batch["file_name"]),
                                  ctx.workdir / f"skew-{batch['batch_id'][:16]}-{batch['file_name']}")
        try:
            offset = 1
            for chunk in ingest.read_delivery(local, source, batch["file_name"], ctx.settings.chunk_rows):
                start, chunk_rows = offset, len(chunk)
                offset += chunk_rows
                if only is not None:
                    chunk = chunk[_may_match(chunk, only, spec)]
                    if chunk.empty:
                        continue
                parsed = ingest.parse_rows(chunk, spec, source, rules, start, pii_key)
                accepted = parsed.accepted.drop(columns=["_batch_id", "_row_number"])
                if only is not None:
                    wanted = key_frame(accepted, list(spec.entity_key)).merge(
                        only, how="left", indicator="_hit")["_hit"].eq("both").to_numpy()
                    accepted = accepted[wanted]
                frames.append(accepted)
        finally:
            local.unlink(missing_ok=True)
    if not frames:
        return pd.DataFrame()
    # a key delivered again replaces the earlier row, as curation does (batches are listed oldest first)
    return pd.concat(frames, ignore_index=True).drop_duplicates(list(spec.entity_key), keep="last",
                                                                ignore_index=True)


def _may_match(raw: pd.DataFrame, only: pd.DataFrame, spec: Any) -> np.ndarray:
    """Rows of a raw (text) chunk whose key values could be one of ``only``'s entities.

    A cheap superset of the exact match, so only those rows are parsed again: numeric key
    columns compare as numbers, unpseudonymised text and category columns as stripped text;
    other key columns do not filter.
    """
    keep = np.ones(len(raw), dtype=bool)
    for column in spec.entity_key:
        col = spec.features_source.columns.get(column)
        if col is None or column not in raw.columns or column not in only.columns:
            continue
        text = raw[column].astype(str).str.strip()
        if col.type in ("int", "float"):
            wanted = set(pd.to_numeric(only[column], errors="coerce").dropna().astype("float64"))
            keep &= pd.to_numeric(text, errors="coerce").astype("float64").isin(wanted).to_numpy()
        elif col.type in ("category", "string") and not col.pii:
            keep &= text.isin(set(only[column].astype(str).str.strip())).to_numpy()
    return keep


def check_skew(ctx: StageContext, model: ServingModel, curated: pd.DataFrame, sample: pd.DataFrame,
               partition: str) -> list[Figure]:
    """Training/serving skew on a sample of scored rows (Monitor 3).

    The training code path rebuilds the sample's features from the raw delivery (ingestion
    row rules, wrangling, the feature code with the version's state); the serving path is
    what the scoring run stored (the feature hash) and what it computes from the curated
    partition. Counts the rows whose features differ and, per feature, the rows that differ.

    Args:
        sample: published rows (entity key and ``feature_hash``), e.g. :func:`read_prediction_sample`.
    """
    from flightdeck.data import wrangle

    cfg = ctx.spec.monitoring
    keys = list(ctx.spec.entity_key)
    v = model.version
    if sample.empty:
        return [Figure("skew", "rows_differing_share", None, "insufficient", cfg.max_skew_share,
                       partition=partition, rows=0, model_version=v, detail={"why": "nothing scored"})]
    raw = raw_partition_rows(ctx, partition, only=key_frame(sample, keys).drop_duplicates())
    if raw.empty:
        return [Figure("skew", "rows_differing_share", None, "error", cfg.max_skew_share, partition=partition,
                       rows=0, model_version=v, detail={"why": "no raw delivery of the partition in the catalog"})]
    training_rows = wrangle.wrangle_frame(raw, None, ctx.spec)
    sample_keys = key_frame(sample, keys)
    sample_keys["_pos"] = np.arange(len(sample))

    def align(frame: pd.DataFrame) -> pd.DataFrame:
        joined = key_frame(frame, keys).reset_index(drop=True)
        joined["_row"] = np.arange(len(joined))
        m = sample_keys.merge(joined, on=keys, how="left")
        return m

    raw_pos = align(training_rows)
    cur_pos = align(curated)
    if not len(raw_pos) == len(cur_pos) == len(sample):
        raise ValueError(f"partition {partition}: entity keys are not unique in the raw or curated rows "
                         f"({len(raw_pos)} raw and {len(cur_pos)} curated matches for {len(sample)} sampled rows)")
    missing_raw = int(raw_pos["_row"].isna().sum())
    found = raw_pos["_row"].notna() & cur_pos["_row"].notna()
    raw_sel = training_rows.iloc[raw_pos.loc[found, "_row"].astype(int).to_numpy()].reset_index(drop=True)
    cur_sel = curated.iloc[cur_pos.loc[found, "_row"].astype(int).to_numpy()].reset_index(drop=True)
    # the training code path: the same wrangling and feature functions training.prepare_data calls
    X_train = model.feature_matrix(raw_sel)
    X_serve = model.feature_matrix(cur_sel)
    stored_hash = sample["feature_hash"].to_numpy()[raw_pos.loc[found, "_pos"].to_numpy()]
    train_hash = pd.util.hash_pandas_object(X_train, index=False).to_numpy().view(np.int64)
    rows_differing = int((train_hash != stored_hash).sum()) + missing_raw
    per_feature = {}
    for column in X_train.columns:
        a, b = X_train[column], X_serve[column]
        if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
            fa, fb = a.astype("float64").to_numpy(), b.astype("float64").to_numpy()
            same = np.isclose(fa, fb, rtol=0, atol=1e-9, equal_nan=True)
        else:
            same = (a.astype(str) == b.astype(str)).to_numpy()
        if (n := int((~same).sum())):
            per_feature[column] = n
    n = len(sample)
    share = rows_differing / n
    status = _status(share > cfg.max_skew_share, rows_differing > 0)
    figures = [Figure("skew", "rows_differing_share", share, status, cfg.max_skew_share,
                      partition=partition, rows=n, model_version=v,
                      detail={"rows_differing": rows_differing, "missing_in_raw": missing_raw,
                              "features_differing": per_feature}),
               Figure("skew", "features_differing", float(len(per_feature)), status if per_feature else "ok", None,
                      partition=partition, rows=n, model_version=v, detail=per_feature)]
    figures += [Figure("skew", "rows_differing", float(k), status, None, subject=col, partition=partition, rows=n,
                       model_version=v) for col, k in per_feature.items()]
    return figures


# ---------------------------------------------------------------- numerical stability, invariants
def check_stability(ctx: StageContext, scores: np.ndarray, partition: str, version: str | None) -> list[Figure]:
    """NaN, infinite and out-of-range scores must not exist; extreme scores are watched (Monitor 5)."""
    cfg = ctx.spec.monitoring
    s = np.asarray(scores, dtype=np.float64)
    n = len(s)
    nan, inf = int(np.isnan(s).sum()), int(np.isinf(s).sum())
    finite = s[np.isfinite(s)]
    out_of_range = int(((finite < 0) | (finite > 1)).sum())
    in_range = finite[(finite >= 0) & (finite <= 1)]  # out-of-range scores are counted above, not twice
    extreme = int(((in_range < cfg.extreme_score) | (in_range > 1 - cfg.extreme_score)).sum())
    share = extreme / n if n else 0.0
    mk = lambda metric, value, status, threshold: Figure(  # noqa: E731
        "stability", metric, value, status, threshold, partition=partition, rows=n, model_version=version)
    return [mk("nan_scores", float(nan), _status(nan > 0), 0.0),
            mk("infinite_scores", float(inf), _status(inf > 0), 0.0),
            mk("out_of_range_scores", float(out_of_range), _status(out_of_range > 0), 0.0),
            mk("extreme_share", share, _status(share > cfg.max_extreme_share, share > cfg.max_extreme_share / 2),
               cfg.max_extreme_share),
            mk("mean_score", float(finite.mean()) if finite.size else None, "ok" if finite.size else "insufficient",
               None)]


def check_invariants(ctx: StageContext, partition: str, run: dict[str, Any]) -> list[Figure]:
    """The spec's GX suite ran on the scoring batch and held (Monitor 2); batches refused count too."""
    details = json.loads(run.get("details") or "{}")
    validation = details.get("validation")
    refused = [r for r in predictions.list_runs(ctx.engine, ctx.name, partition) if r["status"] == "invalid"]
    v = run.get("model_version")
    if not validation and not run.get("rows"):
        return [Figure("invariants", "validated", None, "insufficient", 1.0, partition=partition, rows=0,
                       model_version=v, detail={"why": "an empty partition: nothing to validate"})]
    if not validation:
        return [Figure("invariants", "validated", 0.0, "alert", 1.0, partition=partition, rows=run.get("rows"),
                       model_version=v, detail={"why": "the scoring run recorded no validation of its batch"})]
    ok = bool(validation.get("success"))
    return [Figure("invariants", "validated", 1.0 if ok else 0.0, _status(not ok, bool(validation.get("warnings"))),
                   1.0, partition=partition, rows=validation.get("rows"), model_version=v,
                   detail={k: validation.get(k) for k in ("hard_failures", "warnings", "report_uri")}),
            Figure("invariants", "refused_batches", float(len(refused)), _status(False, bool(refused)), 0.0,
                   partition=partition, model_version=v,
                   detail={"runs": [r["run_id"] for r in refused][:10]})]


# ---------------------------------------------------------------- decay with late labels
def labels_of(ctx: StageContext, partition: str) -> pd.DataFrame:
    """Every delivered outcome row of a batch date (all labels batches), with the batch that carried it."""
    spec = ctx.spec
    source = spec.labels_source_name
    frames = []
    if source is None:
        return pd.DataFrame()
    for batch in warehouse.list_batches(ctx.engine, ctx.name, statuses=("validated", "curated"), source=source):
        if batch["batch_date"] != partition:
            continue
        key = runners.staged_key(ctx.name, source, batch["batch_id"])
        if not ctx.lake.exists(key):
            continue
        frame = runners.read_lake_parquet(ctx.lake, key, ctx.workdir)
        frame["_batch_id"] = batch["batch_id"]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def join_labels(ctx: StageContext, scored: pd.DataFrame, curated: pd.DataFrame) -> pd.DataFrame:
    """Predictions with their realised label (curated, one outcome per key) and the slice columns."""
    spec = ctx.spec
    keys = list(spec.entity_key)
    target = spec.target.name
    slices = [c for c in spec.training.slices if c in curated.columns and c not in keys]
    lab = curated[curated[target].notna()]
    left = pd.concat([key_frame(scored, keys), scored[["score", "label", "model_version"]]], axis=1)
    right = pd.concat([key_frame(lab, keys), lab[[target, *slices]].rename(columns={target: "_y"})], axis=1)
    right = right.drop_duplicates(keys, keep="last")
    return left.merge(right, on=keys, how="inner")  # slice columns of the entity key come from ``left``


def record_label_orphans(ctx: StageContext, partition: str, scored: pd.DataFrame) -> dict[str, int]:
    """Outcomes for keys never scored, and keys delivered more than once, kept in ``fd_label_orphans``.

    Vectorised: only the offending keys are grouped and turned into rows.
    """
    keys = list(ctx.spec.entity_key)
    labels = labels_of(ctx, partition)
    rows: list[dict[str, Any]] = []
    counts = {"labels": 0, "unknown_key": 0, "duplicate": 0}
    if not labels.empty:
        lk = key_frame(labels, keys)
        lk["_batch_id"] = labels["_batch_id"].to_numpy()
        counts["labels"] = len(lk)
        known = key_frame(scored, keys).drop_duplicates()
        marked = lk.merge(known, on=keys, how="left", indicator="_known")
        unknown = (marked["_known"] == "left_only").to_numpy()
        repeated = lk.duplicated(keys, keep=False).to_numpy()
        at = warehouse.now()
        for reason, mask in (("unknown_key", unknown), ("duplicate", repeated)):
            if not mask.any():
                continue
            offending = lk[mask].groupby(keys, dropna=False, sort=True)["_batch_id"].agg(list).reset_index()
            if reason == "duplicate":
                offending = offending[offending["_batch_id"].map(len) > 1]
            counts[reason] = len(offending)
            for rec in offending.itertuples(index=False, name=None):
                key, batch_ids = rec[:-1], rec[-1]
                rows.append({"spec_name": ctx.name, "partition_date": partition,
                             "entity_key": json.dumps(dict(zip(keys, key, strict=True)), sort_keys=True),
                             "reason": reason, "occurrences": len(batch_ids), "batch_ids": json.dumps(batch_ids),
                             "run_id": ctx.run_id, "recorded_at": at})
    warehouse.replace_rows(ctx.engine, warehouse.label_orphans, {"spec_name": ctx.name, "partition_date": partition},
                           rows)
    return counts


def reference_metric(model_tags: dict[str, str], metric: str) -> float | None:
    """What the version promised: its metric on the frozen test split (registry tag ``test.<metric>``)."""
    value = model_tags.get(f"test.{metric}")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def decay_figures(ctx: StageContext, joined: pd.DataFrame, partition: str, window: str, threshold: float,
                  version: str | None, reference: float | None, detail: dict[str, Any]) -> list[Figure]:
    """Realised metrics of labelled predictions, overall and per slice, judged against the version's promise."""
    cfg = ctx.spec.monitoring.decay
    n = len(joined)
    lower_is_better = cfg.metric == "log_loss"
    limit = None
    if reference is not None:
        limit = reference + cfg.max_drop if lower_is_better else reference - cfg.max_drop
    if n == 0:
        return [Figure("decay", cfg.metric, None, "no_labels", limit, partition=partition, window=window, rows=0,
                       model_version=version, detail={**detail, "why": "no labels yet", "reference": reference})]
    y = joined["_y"].astype(int).to_numpy()
    p = joined["score"].astype("float64").to_numpy()
    usable = np.isfinite(p) & (p >= 0) & (p <= 1)
    if not usable.all():  # stability alerts on them; quality is judged on the rest
        detail = {**detail, "unusable_scores": int((~usable).sum())}
        y, p, n = y[usable], p[usable], int(usable.sum())
        if n == 0:
            return [Figure("decay", cfg.metric, None, "insufficient", limit, partition=partition, window=window,
                           rows=0, model_version=version, detail={**detail, "why": "no usable score"})]
    metrics = realised.realised_metrics(y, p, threshold)
    value = metrics.get(cfg.metric)
    if n < cfg.min_labelled or value is None:
        status = "insufficient"
    elif limit is None and cfg.min_value is None:
        status = "insufficient"  # nothing to judge against: never "ok" by default
        detail = {**detail, "why": f"the version has no test.{cfg.metric} tag and decay.min_value is not set"}
    else:
        below = (limit is not None and (value > limit if lower_is_better else value < limit))
        floor = cfg.min_value is not None and (value > cfg.min_value if lower_is_better else value < cfg.min_value)
        status = _status(below or floor)
    out = []
    for name, val in metrics.items():
        if name == "rows":
            continue
        is_main = name == cfg.metric
        out.append(Figure("decay", name, None if val is None else float(val),
                          status if is_main else ("ok" if n >= cfg.min_labelled else "insufficient"),
                          limit if is_main else None, partition=partition, window=window, rows=n,
                          model_version=version, detail={**detail, "reference": reference} if is_main else {}))
    if window == "partition":
        usable_rows = joined[np.isfinite(joined["score"].astype("float64")) & joined["score"].between(0, 1)]
        for s in realised.slice_metrics(usable_rows, "_y", "score", [c for c in ctx.spec.training.slices
                                                                      if c in joined.columns], threshold):
            val = s.get(cfg.metric)
            out.append(Figure("decay", cfg.metric, None if val is None else float(val),
                              s.get("status", "ok") if val is not None else "insufficient", None,
                              subject=s["subject"], partition=partition, window=window, rows=s["rows"],
                              model_version=version))
    return out


def check_decay(ctx: StageContext, partition: str, run: dict[str, Any], models: ModelCache,
                cache: dict[str, pd.DataFrame]) -> list[Figure] | None:
    """Realised quality of one published partition once its labels arrived; None while it has none."""
    curated = read_curated(ctx, partition)
    target = ctx.spec.target.name
    if curated is None:
        return None
    if curated[target].notna().sum() == 0 and not _has_labels_batch(ctx, partition):
        return None  # nothing delivered yet
    scored = read_predictions(ctx, partition)
    counts = record_label_orphans(ctx, partition, scored)  # also when none of the delivered labels matched
    joined = join_labels(ctx, scored, curated)
    cache[partition] = joined
    version = str(run.get("model_version"))
    model = models.get(version)
    reference = reference_metric(model.resolved.tags, ctx.spec.monitoring.decay.metric)
    detail = {"scoring_run_id": run["run_id"], "labels_fingerprint": _fingerprint(ctx, partition),
              "labels_delivered": counts["labels"], "predictions": len(scored)}
    figures = decay_figures(ctx, joined, partition, "partition", model.threshold, version, reference, detail)
    figures += [Figure("decay", "labels_unknown_key", float(counts["unknown_key"]),
                       _status(False, counts["unknown_key"] > 0), 0.0, partition=partition, rows=counts["labels"],
                       model_version=version, detail={"kept_in": "fd_label_orphans"}),
                Figure("decay", "labels_duplicate", float(counts["duplicate"]), _status(False, counts["duplicate"] > 0),
                       0.0, partition=partition, rows=counts["labels"], model_version=version,
                       detail={"kept_in": "fd_label_orphans", "counted": "once"})]
    return figures


def _has_labels_batch(ctx: StageContext, partition: str) -> bool:
    source = ctx.spec.labels_source_name
    return source is not None and any(
        b["batch_date"] == partition
        for b in warehouse.list_batches(ctx.engine, ctx.name, statuses=("validated", "curated"), source=source))


def rolling_decay(ctx: StageContext, as_of: str, champion: ServingModel, published: dict[str, dict[str, Any]],
                  cache: dict[str, pd.DataFrame]) -> list[Figure]:
    """Realised quality of the champion's labelled predictions over the spec's rolling window up to ``as_of``."""
    cfg = ctx.spec.monitoring.decay
    start = (date.fromisoformat(as_of) - parse_duration(cfg.window)).isoformat()
    frames = []
    partitions = []
    for part in sorted(published):
        if not (start < part <= as_of) or str(published[part]["model_version"]) != champion.version:
            continue
        if part not in cache:
            curated = read_curated(ctx, part)
            if curated is None or curated[ctx.spec.target.name].notna().sum() == 0:
                continue
            cache[part] = join_labels(ctx, read_predictions(ctx, part), curated)
        if len(cache[part]):
            frames.append(cache[part])
            partitions.append(part)
    joined = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["_y", "score"])
    reference = reference_metric(champion.resolved.tags, cfg.metric)
    return decay_figures(ctx, joined, as_of, "rolling", champion.threshold, champion.version, reference,
                         {"window": cfg.window, "partitions": partitions})


def _fingerprint(ctx: StageContext, partition: str) -> str | None:
    from flightdeck.serving.scoring import curated_partitions

    return curated_partitions(ctx).get(partition)


# ---------------------------------------------------------------- run-level checks
def check_staleness(ctx: StageContext, champion: ServingModel, as_of: str) -> list[Figure]:
    """Champion age in data time and in the registry, and input freshness (Monitor 4)."""
    spec = ctx.spec
    max_age = parse_duration(spec.gates.max_model_age)
    max_input = parse_duration(spec.monitoring.max_input_age)
    v = champion.version
    figures = []
    row = warehouse.select_rows(ctx.engine, warehouse.dataset_versions,
                                {"spec_name": ctx.name, "version_id": champion.resolved.dataset_version})
    data_end = row[0]["test_end"] if row else None
    if data_end is not None:
        end_day = pd.Timestamp(data_end).tz_localize("UTC") if pd.Timestamp(data_end).tzinfo is None \
            else pd.Timestamp(data_end)
        age = (pd.Timestamp(as_of).tz_localize(spec.timezone) - end_day.tz_convert(spec.timezone)).days
        figures.append(Figure("staleness", "model_data_age_days", float(age), _status(age > max_age.days),
                              float(max_age.days), partition=as_of, window="run", model_version=v,
                              detail={"newest_training_data": str(data_end)}))
    created = _registry_created(ctx, v)
    if created is not None:
        age_days = (warehouse.now() - created).total_seconds() / 86400
        figures.append(Figure("staleness", "model_registry_age_days", age_days, _status(age_days > max_age.days),
                              float(max_age.days), partition=as_of, window="run", model_version=v,
                              detail={"registered_at": created.isoformat()}))
    batches = warehouse.list_batches(ctx.engine, ctx.name, source=spec.features_source_name,
                                     statuses=("curated",))
    if batches:
        newest = max(_utc(b["received_at"]) for b in batches)
        hours = (warehouse.now() - newest).total_seconds() / 3600
        newest_date = max((b["batch_date"] for b in batches if b["batch_date"]), default=None)
        figures.append(Figure("staleness", "input_age_hours", hours, _status(hours > max_input.total_seconds() / 3600),
                              max_input.total_seconds() / 3600, partition=as_of, window="run", model_version=v,
                              detail={"newest_delivery": newest.isoformat(), "newest_batch_date": newest_date}))
    else:
        figures.append(Figure("staleness", "input_age_hours", None, "alert", max_input.total_seconds() / 3600,
                              partition=as_of, window="run", model_version=v, detail={"why": "no curated input"}))
    return figures


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _registry_created(ctx: StageContext, version: str) -> datetime | None:
    from mlflow.exceptions import MlflowException

    try:
        mv = registry.mlflow_client(ctx.settings.mlflow_tracking_uri).get_model_version(
            ctx.spec.registered_model_name, version)
    except MlflowException as exc:  # a version the registry no longer has: a missing figure
        if registry.is_not_found(exc):
            return None
        raise
    return datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC)


def check_performance(ctx: StageContext, as_of: str) -> list[Figure]:
    """Scoring throughput and peak memory of the newest run against the rolling median (Monitor 6).

    The ratio to the median of the previous ``performance_window`` runs catches a sudden
    regression; the median of the recent half against the older half catches a slow one.
    """
    cfg = ctx.spec.monitoring
    runs = [r for r in predictions.list_runs(ctx.engine, ctx.name) if r["status"] == "published"
            and r["finished_at"] is not None and (r["rows"] or 0) > 0]
    per_run: dict[str, dict[str, float]] = {}
    for r in sorted(runs, key=lambda r: _utc(r["started_at"])):
        agg = per_run.setdefault(r["run_id"], {"rows": 0.0, "seconds": 0.0, "peak_rss_mb": 0.0,
                                               "started": _utc(r["started_at"]).timestamp()})
        agg["rows"] += r["rows"]
        agg["seconds"] += max((_utc(r["finished_at"]) - _utc(r["started_at"])).total_seconds(), 1e-3)
        resources = json.loads(r["details"] or "{}").get("resources") or {}
        agg["peak_rss_mb"] = max(agg["peak_rss_mb"], float(resources.get("peak_rss_mb") or 0.0))
    ordered = sorted(per_run.items(), key=lambda kv: kv[1]["started"])
    if len(ordered) < 2:
        return [Figure("performance", "rows_per_s_ratio", None, "insufficient", 1 / cfg.max_slowdown,
                       partition=as_of, window="run", detail={"runs": len(ordered)})]
    latest_id, latest = ordered[-1]
    previous = [r for _, r in ordered[-1 - cfg.performance_window:-1]]
    tput = [r["rows"] / r["seconds"] for r in previous]
    now_tput = latest["rows"] / latest["seconds"]
    median = float(np.median(tput))
    ratio = now_tput / median if median else None
    figures = [Figure("performance", "rows_per_s", now_tput, "ok", None, partition=as_of, window="run",
                      rows=int(latest["rows"]), detail={"scoring_run_id": latest_id}),
               Figure("performance", "rows_per_s_ratio", ratio,
                      _status(ratio is not None and ratio < 1 / cfg.max_slowdown), 1 / cfg.max_slowdown,
                      partition=as_of, window="run", detail={"median_rows_per_s": median, "runs": len(previous)})]
    mems = [r["peak_rss_mb"] for r in previous if r["peak_rss_mb"]]
    if mems and latest["peak_rss_mb"]:
        mem_ratio = latest["peak_rss_mb"] / float(np.median(mems))
        figures.append(Figure("performance", "peak_rss_ratio", mem_ratio, _status(mem_ratio > cfg.max_slowdown),
                              cfg.max_slowdown, partition=as_of, window="run",
                              detail={"peak_rss_mb": latest["peak_rss_mb"], "median_mb": float(np.median(mems))}))
    history = [r["rows"] / r["seconds"] for _, r in ordered[-2 * cfg.performance_window:]]
    if len(history) >= 6:
        half = len(history) // 2
        trend = float(np.median(history[half:]) / np.median(history[:half]))
        figures.append(Figure("performance", "throughput_trend", trend, _status(trend < 1 / cfg.max_slowdown,
                                                                               trend < 0.8),
                              1 / cfg.max_slowdown, partition=as_of, window="rolling",
                              detail={"runs": len(history)}))
    return figures


def environment_fingerprint() -> dict[str, str]:
    """Installed distributions -> version."""
    out = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out[name.lower()] = dist.version
    return dict(sorted(out.items()))


def source_schemas(ctx: StageContext) -> dict[str, dict[str, Any]]:
    """Source -> the schema of its newest delivered batch (as the catalog recorded it)."""
    out = {}
    for name in ctx.spec.sources:
        batches = [b for b in warehouse.list_batches(ctx.engine, ctx.name, source=name) if b.get("schema_json")]
        if batches:
            out[name] = json.loads(batches[-1]["schema_json"])
    return out


def check_dependencies(ctx: StageContext, as_of: str) -> list[Figure]:
    """Fingerprints of the environment and of each upstream schema against the previous run (Monitor 1)."""
    at = warehouse.now()
    current = {"packages": environment_fingerprint(),
               **{f"schema:{s}": schema for s, schema in source_schemas(ctx).items()}}
    fp = warehouse.fingerprints
    figures = []
    rows = []
    for kind, content in current.items():
        text = json.dumps(content, sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()
        with ctx.engine.connect() as conn:
            prev = conn.execute(sa.select(fp.c.digest, fp.c.content, fp.c.run_id)
                                .where(fp.c.spec_name == ctx.name, fp.c.kind == kind, fp.c.run_id != ctx.run_id)
                                .order_by(fp.c.measured_at.desc()).limit(1)).first()
        rows.append({"spec_name": ctx.name, "run_id": ctx.run_id, "kind": kind, "digest": digest, "content": text,
                     "measured_at": at})
        if prev is None:
            figures.append(Figure("dependencies", "changed", 0.0, "ok", 0.0, subject=kind, partition=as_of,
                                  window="run", detail={"baseline": digest[:12]}))
            continue
        changes = diff_mapping(json.loads(prev.content), content) if prev.digest != digest else {}
        figures.append(Figure("dependencies", "changed", float(bool(changes)), _status(bool(changes)), 0.0,
                              subject=kind, partition=as_of, window="run",
                              detail={"previous_run": prev.run_id, "changes": changes}))
    warehouse.replace_rows(ctx.engine, fp, {"spec_name": ctx.name, "run_id": ctx.run_id}, rows)
    return figures


def diff_mapping(before: Any, after: Any) -> dict[str, Any]:
    """Added, removed and changed keys between two fingerprints."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return {"changed": {"before": before, "after": after}} if before != after else {}
    added = {k: after[k] for k in after.keys() - before.keys()}
    removed = {k: before[k] for k in before.keys() - after.keys()}
    changed = {k: [before[k], after[k]] for k in before.keys() & after.keys() if before[k] != after[k]}
    return {k: v for k, v in (("added", added), ("removed", removed), ("changed", changed)) if v}


# ---------------------------------------------------------------- the run
def _already_monitored(ctx: StageContext) -> dict[tuple[str, str], str]:
    """(check, partition) -> the scoring run id (or labels fingerprint) a stored figure was computed from."""
    m = warehouse.monitoring_metrics
    with ctx.engine.connect() as conn:
        rows = conn.execute(sa.select(m.c.check_name, m.c.partition_date, m.c.detail).where(
            m.c.spec_name == ctx.name, m.c.window == "partition", m.c.subject == "",
            # decay has a mean_score figure too (without the fingerprint): pair each check with its own metric
            sa.or_(sa.and_(m.c.check_name == "stability", m.c.metric == "mean_score"),
                   sa.and_(m.c.check_name == "decay", m.c.metric == ctx.spec.monitoring.decay.metric)))).all()
    out = {}
    for check, part, detail in rows:
        d = json.loads(detail or "{}")
        out[(check, part)] = f"{d.get('scoring_run_id')}|{d.get('labels_fingerprint')}"
    return out


class NothingToMonitor(NothingToDo):
    """No champion and no published predictions: a run (e.g. the scheduler's first) has nothing to measure."""


def run_monitoring(ctx: StageContext, as_of: str | None = None, partitions: Sequence[str] | None = None,
                   run_type: str = "manual") -> dict[str, Any]:
    """Run every check once; returns a small manifest (counts, alerts, the champion watched).

    Args:
        as_of: the data date the run is about (default: the newest published partition).
        partitions: partitions to (re)check; default those published or labelled since they were last checked.
        run_type: scheduled | asset_triggered | manual | backfill (the evidence's credit depends on it).
    """
    spec = ctx.spec
    at = warehouse.now()
    published = published_partitions(ctx)
    if as_of is not None:
        predictions.check_partition(as_of)
    if partitions:
        for part in partitions:
            predictions.check_partition(part)
        unknown = sorted(set(partitions) - set(published))
        if unknown:
            raise ValueError(f"partitions {unknown} of spec {ctx.name!r} have no published predictions "
                             f"(published: {len(published)}, newest {max(published) if published else None})")
    try:
        champion_version = resolve_model(spec, ctx.settings).version
    except NoChampionError:
        champion_version = None
    if champion_version is None and not published:
        raise NothingToMonitor(f"spec {ctx.name!r}: no champion and no published predictions yet, nothing to "
                               "monitor (the gates promote a champion, the scoring DAG publishes its predictions)")
    if as_of is None:
        as_of = max(published) if published else at.astimezone(_zone(spec.timezone)).date().isoformat()
    done = _already_monitored(ctx)
    models = ModelCache(ctx)
    cache: dict[str, pd.DataFrame] = {}
    figures: list[Figure] = []
    errors: dict[str, str] = {}
    per_check_partitions: dict[str, list[str]] = {}

    def guarded(check: str, partition: str, fn: Any) -> list[Figure]:
        try:
            return list(fn() or [])
        except Exception as exc:  # noqa: BLE001 - one failing check must not hide the others
            log.exception("monitoring check %s failed on %s", check, partition)
            errors[f"{check}:{partition}"] = f"{type(exc).__name__}: {exc}"
            return [Figure(check, "check_failed", None, "error", partition=partition,
                           window="run" if partition == as_of and check not in QUALITY_CHECKS else "partition",
                           detail={"error": f"{type(exc).__name__}: {exc}"})]

    run_level: list[Figure] = []
    fingerprints = None
    for part in sorted(published):
        run = published[part]
        if partitions and part not in partitions:
            continue
        serving_key = f"{run['run_id']}|None"
        new_serving = bool(partitions) or done.get(("stability", part)) != serving_key
        part_figures: list[Figure] = []
        if new_serving:
            version = str(run["model_version"])

            def serving_checks(part: str = part, run: dict[str, Any] = run, version: str = version) -> list[Figure]:
                model = models.get(version)
                scores = read_scores(ctx, part)
                curated = read_curated(ctx, part)
                if curated is None:
                    raise FileNotFoundError(f"curated partition {part} of {ctx.name!r} is gone")
                out = check_stability(ctx, scores, part, version)
                for f in out:
                    if f.metric == "mean_score":
                        f.detail = {"scoring_run_id": run["run_id"]}
                out += check_invariants(ctx, part, run)
                out += guarded("drift", part, lambda: check_drift(ctx, model, curated, scores, part))
                out += guarded("skew", part, lambda: check_skew(
                    ctx, model, curated, read_prediction_sample(ctx, part, spec.monitoring.skew_sample_rows), part))
                if any(f.status == "error" for f in out):  # not done: the next run checks this partition again
                    for f in out:
                        if f.metric == "mean_score":
                            f.detail = {"scoring_run_id": None, "retry": True}
                return out

            part_figures += guarded("stability", part, serving_checks)
            per_check_partitions.setdefault("serving", []).append(part)
        # decay: once labels arrived, and again whenever they change
        if fingerprints is None:
            from flightdeck.serving.scoring import curated_partitions

            fingerprints = curated_partitions(ctx)
        labelled_key = f"{run['run_id']}|{fingerprints.get(part)}"
        if bool(partitions) or done.get(("decay", part)) != labelled_key:
            decay = guarded("decay", part, lambda part=part, run=run: check_decay(ctx, part, run, models, cache))
            if decay:
                part_figures += decay
                per_check_partitions.setdefault("decay", []).append(part)
        for check in {f.check for f in part_figures}:
            rows = [f.row(ctx.name, spec.registered_model_name, ctx.run_id, at) for f in part_figures
                    if f.check == check]
            warehouse.replace_rows(ctx.engine, warehouse.monitoring_metrics,
                                   {"spec_name": ctx.name, "check_name": check, "partition_date": part,
                                    "window": "partition"}, rows)
        figures += part_figures

    if champion_version is not None:
        champion = None
        try:
            champion = models.get(champion_version)
        except Exception as exc:  # noqa: BLE001 - visible as error figures (and alerts), the other checks go on
            log.exception("monitoring could not load champion version %s", champion_version)
            errors["champion"] = f"{type(exc).__name__}: {exc}"
            for check in ("decay", "staleness"):
                run_level.append(Figure(check, "check_failed", None, "error", partition=as_of, window="run",
                                        model_version=champion_version,
                                        detail={"error": f"cannot load the champion: {errors['champion']}"}))
        if champion is not None:
            run_level += guarded("decay", as_of, lambda: rolling_decay(ctx, as_of, champion, published, cache))
            run_level += guarded("staleness", as_of, lambda: check_staleness(ctx, champion, as_of))
    run_level += guarded("performance", as_of, lambda: check_performance(ctx, as_of))
    run_level += guarded("dependencies", as_of, lambda: check_dependencies(ctx, as_of))
    for f in run_level:
        if f.window == "partition":
            f.window = "run"
    for (check, window) in {(f.check, f.window) for f in run_level}:
        rows = [f.row(ctx.name, spec.registered_model_name, ctx.run_id, at) for f in run_level
                if f.check == check and f.window == window]
        warehouse.replace_rows(ctx.engine, warehouse.monitoring_metrics,
                               {"spec_name": ctx.name, "check_name": check, "partition_date": as_of,
                                "window": window}, rows)
    figures += run_level
    evidence = record_monitoring_evidence(ctx, figures, champion_version, run_type, at) if champion_version else []
    alerts = [f for f in figures if f.status in ("alert", "error") and f.subject == ""]
    return {"spec": ctx.name, "run_id": ctx.run_id, "as_of": as_of, "champion": champion_version,
            "partitions": per_check_partitions, "figures": len(figures),
            "status": {s: sum(1 for f in figures if f.status == s) for s in STATUSES},
            "alerts": [summarise(f) for f in alerts][:50], "errors": errors, "evidence": evidence}


def _zone(tz: str) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(tz)


def summarise(f: Figure) -> dict[str, Any]:
    """A figure as a small JSON-able dict (what alerts and the manifest carry)."""
    return {"check": f.check, "metric": f.metric, "subject": f.subject, "partition": f.partition, "window": f.window,
            "value": None if f.value is None or not math.isfinite(f.value) else round(float(f.value), 6),
            "threshold": f.threshold, "status": f.status, "model_version": f.model_version}


def record_monitoring_evidence(ctx: StageContext, figures: Sequence[Figure], version: str, run_type: str,
                               at: datetime) -> list[dict[str, Any]]:
    """One ``monitor_*`` evidence row per check that ran (pass, fail on an alert, error if it crashed)."""
    from flightdeck.gates import rubric
    from flightdeck.training.pipeline import code_version

    freshness = parse_duration(ctx.spec.gates.freshness)
    rows = []
    for check, test_id in MONITOR_TESTS.items():
        mine = [f for f in figures if f.check == check]
        if not mine:
            continue
        statuses = {f.status for f in mine}
        if statuses <= {"no_labels", "insufficient"}:
            outcome = "not_run"
        elif "error" in statuses:
            outcome = "error"
        else:
            outcome = "fail" if "alert" in statuses else "pass"
        alerts = [summarise(f) for f in mine if f.status in ("alert", "error")][:20]
        rows.append({"model_name": ctx.spec.registered_model_name, "model_version": str(version), "test_id": test_id,
                     "run_id": ctx.run_id, "section": "monitor", "mode": "automated", "outcome": outcome,
                     "metrics": _json({"figures": len(mine), "statuses": sorted(statuses), "alerts": alerts}),
                     "threshold": None, "artifact_uri": None,
                     "detail": f"{rubric.TESTS[test_id].name}: {len(mine)} figures, {', '.join(sorted(statuses))}",
                     "dag_id": ctx.dag_id, "run_type": run_type, "code_version": code_version(),
                     "checked_at": at, "valid_until": at + freshness})
    warehouse.replace_rows(ctx.engine, warehouse.test_evidence,
                           {"model_name": ctx.spec.registered_model_name, "model_version": str(version),
                            "run_id": ctx.run_id}, rows)
    return [{"test": r["test_id"], "outcome": r["outcome"]} for r in rows]


# ---------------------------------------------------------------- the loop
@dataclass(frozen=True)
class RetrainDecision:
    """What the monitoring run asks of the training DAG."""

    action: str  # retrain | cooldown | none
    reasons: tuple[dict[str, Any], ...]
    as_of: str
    model_version: str | None
    cooldown_until: str | None = None
    window_start: str | None = None

    @property
    def retrain(self) -> bool:
        return self.action == "retrain"

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "reasons": list(self.reasons), "as_of": self.as_of,
                "model_version": self.model_version, "cooldown_until": self.cooldown_until,
                "window_start": self.window_start}

    def reason_text(self) -> str:
        return "; ".join(f"{r['check']} {r['metric']}{'[' + r['subject'] + ']' if r.get('subject') else ''} "
                         f"{r['value']} vs {r['threshold']} ({r['partition']}, {r['window']})" for r in self.reasons)


def retrain_reasons(ctx: StageContext, run_id: str) -> list[dict[str, Any]]:
    """The alerts of this monitoring run that the spec retrains on (``monitoring.retrain_on``)."""
    m = warehouse.monitoring_metrics
    wanted = set(ctx.spec.monitoring.retrain_on)
    metric = ctx.spec.monitoring.decay.metric
    with ctx.engine.connect() as conn:
        rows = conn.execute(sa.select(m).where(m.c.spec_name == ctx.name, m.c.run_id == run_id,
                                               m.c.status == "alert", m.c.subject == "")).mappings().all()
    out = []
    for r in rows:
        if "decay" in wanted and r["check_name"] == "decay" and r["window"] == "rolling" and r["metric"] == metric:
            out.append(r)
        elif "drift" in wanted and ((r["check_name"] == "drift" and r["metric"] == "features_in_alert")
                                    or r["check_name"] == "score_drift"):
            out.append(r)
        elif "staleness" in wanted and r["check_name"] == "staleness" and r["metric"] == "model_data_age_days":
            out.append(r)
    return [{"check": r["check_name"], "metric": r["metric"], "subject": r["subject"], "partition": r["partition_date"],
             "window": r["window"], "value": r["value"], "threshold": r["threshold"],
             "model_version": r["model_version"]} for r in out]


def decide_retraining(ctx: StageContext, run_id: str, as_of: str, champion: str | None,
                      record: bool = True) -> RetrainDecision:
    """Turn this run's retrain-worthy alerts into a request, unless the cooldown since the last one holds.

    Every decision with a reason is recorded in ``fd_retraining`` (keyed by the monitoring
    run, so a re-run replaces it); ``none`` is not recorded. ``record=False`` only says what
    would be decided (the CLI, which cannot emit the retrain Asset, must not start a cooldown).
    """
    cfg = ctx.spec.monitoring
    reasons = tuple(retrain_reasons(ctx, run_id))
    if not reasons or champion is None:
        if record:
            warehouse.replace_rows(ctx.engine, warehouse.retraining, {"spec_name": ctx.name, "run_id": run_id}, [])
        return RetrainDecision("none", reasons, as_of, champion)
    r = warehouse.retraining
    with ctx.engine.connect() as conn:
        # only requests up to this data date: re-deciding an older run must not be cooled down by a later one
        last = conn.execute(sa.select(r.c.as_of).where(r.c.spec_name == ctx.name, r.c.action == "retrain",
                                                       r.c.run_id != run_id, r.c.as_of <= as_of)
                            .order_by(r.c.as_of.desc()).limit(1)).scalar()
    cooldown = parse_duration(cfg.cooldown)
    until = (date.fromisoformat(last) + cooldown).isoformat() if last else None
    action = "cooldown" if until is not None and as_of < until else "retrain"
    window_start = None
    if cfg.retrain_window:
        window_start = (date.fromisoformat(as_of) - parse_duration(cfg.retrain_window) + timedelta(days=1)).isoformat()
    decision = RetrainDecision(action, reasons, as_of, champion, until if action == "cooldown" else
                               (date.fromisoformat(as_of) + cooldown).isoformat(), window_start)
    if not record:
        return decision
    warehouse.replace_rows(ctx.engine, warehouse.retraining, {"spec_name": ctx.name, "run_id": run_id}, [{
        "spec_name": ctx.name, "run_id": run_id, "as_of": as_of, "action": action, "reasons": _json(list(reasons)),
        "model_version": champion, "cooldown_until": decision.cooldown_until, "decided_at": warehouse.now()}])
    return decision


# ---------------------------------------------------------------- reading figures back
def latest_figures(engine: Any, spec_name: str, limit_partitions: int = 3) -> list[dict[str, Any]]:
    """The newest figures per check (what the demo and ``flightdeck monitor`` print)."""
    m = warehouse.monitoring_metrics
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(sa.select(m).where(m.c.spec_name == spec_name)
                                              .order_by(m.c.partition_date.desc(), m.c.check_name, m.c.metric,
                                                        m.c.subject)).mappings()]
    parts = sorted({r["partition_date"] for r in rows}, reverse=True)[:limit_partitions]
    return [r for r in rows if r["partition_date"] in parts]


def format_figures(rows: Sequence[dict[str, Any]], subjects: bool = False) -> str:
    """Figures as an aligned text table (per-feature and per-slice rows only with ``subjects``)."""
    shown = [r for r in rows if subjects or not r["subject"]]
    if not shown:
        return "no monitoring figures yet"
    head = ("partition", "window", "check", "metric", "subject", "value", "threshold", "status", "rows", "version")
    cells = [(r["partition_date"], r["window"], r["check_name"], r["metric"], r["subject"] or "",
              "-" if r["value"] is None else f"{r['value']:.4g}",
              "-" if r["threshold"] is None else f"{r['threshold']:.4g}", r["status"],
              "-" if r["rows"] is None else str(r["rows"]), r["model_version"] or "-") for r in shown]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)
