"""Online serving watched through its request log (``fd_serving_requests``): the REST service and the queue worker.

Three run-level checks over the log rows received in the spec's ``monitoring.online_window`` up to the run:

* ``online``: requests and scored rows, the share of requests refused as invalid (alert above
  ``monitoring.max_invalid_share``) and the requests' latency, p50 and p99;
* ``online_skew``: every logged row whose entity the precompute path also published with the same
  model version *from the same model input* (equal feature hash) must carry the same score:
  ``max |online - precomputed|`` alerts above ``monitoring.max_online_skew`` (1e-9). Rows whose input
  differs from the published one (a schedule changed since, say) are counted, not judged;
* ``online_drift``: the champion's online rows, rebuilt from the logged request rows with the
  training feature code, against the version's training reference: PSI with KS or chi-squared
  per feature and of the scores, by the drift check's rules.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from flightdeck.core import warehouse
from flightdeck.core.context import StageContext
from flightdeck.core.spec import parse_duration
from flightdeck.data import drift
from flightdeck.monitoring.drift_checks import feature_drift_figures, reference_sample
from flightdeck.monitoring.figures import Figure, status_of
from flightdeck.monitoring.inputs import DRIFT_ROWS, key_frame
from flightdeck.serving import predictions
from flightdeck.serving.champion import ServingModel

SKEW_EXAMPLES = 5
"""Worst disagreeing rows kept in the skew figure's detail."""


def request_log(ctx: StageContext, at: datetime) -> pd.DataFrame:
    """The request-log rows of the online window ending at ``at``."""
    since = at - parse_duration(ctx.spec.monitoring.online_window)
    rows = warehouse.queries.serving_log_window(ctx.engine, ctx.name, since, at)
    frame = pd.DataFrame(rows)
    if rows:  # 64-bit hashes beside NULLs (refused requests) would become inexact floats
        frame["feature_hash"] = pd.array([r["feature_hash"] for r in rows], dtype="Int64")
    frame.attrs["window"] = {"since": since.isoformat(), "until": at.isoformat()}
    return frame


def check_online(ctx: StageContext, champion: ServingModel | None, at: datetime, partition: str = "") -> list[Figure]:
    """Traffic, online/precompute skew and online drift of the online window ending at ``at``.

    ``partition`` is the data date the monitoring run is about; the figures are filed under it.
    """
    log = request_log(ctx, at)
    window = log.attrs["window"]
    if log.empty:
        figures = [Figure("online", "requests", 0.0, "insufficient", detail={**window, "reason": "no online requests"})]
    else:
        figures = traffic_figures(log, ctx.spec.monitoring.max_invalid_share, window)
        ok = log[log["status"] == "ok"]
        figures += skew_figures(ctx, ok, window)
        if champion is not None:
            figures += online_drift_figures(ctx, champion, ok[ok["model_version"] == champion.version], window)
    for f in figures:
        f.partition, f.window = partition, "run"
    return figures


def traffic_figures(log: pd.DataFrame, max_invalid_share: float, window: dict[str, str]) -> list[Figure]:
    """Requests, rows, the invalid share and the latency of one window of the log."""
    requests = log.drop_duplicates("request_id")
    n = len(requests)
    invalid = int((requests["status"] == "invalid").sum())
    share = invalid / n
    latency = requests.loc[requests["status"] == "ok", "latency_ms"].to_numpy(dtype="float64")
    detail = {**window, "by_status": {str(k): int(v) for k, v in requests["status"].value_counts().items()},
              "by_endpoint": {str(k): int(v) for k, v in requests["endpoint"].value_counts().items()}}
    out = [Figure("online", "requests", float(n), "ok", rows=int((log["status"] == "ok").sum()), detail=detail),
           Figure("online", "invalid_share", share, status_of(share > max_invalid_share), max_invalid_share,
                  rows=n, detail={"invalid_requests": invalid})]
    for q in (50, 99):
        value = float(np.percentile(latency, q)) if latency.size else None
        out.append(Figure("online", f"latency_p{q}_ms", value, "ok" if latency.size else "insufficient",
                          rows=int(latency.size)))
    return out


def _typed_keys(frame: pd.DataFrame, ctx: StageContext) -> pd.DataFrame:
    """Entity-key columns typed as the spec declares (JSON gives timestamps as text)."""
    out = frame.copy()
    for k in ctx.spec.entity_key:
        if ctx.spec.column_type(k) == "timestamp":
            out[k] = pd.to_datetime(out[k], utc=True)
    return out


def skew_figures(ctx: StageContext, ok: pd.DataFrame, window: dict[str, str]) -> list[Figure]:
    """``max |online - precomputed|`` over the logged rows precomputed by the same version from the same input."""
    limit = ctx.spec.monitoring.max_online_skew
    scored = ok[ok["entity_key"].notna() & ok["feature_hash"].notna()]
    counts: dict[str, Any] = {**window, "online_rows": len(scored)}
    if scored.empty:
        return [Figure("online_skew", "max_abs_diff", None, "insufficient", limit, rows=0,
                       detail={**counts, "reason": "no scored online rows in the window"})]
    keys = [json.loads(k) for k in scored["entity_key"]]
    names = list(ctx.spec.entity_key)
    online = pd.concat([key_frame(_typed_keys(pd.DataFrame(keys), ctx), names),
                        scored[["request_id", "row_number", "model_version", "feature_hash", "score"]]
                        .reset_index(drop=True)], axis=1)
    published = predictions.rows_for_keys(ctx.engine, ctx.spec, keys)
    precomputed = pd.concat([key_frame(published, names), published[[predictions.PARTITION, "model_version",
                                                                     "feature_hash", "score"]]], axis=1)
    online["model_version"] = online["model_version"].astype(str)
    precomputed["model_version"] = precomputed["model_version"].astype(str)
    pairs = online.merge(precomputed, on=[*names, "model_version"], suffixes=("_online", "_precomputed"))
    same = pairs[pairs["feature_hash_online"].astype("int64") == pairs["feature_hash_precomputed"].astype("int64")]
    counts.update(same_version_rows=int(pairs[["request_id", "row_number"]].drop_duplicates().shape[0]),
                  same_input_pairs=len(same),
                  input_differs_pairs=len(pairs) - len(same),
                  not_precomputed_rows=len(scored) - int(pairs[["request_id", "row_number"]]
                                                         .drop_duplicates().shape[0]))
    if same.empty:
        return [Figure("online_skew", "max_abs_diff", None, "insufficient", limit, rows=0,
                       detail={**counts, "reason": "no online row was precomputed by the same version from the "
                                                   "same input"})]
    diff = (same["score_online"] - same["score_precomputed"]).abs()
    worst = same.assign(abs_diff=diff).nlargest(SKEW_EXAMPLES, "abs_diff")
    counts["worst"] = [{"key": {k: r[k] for k in names}, "request_id": r["request_id"],
                        "partition": r[predictions.PARTITION], "online": float(r["score_online"]),
                        "precomputed": float(r["score_precomputed"]), "abs_diff": float(r["abs_diff"])}
                       for _, r in worst.iterrows()]
    counts["disagreeing_pairs"] = int((diff > limit).sum())
    value = float(diff.max())
    return [Figure("online_skew", "max_abs_diff", value, status_of(value > limit), limit, rows=len(same),
                   detail=counts)]


def online_drift_figures(ctx: StageContext, champion: ServingModel, rows: pd.DataFrame,
                         window: dict[str, str]) -> list[Figure]:
    """Feature and score drift of the champion's logged online rows against its training reference."""
    from flightdeck.serving.online import RowsInvalid, curated_rows, parse_rows, row_schema

    cfg = ctx.spec.monitoring.drift
    v = champion.version
    rows = rows[rows["request_row"].notna()]
    if len(rows) > DRIFT_ROWS:  # a uniform sample measures PSI as well and keeps memory flat
        rows = rows.sample(DRIFT_ROWS, random_state=ctx.spec.training.seed)
    if len(rows) < cfg.min_rows:
        return [Figure("online_drift", "features_in_alert", None, "insufficient", float(cfg.alert_features),
                       rows=len(rows), model_version=v,
                       detail={**window, "reason": f"{len(rows)} online rows of version {v}, fewer than "
                                                   f"monitoring.drift.min_rows={cfg.min_rows}"})]
    payload = [json.loads(text) for text in rows["request_row"]]
    try:
        curated = curated_rows(parse_rows(payload, row_schema(ctx.spec, champion.required_columns())), ctx.spec)
    except RowsInvalid as exc:  # logged under another spec version: say so rather than guess
        return [Figure("online_drift", "features_in_alert", None, "error", float(cfg.alert_features),
                       rows=len(rows), model_version=v,
                       detail={**window, "error": f"logged rows no longer parse: {exc}"})]
    current = champion.feature_matrix(curated)
    reference = reference_sample(ctx, champion)
    figures = feature_drift_figures("online_drift", ctx, champion, reference, current, detail=window)
    sd = drift.score_drift(reference["_score"].to_numpy(), rows["score"].to_numpy(dtype="float64"), bins=cfg.bins,
                           min_rows=cfg.min_rows, psi_alert=ctx.spec.monitoring.score_psi_alert, p_value=cfg.p_value)
    figures.append(Figure("online_drift", "score_psi", sd.psi, sd.status, ctx.spec.monitoring.score_psi_alert,
                          rows=sd.current_rows, model_version=v, detail=sd.to_dict()))
    return figures
