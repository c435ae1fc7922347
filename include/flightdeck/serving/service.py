"""The model as a service: the spec's champion behind a FastAPI app (``flightdeck serve <spec>``).

The app scores rows online with the same :class:`~flightdeck.serving.champion.ServingModel`
that precompute scoring uses (the training-time feature code, the dataset version's fills
and caps, the reference joins, the labelled history and the training prior), so an online
score equals the published one for the same row.

* ``POST /predict``: one row (a JSON object) or a batch (a list), shaped like a row of the
  spec's curated partition without its label: the features source's columns (PII columns
  pseudonymised as in the lake); derived columns, the target and ``_``-prefixed columns
  may be sent and are recomputed or ignored. Each row is answered with its entity key,
  score, label (score >= threshold), the model version and the request id (the
  ``X-Request-ID`` header, or generated).
* ``POST /invocations``: MLflow's scoring protocol (``dataframe_split`` or
  ``dataframe_records``), answered ``{"predictions": [scores]}``.
* ``GET /health`` (liveness), ``GET /ready`` (503 until a champion is loaded), ``GET /version``.

A background thread checks ``@champion`` every ``refresh_seconds``; when it moved, the new
version is loaded completely before one reference is swapped. A request keeps the model
it started with, so none fails during a swap. Every request is logged to the warehouse
table ``fd_serving_requests``, one row per scored row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from fastapi import Body, FastAPI, Request
from fastapi.responses import JSONResponse

from flightdeck.core import warehouse
from flightdeck.core.settings import Settings
from flightdeck.core.spec import spec_named
from flightdeck.serving.champion import ServingModel
from flightdeck.serving.online import (  # noqa: F401 - re-exported: the service's row rules
    MAX_LOGGED_BODY,
    MAX_ROWS,
    ChampionSlot,
    InputColumn,
    RowSchema,
    RowsInvalid,
    canonical_json,
    curated_rows,
    input_hash,
    key_json,
    parse_rows,
    row_schema,
    score_rows,
    split_payload,
)

log = logging.getLogger(__name__)

def _log(engine: Any, rows: list[dict[str, Any]]) -> None:
    try:
        warehouse.record_serving_requests(engine, rows)
    except Exception:  # noqa: BLE001 - a failing log must not fail the answer
        log.exception("could not log %d serving rows", len(rows))


def create_app(settings: Settings, spec_name: str, *, refresh_seconds: float = 30.0,
               load_at_start: bool = True) -> FastAPI:
    """The FastAPI app serving ``spec_name``'s champion.

    Args:
        settings: where the registry, lake and warehouse are.
        spec_name: the spec whose ``models:/flightdeck-<spec>@champion`` is served.
        refresh_seconds: how often the alias is checked (and a moved champion swapped in).
        load_at_start: load the champion when the app starts (else at the first check).
    """
    from contextlib import asynccontextmanager

    spec = spec_named(settings.specs_dir, spec_name)
    slot = ChampionSlot(spec, settings)
    engine = warehouse.connect(settings.warehouse_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # type: ignore[no-untyped-def]
        if load_at_start:
            from starlette.concurrency import run_in_threadpool

            await run_in_threadpool(slot.refresh)
        slot.start(refresh_seconds)
        try:
            yield
        finally:
            slot.stop()

    app = FastAPI(title=f"FlightDeck {spec.name}", summary=spec.title, lifespan=lifespan)
    app.state.slot = slot

    def refuse(status: int, base: dict[str, Any], body: Any, started: float, model: ServingModel | None,
               detail: Any, message: str) -> JSONResponse:
        """Log a refused request as one row and answer it (422 invalid, 503 unavailable)."""
        _log(engine, [{**base, "row_number": 0, "input_hash": input_hash(body),
                       "request_row": canonical_json(body)[:MAX_LOGGED_BODY],
                       "model_version": model.version if model else None,
                       "latency_ms": (time.perf_counter() - started) * 1000,
                       "status": "invalid" if status == 422 else "unavailable", "error": message}])
        content = {"detail": detail, "request_id": base["request_id"]}
        if status == 422:
            content.update(error_code="BAD_REQUEST", message=message)  # what MLflow's clients read
        return JSONResponse(content, status_code=status, headers={"X-Request-ID": base["request_id"]})

    def answer(request: Request, endpoint: str, body: Any,
               rows: Callable[[], list[Any]]) -> JSONResponse | tuple[dict[str, Any], ServingModel, pd.DataFrame]:
        """Score and log one request: a refusal, or (the log's base row, the model, the scored frame)."""
        started = time.perf_counter()
        request_id = (request.headers.get("x-request-id") or "").strip()[:128] or uuid.uuid4().hex
        base = {"request_id": request_id, "spec_name": spec.name, "endpoint": endpoint,
                "received_at": datetime.now(UTC)}
        model = slot.model  # this request's model, whatever a swap does meanwhile
        if model is None:
            message = (f"no champion loaded for spec {spec.name!r}: "
                       f"{slot.last_error or 'the registry has not answered yet'}")
            return refuse(503, base, body, started, None, message, message)
        try:
            given = rows()
            frame = score_rows(model, given)
        except RowsInvalid as exc:
            return refuse(422, base, body, started, model, exc.errors, str(exc))
        latency = (time.perf_counter() - started) * 1000
        keys = frame[list(spec.entity_key)].to_dict("records")
        frame.attrs["keys"] = [{k: key_json(v) for k, v in key.items()} for key in keys]
        _log(engine, [{**base, "row_number": i + 1, "input_hash": hashlib.sha256(text.encode()).hexdigest(),
                       "request_row": text, "model_version": model.version,
                       "entity_key": json.dumps(key, sort_keys=True), "feature_hash": int(h), "score": float(s),
                       "label": int(lab), "latency_ms": latency, "status": "ok"}
                      for i, (text, key, h, s, lab) in enumerate(zip(
                          map(canonical_json, given), frame.attrs["keys"], frame["feature_hash"], frame["score"],
                          frame["label"], strict=True))])
        return base, model, frame

    @app.get("/health")
    def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> JSONResponse:
        """200 with the version once a champion is loaded; 503 with the reason before."""
        model = slot.model
        if model is None:
            return JSONResponse({"status": "unavailable", "detail": slot.last_error or "no champion loaded yet"},
                                status_code=503)
        return JSONResponse({"status": "ready", "model_version": model.version, "model_uri": model.model_uri})

    @app.get("/version")
    def version() -> dict[str, Any]:
        """What is served: the spec, the model name, version, URI, threshold and when it was loaded."""
        model = slot.model
        return {"spec": spec.name, "model_name": spec.registered_model_name,
                "model_version": model.version if model else None, "model_uri": model.model_uri if model else None,
                "threshold": model.threshold if model else None,
                "loaded_at": slot.loaded_at.isoformat() if slot.loaded_at else None,
                "refresh_seconds": refresh_seconds, "last_error": slot.last_error}

    @app.post("/predict")
    def predict(request: Request, payload: dict[str, Any] | list[Any] = Body(...)) -> JSONResponse:  # noqa: B008
        """Score one row (an object) or a batch (a list of objects)."""
        single = isinstance(payload, dict)
        result = answer(request, "/predict", payload, lambda: [payload] if single else list(payload))
        if isinstance(result, JSONResponse):
            return result
        base, model, frame = result
        out = [{"key": key, "score": float(s), "label": int(lab), "model_version": model.version,
                "request_id": base["request_id"]}
               for key, s, lab in zip(frame.attrs["keys"], frame["score"], frame["label"], strict=True)]
        return JSONResponse(out[0] if single else out,
                            headers={"X-Request-ID": base["request_id"], "X-Model-Version": model.version})

    @app.post("/invocations")
    def invocations(request: Request, payload: Any = Body(...)) -> JSONResponse:  # noqa: B008
        """MLflow's scoring protocol: ``dataframe_split`` or ``dataframe_records`` in, ``predictions`` out."""
        result = answer(request, "/invocations", payload, lambda: split_payload(payload))
        if isinstance(result, JSONResponse):
            return result
        base, model, frame = result
        return JSONResponse({"predictions": [float(s) for s in frame["score"]]},
                            headers={"X-Request-ID": base["request_id"], "X-Model-Version": model.version})

    return app


def serve(settings: Settings, spec_name: str, host: str = "127.0.0.1", port: int = 8000,
          refresh_seconds: float = 30.0) -> int:
    """Run the app with uvicorn until interrupted (``flightdeck serve``)."""
    import uvicorn

    app = create_app(settings, spec_name, refresh_seconds=refresh_seconds)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info")).run()
    return 0
