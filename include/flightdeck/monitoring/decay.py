"""Decay with late-arriving labels (Monitor 7): realised quality of each partition once its
outcomes are curated, per partition and rolling, against the model's validation figures; orphan
labels recorded.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from flightdeck.core import lake, warehouse
from flightdeck.core.context import StageContext
from flightdeck.core.spec import parse_duration
from flightdeck.monitoring import realised
from flightdeck.monitoring.figures import Figure, status_of
from flightdeck.monitoring.inputs import ModelCache, key_frame, read_curated, read_predictions
from flightdeck.serving.champion import ServingModel


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
        key = lake.staged(ctx.name, source, batch["batch_id"])
        if not ctx.lake.exists(key):
            continue
        frame = lake.read_parquet(ctx.lake, key, ctx.workdir)
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
        status = status_of(below or floor)
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
                       status_of(False, counts["unknown_key"] > 0), 0.0, partition=partition, rows=counts["labels"],
                       model_version=version, detail={"kept_in": "fd_label_orphans"}),
                Figure("decay", "labels_duplicate", float(counts["duplicate"]),
                       status_of(False, counts["duplicate"] > 0),
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

