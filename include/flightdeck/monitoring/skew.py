"""Training/serving skew (Monitor 3): rebuild a sample of served rows from the raw deliveries with
the training feature code and compare with what scoring fed the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from flightdeck.core import lake, warehouse
from flightdeck.core.context import StageContext
from flightdeck.data import ingest
from flightdeck.monitoring.figures import Figure, status_of
from flightdeck.monitoring.inputs import key_frame
from flightdeck.serving.champion import ServingModel


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
        rules = ingest.batch_rules(source, batch)
        local = ctx.lake.download(lake.raw(ctx.name, source_name, batch["batch_id"], batch["file_name"]),
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
    status = status_of(share > cfg.max_skew_share, rows_differing > 0)
    figures = [Figure("skew", "rows_differing_share", share, status, cfg.max_skew_share,
                      partition=partition, rows=n, model_version=v,
                      detail={"rows_differing": rows_differing, "missing_in_raw": missing_raw,
                              "features_differing": per_feature}),
               Figure("skew", "features_differing", float(len(per_feature)), status if per_feature else "ok", None,
                      partition=partition, rows=n, model_version=v, detail=per_feature)]
    figures += [Figure("skew", "rows_differing", float(k), status, None, subject=col, partition=partition, rows=n,
                       model_version=v) for col, k in per_feature.items()]
    return figures

