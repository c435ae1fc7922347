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
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
from fastapi import Body, FastAPI, Request
from fastapi.responses import JSONResponse

from flightdeck.core import warehouse
from flightdeck.core.registry import RegistryError
from flightdeck.core.schema import ARROW_TYPES
from flightdeck.core.settings import Settings
from flightdeck.core.spec import DatasetSpec, spec_named
from flightdeck.data import wrangle
from flightdeck.serving.champion import (
    ChampionLoadError,
    NoChampionError,
    ScoringInputError,
    ServingModel,
    load_serving_model,
    resolve_model,
)

log = logging.getLogger(__name__)

MAX_ROWS = 10_000
"""Rows one request may carry."""

TYPE_NAMES = {"int": "an integer", "float": "a number", "category": "a string", "string": "a string",
              "timestamp": "an ISO 8601 timestamp", "bool": "true or false"}


# ---------------------------------------------------------------- input rows
class RowsInvalid(ValueError):
    """Rows that cannot be scored; ``errors`` name each field and what was expected (FastAPI's 422 shape)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5]))


@dataclass(frozen=True)
class InputColumn:
    """One column a request row carries: its spec type, whether it must be given, and its row rules."""

    name: str
    type: str
    required: bool
    nullable: bool
    minimum: float | None = None
    maximum: float | None = None
    allowed: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RowSchema:
    """What a request row must look like for one spec and model."""

    columns: tuple[InputColumn, ...]
    ignored: frozenset[str]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


def row_schema(spec: DatasetSpec, needed: Sequence[str]) -> RowSchema:
    """The request row of ``spec``: the features source's columns; those in ``needed`` must be given.

    ``needed`` is what the model's features read (:meth:`ServingModel.required_columns`);
    the derived columns, the target, the labels source's columns and ``_``-prefixed
    columns of a curated row are accepted and ignored (derived ones are recomputed).
    """
    source = spec.features_source
    derived = {d.name for d in spec.wrangle.derive}
    wanted = set(needed)
    columns = []
    for name, col in source.columns.items():
        if col.pii == "drop":
            continue
        quarantined = col.allowed if col.on_unseen == "quarantine" else None
        columns.append(InputColumn(name, col.type, required=name in wanted and col.required, nullable=not col.required,
                                   minimum=col.min, maximum=col.max, allowed=quarantined))
    labels = spec.labels_source
    ignored = derived | {spec.target.name} | (set(labels.columns) - set(source.columns) if labels else set())
    return RowSchema(tuple(columns), frozenset(ignored))


def _error(row: int | None, column: str | None, msg: str, kind: str) -> dict[str, Any]:
    loc: list[Any] = ["body"]
    if row is not None:
        loc.append(row)
    if column is not None:
        loc.append(column)
    return {"loc": loc, "msg": msg, "type": kind}


def _convert(value: Any, column: InputColumn) -> tuple[Any, str | None]:
    """(the typed value, or an error message naming the expected type)."""
    kind = column.type
    expected = f"expected {TYPE_NAMES[kind]}"
    if kind == "bool":
        return (value, None) if isinstance(value, bool) else (None, f"{expected}, got {value!r}")
    if kind in ("category", "string"):
        return (value, None) if isinstance(value, str) else (None, f"{expected}, got {value!r}")
    if kind == "timestamp":
        if not isinstance(value, str):
            return None, f"{expected}, got {value!r}"
        try:
            ts = pd.Timestamp(value)
        except (ValueError, TypeError):
            return None, f"{expected}, got unparseable {value!r}"
        if ts is pd.NaT:
            return None, f"{expected}, got unparseable {value!r}"
        return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")), None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None, f"{expected}, got {value!r}"
    if kind == "int":
        if isinstance(value, float) and not value.is_integer():
            return None, f"{expected}, got {value!r}"
        value = int(value)
    else:
        value = float(value)
    if column.minimum is not None and value < column.minimum:
        return None, f"expected at least {column.minimum:g}, got {value!r}"
    if column.maximum is not None and value > column.maximum:
        return None, f"expected at most {column.maximum:g}, got {value!r}"
    return value, None


def parse_rows(rows: Sequence[Any], schema: RowSchema) -> pd.DataFrame:
    """Request rows (JSON objects) as a frame typed like the curated partition's columns.

    Raises:
        RowsInvalid: every field that is missing, wrongly typed, unparseable or out of range,
            by row (0-based) and column, with what was expected.
    """
    errors: list[dict[str, Any]] = []
    if not rows:
        raise RowsInvalid([_error(None, None, "expected at least one row", "missing")])
    if len(rows) > MAX_ROWS:
        raise RowsInvalid([_error(None, None, f"expected at most {MAX_ROWS} rows, got {len(rows)}", "too_long")])
    known = set(schema.names)
    values: dict[str, list[Any]] = {c.name: [] for c in schema.columns}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            errors.append(_error(i, None, f"expected an object of columns, got {type(row).__name__}", "object_type"))
            continue
        for extra in sorted(set(row) - known - schema.ignored):
            if not str(extra).startswith("_"):
                errors.append(_error(i, str(extra), f"unexpected column; expected one of {schema.names}",
                                     "extra_forbidden"))
        for column in schema.columns:
            value = row.get(column.name)
            if value is None:
                if column.required:
                    what = "missing required column" if column.name not in row else "null in a required column"
                    errors.append(_error(i, column.name, f"{what}; expected {TYPE_NAMES[column.type]}", "missing"))
                values[column.name].append(None)
                continue
            typed, problem = _convert(value, column)
            if problem is None and column.allowed is not None and typed not in column.allowed:
                problem = f"expected one of {list(column.allowed)}, got {typed!r}"
            if problem is not None:
                errors.append(_error(i, column.name, problem, f"{column.type}_type"))
            values[column.name].append(typed)
    if errors:
        raise RowsInvalid(errors)
    arrays = {name: pa.array(vals, type=ARROW_TYPES[c.type], from_pandas=True)
              for (name, vals), c in zip(values.items(), schema.columns, strict=True)}
    return pa.table(arrays).to_pandas()


def curated_rows(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Typed request rows with the spec's derived columns added, as curation adds them."""
    return wrangle.derive_columns(frame, spec.wrangle.derive, spec.timezone)


def split_payload(payload: Any) -> list[Any]:
    """The rows of an MLflow scoring request: ``dataframe_split`` or ``dataframe_records``.

    Raises:
        RowsInvalid: neither form, or a malformed one (naming the field).
    """
    if not isinstance(payload, Mapping):
        raise RowsInvalid([_error(None, None, "expected an object with dataframe_split or dataframe_records",
                                  "object_type")])
    if "dataframe_records" in payload:
        records = payload["dataframe_records"]
        if not isinstance(records, list):
            raise RowsInvalid([_error(None, "dataframe_records", "expected a list of objects", "list_type")])
        return records
    if "dataframe_split" in payload:
        split = payload["dataframe_split"]
        if not isinstance(split, Mapping):
            raise RowsInvalid([_error(None, "dataframe_split", "expected an object with columns and data",
                                      "object_type")])
        columns, data = split.get("columns"), split.get("data")
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise RowsInvalid([_error(None, "dataframe_split.columns", "expected a list of column names",
                                      "list_type")])
        if not isinstance(data, list):
            raise RowsInvalid([_error(None, "dataframe_split.data", "expected a list of rows", "list_type")])
        out = []
        for i, row in enumerate(data):
            if not isinstance(row, list) or len(row) != len(columns):
                raise RowsInvalid([_error(None, f"dataframe_split.data.{i}",
                                          f"expected a list of {len(columns)} values", "list_type")])
            out.append(dict(zip(columns, row, strict=True)))
        return out
    raise RowsInvalid([_error(None, None, f"expected dataframe_split or dataframe_records, got keys "
                                          f"{sorted(map(str, payload))}", "missing")])


MAX_LOGGED_BODY = 65_536
"""Characters of a rejected request's body kept in the request log (the hash covers all of it)."""


def canonical_json(row: Any) -> str:
    """A row (or a body) as canonical JSON: sorted keys, no spaces, what the request log keeps and hashes."""
    return json.dumps(row, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def input_hash(row: Any) -> str:
    """sha256 of a row as canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(canonical_json(row).encode()).hexdigest()


# ---------------------------------------------------------------- the champion, swapped in place
class ChampionSlot:
    """The loaded champion, replaced as a whole when ``@champion`` moves.

    :meth:`refresh` resolves the alias; if it names another version, that version is
    loaded completely, then one attribute is rebound (atomic in Python). Readers take
    :attr:`model` once per request and keep it.
    """

    def __init__(self, spec: DatasetSpec, settings: Settings) -> None:
        self.spec = spec
        self.settings = settings
        self.model: ServingModel | None = None
        self.loaded_at: datetime | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()  # one load at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Load the champion if it moved (or none is loaded); whether a new version was swapped in."""
        with self._lock:
            try:
                version = resolve_model(self.spec, self.settings).version
                current = self.model
                if current is not None and current.version == version:
                    self.last_error = None
                    return False
                model = load_serving_model(self.spec, self.settings, version=version)
            except NoChampionError as exc:  # none yet (503), or the alias was removed: keep what is loaded
                self.last_error = str(exc)
                return False
            except (ChampionLoadError, RegistryError) as exc:  # keep serving what is loaded
                self.last_error = str(exc)
                log.warning("champion of %s not (re)loaded: %s", self.spec.name, exc)
                return False
            previous = self.model.version if self.model else None
            self.model, self.loaded_at, self.last_error = model, datetime.now(UTC), None
            log.info("serving %s (was %s)", model.model_uri, previous)
            return True

    def start(self, every_seconds: float) -> None:
        """Check the alias every ``every_seconds`` in a daemon thread."""
        def loop() -> None:
            while not self._stop.wait(every_seconds):
                try:
                    self.refresh()
                except Exception:  # noqa: BLE001 - the watcher must outlive any one failure
                    log.exception("champion check of %s failed", self.spec.name)

        self._stop.clear()
        self._thread = threading.Thread(target=loop, name=f"champion-{self.spec.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


# ---------------------------------------------------------------- scoring and logging
def score_rows(model: ServingModel, rows: Sequence[Any]) -> pd.DataFrame:
    """Validate and score request rows with one model: entity key, score, label in input order.

    Raises:
        RowsInvalid: a field is missing, of the wrong type, unparseable or out of range.
    """
    schema = row_schema(model.spec, model.required_columns())
    curated = curated_rows(parse_rows(rows, schema), model.spec)
    try:
        scored = model.score_curated(curated)
    except ScoringInputError as exc:
        raise RowsInvalid([_error(None, None, str(exc), "missing")]) from None
    return scored.frame


def _key_json(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value.item() if hasattr(value, "item") else value


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
        frame.attrs["keys"] = [{k: _key_json(v) for k, v in key.items()} for key in keys]
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
