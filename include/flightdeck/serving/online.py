"""Online scoring shared by the REST service and the queue worker: request rows, the swapped champion, scores.

* :func:`score_rows` validates request rows (:class:`RowsInvalid` names each field and what
  was expected, in FastAPI's 422 shape) and scores them with
  :meth:`~flightdeck.serving.champion.ServingModel.score_curated`, the feature code of
  training and precompute;
* :class:`ChampionSlot` holds the loaded ``@champion`` and swaps in a moved one whole;
* :func:`input_hash` is what the request log (``fd_serving_requests``) keeps of a row.

No web framework and no broker here: ``service`` (FastAPI) and ``queue`` (Redis Streams) wrap it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa

from flightdeck.core.registry import RegistryError
from flightdeck.core.schema import ARROW_TYPES
from flightdeck.core.settings import Settings
from flightdeck.core.spec import DatasetSpec
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
"""Characters of a refused request's body kept in the request log (the hash covers all of it)."""


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


def key_json(value: Any) -> Any:
    """An entity key value as JSON: timestamps in ISO 8601, numpy scalars as Python ones."""
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value.item() if hasattr(value, "item") else value
