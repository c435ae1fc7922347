"""Model on demand: request and prediction queues on Redis Streams, answered by ``flightdeck worker <spec>``.

Names, for a spec ``S`` and the prefix ``FLIGHTDECK_QUEUE_PREFIX`` (``flightdeck``):

* ``flightdeck:S:requests``: the request stream. A client adds one entry per request
  (:func:`submit`): ``request_id`` and ``rows``, the JSON of a list of request rows shaped
  as for ``POST /predict``.
* consumer group ``flightdeck-S-workers``: every worker reads the request stream in it,
  a batch at a time (``XREADGROUP``); an entry stays pending until its worker acknowledges it.
* ``flightdeck:S:result:<request_id>``: the answer to a request (JSON), written once
  (``SET NX``, kept ``result_ttl`` seconds): a redelivered request is never answered twice
  with something else. :func:`results` reads these.
* ``flightdeck:S:predictions``: one entry per answer, added only when the answer is first
  written (``request_id``, ``result``): a stream to follow (``XREAD``) instead of polling.
* ``flightdeck:S:dead-letters``: entries that failed ``max_deliveries`` times, with the reason.

Delivery is at least once. A worker answers a batch in this order: the answers are written
(once, by request id), the rows are logged to ``fd_serving_requests`` (once per request id
and row), then the entries are acknowledged and deleted. A worker killed anywhere in between
leaves its entries pending; after ``claim_idle_ms`` another worker claims them (``XCLAIM``),
finds the answers already written or writes them, logs what is missing and acknowledges.

The scores are those of the REST service: :func:`~flightdeck.serving.online.score_rows` with the
``@champion`` held by a :class:`~flightdeck.serving.online.ChampionSlot` (swapped in place when
the alias moves), the feature code of training and precompute.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis as redis_lib

from flightdeck.core import warehouse
from flightdeck.serving.champion import ServingModel
from flightdeck.serving.online import (
    MAX_LOGGED_BODY,
    MAX_ROWS,
    ChampionSlot,
    RowsInvalid,
    canonical_json,
    input_hash,
    key_json,
    score_rows,
)

log = logging.getLogger(__name__)

ENDPOINT = "queue"
"""The ``endpoint`` of the worker's rows in ``fd_serving_requests``."""

MAX_REQUEST_ID = 128  # fd_serving_requests.request_id is a String(128)

# Write each answer unless one is there; add a prediction entry only for those first written.
# KEYS: the result keys..., the prediction stream (last). ARGV: ttl, maxlen, then per key its request id and answer.
# Returns the stored answer of every key (the new one, or the one written before).
_STORE_ANSWERS = """
local stream = KEYS[#KEYS]
local ttl, maxlen = ARGV[1], ARGV[2]
local out = {}
for i = 1, #KEYS - 1 do
  local request_id, answer = ARGV[1 + 2 * i], ARGV[2 + 2 * i]
  if redis.call('SET', KEYS[i], answer, 'NX', 'EX', ttl) then
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'request_id', request_id, 'result', answer)
    out[i] = answer
  else
    out[i] = redis.call('GET', KEYS[i])
  end
end
return out
"""


# ---------------------------------------------------------------- names
@dataclass(frozen=True)
class QueueNames:
    """The Redis keys of one spec's queues."""

    spec: str
    prefix: str = "flightdeck"

    @property
    def requests(self) -> str:
        return f"{self.prefix}:{self.spec}:requests"

    @property
    def predictions(self) -> str:
        return f"{self.prefix}:{self.spec}:predictions"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}:{self.spec}:dead-letters"

    @property
    def group(self) -> str:
        return f"{self.prefix}-{self.spec}-workers"

    def result(self, request_id: str) -> str:
        return f"{self.prefix}:{self.spec}:result:{request_id}"


def connect(url: str) -> redis_lib.Redis:
    """A Redis client of ``url`` (``FLIGHTDECK_REDIS_URL``) that answers text, as the queue functions expect."""
    return redis_lib.Redis.from_url(url, decode_responses=True)


def _require_text(client: redis_lib.Redis) -> None:
    if not client.get_connection_kwargs().get("decode_responses"):
        raise ValueError("the Redis client must decode responses: make it with queue.connect(url) "
                         "or redis.Redis(..., decode_responses=True)")


def reply(value: Any) -> Any:
    """A Redis reply (redis-py types sync and async replies as one union; ours are sync)."""
    return value


def check_request_id(value: Any) -> str:
    """A request id: a string of 1 to 128 characters without spaces or control characters.

    Raises:
        ValueError: naming ``request_id`` and what was expected.
    """
    if not isinstance(value, str) or not value or len(value) > MAX_REQUEST_ID \
            or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError(f"request_id: expected 1 to {MAX_REQUEST_ID} printable characters without spaces, "
                         f"got {value!r}")
    return value


# ---------------------------------------------------------------- the client side
def submit(client: redis_lib.Redis, names: QueueNames, rows: Mapping[str, Any] | Sequence[Mapping[str, Any]],
           request_id: str | None = None) -> str:
    """Queue one request (one row, or a list of rows) for the spec's workers; its request id.

    Submitting the same request id again is harmless: it is answered once, by its first answer.

    Raises:
        ValueError: a bad request id, or rows that are neither an object nor a list (or not JSON).
    """
    request_id = check_request_id(request_id if request_id is not None else uuid.uuid4().hex)
    if isinstance(rows, Mapping):
        rows = [rows]
    if not isinstance(rows, Sequence) or isinstance(rows, str | bytes):
        raise ValueError(f"rows: expected a row (an object) or a list of rows, got {type(rows).__name__}")
    try:
        body = json.dumps(list(rows), separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"rows: expected JSON values, {exc}") from None
    client.xadd(names.requests, {"request_id": request_id, "rows": body})
    return request_id


def results(client: redis_lib.Redis, names: QueueNames, request_ids: Sequence[str],
            timeout: float = 30.0) -> dict[str, dict[str, Any]]:
    """The answers to these requests, waiting up to ``timeout`` seconds for the missing ones.

    Waits by following the prediction stream (``XREAD BLOCK``), not by sleeping.

    Raises:
        TimeoutError: naming the requests still unanswered.
    """
    _require_text(client)
    wanted = [check_request_id(r) for r in request_ids]
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while True:
        newest = reply(client.xrevrange(names.predictions, count=1))
        last = newest[0][0] if newest else "0-0"  # anything answered after the read below arrives after `last`
        missing = [r for r in wanted if r not in found]
        for request_id, text in zip(missing, reply(client.mget([names.result(r) for r in missing])) if missing else [],
                                    strict=True):
            if text is not None:
                found[request_id] = json.loads(text)
        if len(found) == len(set(wanted)):
            return found
        left = deadline - time.monotonic()
        if left <= 0:
            unanswered = [r for r in wanted if r not in found]
            raise TimeoutError(f"{len(unanswered)} request(s) of {names.requests} unanswered after {timeout:g} s: "
                               f"{unanswered[:5]}")
        client.xread({names.predictions: last}, count=1, block=max(1, int(min(left, 5.0) * 1000)))


# ---------------------------------------------------------------- requests as read from the stream
@dataclass(frozen=True)
class QueuedRequest:
    """One entry of the request stream, parsed: its rows, or what is wrong with it."""

    entry_id: str
    request_id: str | None
    rows: list[Any] | None
    problem: str | None
    received_at: datetime

    @property
    def answerable(self) -> bool:
        """Whether an answer can be written (it has a usable request id)."""
        return self.request_id is not None


def received_at(entry_id: str) -> datetime:
    """When an entry was added: the milliseconds part of its stream id."""
    try:
        return datetime.fromtimestamp(int(entry_id.split("-", 1)[0]) / 1000, UTC)
    except ValueError:
        raise ValueError(f"entry id: expected <milliseconds>-<sequence>, got {entry_id!r}") from None


def parse_entry(entry_id: str, fields: Mapping[str, str]) -> QueuedRequest:
    """A stream entry as a request; a malformed one keeps its ``problem`` (and is answered with it)."""
    when = received_at(entry_id)
    try:
        request_id: str | None = check_request_id(fields.get("request_id"))
    except ValueError as exc:
        return QueuedRequest(entry_id, None, None, str(exc), when)
    text = fields.get("rows")
    if text is None:
        return QueuedRequest(entry_id, request_id, None, "rows: missing; expected the JSON of a list of rows", when)
    try:
        rows = json.loads(text)
    except ValueError as exc:
        return QueuedRequest(entry_id, request_id, None, f"rows: expected JSON, {exc}", when)
    if isinstance(rows, dict):
        rows = [rows]
    if not isinstance(rows, list):
        return QueuedRequest(entry_id, request_id, None,
                             f"rows: expected a row (an object) or a list of rows, got {type(rows).__name__}", when)
    return QueuedRequest(entry_id, request_id, rows, None, when)


# ---------------------------------------------------------------- answers
def invalid_answer(request: QueuedRequest, model: ServingModel | None, errors: list[dict[str, Any]],
                   message: str) -> dict[str, Any]:
    """The answer to a request that cannot be scored: the 422-style errors naming each field."""
    return {"request_id": request.request_id, "status": "invalid", "model_version": model.version if model else None,
            "detail": errors, "message": message, "received_at": request.received_at.isoformat(),
            "answered_at": datetime.now(UTC).isoformat()}


def ok_answer(request: QueuedRequest, model: ServingModel, keys: list[dict[str, Any]], scores: Sequence[float],
              labels: Sequence[int], hashes: Sequence[int | None] | None = None) -> dict[str, Any]:
    """The answer to a scored request: per row (input order) its entity key, score, label and feature hash.

    The feature hash is the predictions table's (what the request log and the skew check compare).
    """
    hashes = hashes if hashes is not None else [None] * len(keys)
    return {"request_id": request.request_id, "status": "ok", "model_version": model.version,
            "predictions": [{"key": k, "score": float(s), "label": int(lab),
                             "feature_hash": None if h is None else int(h)}
                            for k, s, lab, h in zip(keys, scores, labels, hashes, strict=True)],
            "received_at": request.received_at.isoformat(), "answered_at": datetime.now(UTC).isoformat()}


def error_answer(request: QueuedRequest, reason: str) -> dict[str, Any]:
    """The answer to a request given up on (dead-lettered): why."""
    return {"request_id": request.request_id, "status": "error", "model_version": None, "message": reason,
            "received_at": request.received_at.isoformat(), "answered_at": datetime.now(UTC).isoformat()}


def log_rows(spec_name: str, request: QueuedRequest, answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``fd_serving_requests`` rows of an answered request: one per scored row, or one (row 0) when refused."""
    received = request.received_at
    answered = datetime.fromisoformat(answer["answered_at"])
    base = {"request_id": request.request_id, "spec_name": spec_name, "endpoint": ENDPOINT, "received_at": received,
            "model_version": answer.get("model_version"),
            "latency_ms": max((answered - received).total_seconds() * 1000, 0.0)}
    if answer["status"] != "ok":
        body = request.rows if request.rows is not None else request.problem
        return [{**base, "row_number": 0, "input_hash": input_hash(body),
                 "request_row": canonical_json(body)[:MAX_LOGGED_BODY], "status": answer["status"],
                 "error": answer.get("message")}]
    rows = request.rows or []
    # not strict: a request id reused with other rows keeps its first answer (and its first log rows)
    return [{**base, "row_number": i + 1, "input_hash": input_hash(row), "request_row": canonical_json(row),
             "entity_key": json.dumps(p["key"], sort_keys=True), "feature_hash": p.get("feature_hash"),
             "score": p["score"], "label": p["label"], "status": "ok"}
            for i, (row, p) in enumerate(zip(rows, answer["predictions"], strict=False))]


def _answer(request: QueuedRequest, model: ServingModel, frame: Any, start: int, stop: int) -> dict[str, Any]:
    part = frame.iloc[start:stop]
    keys = [{k: key_json(v) for k, v in key.items()} for key in part[list(model.spec.entity_key)].to_dict("records")]
    return ok_answer(request, model, keys, part["score"].tolist(), part["label"].tolist(),
                     part["feature_hash"].tolist())


def score_requests(model: ServingModel, requests: Sequence[QueuedRequest]) -> dict[str, dict[str, Any]]:
    """Answer requests with one model: request id -> answer (``ok`` or ``invalid``).

    Valid requests are scored together, one frame per up to :data:`MAX_ROWS` rows, then split
    back; when a frame holds an invalid row, its requests are scored one by one so each is
    answered on its own. Other errors propagate (the entries stay pending and are retried).
    """
    answers: dict[str, dict[str, Any]] = {}
    valid: list[QueuedRequest] = []
    for request in requests:
        assert request.request_id is not None
        if request.problem is not None or not request.rows or len(request.rows) > MAX_ROWS:
            problem = request.problem or (f"expected 1 to {MAX_ROWS} rows, got {len(request.rows or [])}")
            answers[request.request_id] = invalid_answer(request, model, [{"loc": ["body"], "msg": problem,
                                                                          "type": "value_error"}], problem)
        else:
            valid.append(request)
    for group in _frames(valid):
        try:
            frame = score_rows(model, [row for r in group for row in r.rows or []])
        except RowsInvalid:
            for request in group:
                answers[str(request.request_id)] = _score_one(model, request)
            continue
        start = 0
        for request in group:
            stop = start + len(request.rows or [])
            answers[str(request.request_id)] = _answer(request, model, frame, start, stop)
            start = stop
    return answers


def _score_one(model: ServingModel, request: QueuedRequest) -> dict[str, Any]:
    try:
        frame = score_rows(model, request.rows or [])
    except RowsInvalid as exc:
        return invalid_answer(request, model, exc.errors, str(exc))
    return _answer(request, model, frame, 0, len(frame))


def _frames(requests: Sequence[QueuedRequest]) -> list[list[QueuedRequest]]:
    """Consecutive requests grouped into frames of at most :data:`MAX_ROWS` rows."""
    groups: list[list[QueuedRequest]] = []
    rows = MAX_ROWS + 1
    for request in requests:
        n = len(request.rows or [])
        if rows + n > MAX_ROWS:
            groups.append([])
            rows = 0
        groups[-1].append(request)
        rows += n
    return groups


# ---------------------------------------------------------------- the worker
@dataclass(frozen=True)
class WorkerOptions:
    """How a worker reads, claims, retries and keeps answers."""

    batch: int = 100
    block_ms: int = 1000
    claim_idle_ms: int = 30_000
    max_deliveries: int = 5
    result_ttl_seconds: int = 86_400
    predictions_maxlen: int = 100_000
    refresh_seconds: float = 30.0

    def __post_init__(self) -> None:
        for name in ("batch", "block_ms", "max_deliveries", "result_ttl_seconds", "predictions_maxlen"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive whole number, got {getattr(self, name)}")
        if self.claim_idle_ms < 0:
            raise ValueError(f"claim_idle_ms: expected 0 or more, got {self.claim_idle_ms}")
        if self.refresh_seconds <= 0:
            raise ValueError(f"refresh_seconds: expected a positive number, got {self.refresh_seconds}")


@dataclass
class WorkerStats:
    """What a worker did: entries read, claimed from others, answered, acknowledged, dead-lettered."""

    read: int = 0
    claimed: int = 0
    answered: int = 0
    acked: int = 0
    dead_lettered: int = 0
    rows_logged: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # entry id -> the last error, while it is pending


def default_consumer() -> str:
    """``<hostname>-<pid>``: unique per running worker."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    """Reads a spec's request stream in its consumer group and answers with the champion.

    Args:
        client: a Redis client that decodes responses (:func:`connect`).
        slot: the champion (refreshed by :meth:`run` every ``options.refresh_seconds``).
        engine: the warehouse, for the request log.
        names: the spec's queue names.
        consumer: this worker's name in the group (:func:`default_consumer`).
        heartbeat: a file touched before every batch (or wait), for a healthcheck.
    """

    def __init__(self, client: redis_lib.Redis, slot: ChampionSlot, engine: Any, names: QueueNames,
                 consumer: str | None = None, options: WorkerOptions | None = None,
                 heartbeat: Path | None = None) -> None:
        _require_text(client)
        self.client = client
        self.slot = slot
        self.engine = engine
        self.names = names
        self.consumer = consumer or default_consumer()
        self.options = options or WorkerOptions()
        self.stats = WorkerStats()
        self.heartbeat = heartbeat
        self._store = client.register_script(_STORE_ANSWERS)

    def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if missing, reading from the stream's start."""
        try:
            self.client.xgroup_create(self.names.requests, self.names.group, id="0", mkstream=True)
        except redis_lib.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def run(self, stop: threading.Event) -> WorkerStats:
        """Answer batches until ``stop`` is set; the batch in hand is finished and acknowledged first."""
        self.ensure_group()
        self.slot.refresh()
        self.slot.start(self.options.refresh_seconds)
        log.info("worker %s answering %s in group %s", self.consumer, self.names.requests, self.names.group)
        try:
            while not stop.is_set():
                if self.heartbeat is not None:  # a container's healthcheck reads its age
                    self.heartbeat.touch()
                if self.slot.model is None:  # nothing to answer with: leave the requests queued
                    log.warning("no champion loaded for %s: %s", self.names.spec, self.slot.last_error)
                    stop.wait(self.options.block_ms / 1000)
                    self.slot.refresh()
                    continue
                try:
                    self.step()
                except redis_lib.ConnectionError as exc:  # Redis restarting: unacknowledged entries wait
                    log.warning("Redis unreachable (%s); retrying in %d ms", exc, self.options.block_ms)
                    stop.wait(self.options.block_ms / 1000)
        finally:
            self.slot.stop()
        return self.stats

    def step(self, block: bool = True) -> int:
        """One batch: pending entries idle too long (others' or own), else new ones; how many were handled."""
        model = self.slot.model
        if model is None:
            return 0
        try:
            entries = self.claim_stale()
            if entries:
                self.stats.claimed += len(entries)
            else:
                entries = self.read_new(block)
                self.stats.read += len(entries)
        except redis_lib.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.warning("%s or its group was deleted; creating them again", self.names.requests)
            self.ensure_group()
            return 0
        if entries:
            self.process(entries, model)
        return len(entries)

    def read_new(self, block: bool = True) -> list[tuple[str, dict[str, str]]]:
        """Up to ``batch`` entries never delivered, waiting up to ``block_ms`` for the first."""
        got = reply(self.client.xreadgroup(self.names.group, self.consumer, {self.names.requests: ">"},
                                     count=self.options.batch, block=self.options.block_ms if block else None))
        return [(entry_id, fields) for _stream, entries in got or [] for entry_id, fields in entries]

    def claim_stale(self) -> list[tuple[str, dict[str, str]]]:
        """Take over pending entries idle ``claim_idle_ms`` (a dead or stuck worker's); dead-letter worn-out ones.

        ``XCLAIM`` with the same minimum idle time is atomic per entry: of two workers claiming
        together, one gets it. An entry delivered more than ``max_deliveries`` times is moved
        to the dead-letter stream, answered ``error`` and acknowledged.
        """
        o = self.options
        pending = reply(self.client.xpending_range(self.names.requests, self.names.group, min="-", max="+",
                                             count=o.batch, idle=o.claim_idle_ms))
        if not pending:
            return []
        deliveries = {p["message_id"]: int(p["times_delivered"]) + 1 for p in pending}
        claimed = reply(self.client.xclaim(self.names.requests, self.names.group, self.consumer, o.claim_idle_ms,
                                     list(deliveries)))
        live = [(entry_id, fields) for entry_id, fields in claimed if fields is not None]
        worn = [(e, f) for e, f in live if deliveries[e] > o.max_deliveries]
        if worn:
            self.dead_letter(worn, {e: f"delivered {deliveries[e]} times without being answered; last error: "
                                       f"{self.stats.failures.get(e, 'unknown (another worker)')}" for e, _f in worn})
        return [(e, f) for e, f in live if deliveries[e] <= o.max_deliveries]

    def dead_letter(self, entries: Sequence[tuple[str, dict[str, str]]], reasons: Mapping[str, str]) -> None:
        """Move entries to the dead-letter stream with their reason; answer and log them ``error``; acknowledge."""
        for entry_id, fields in entries:
            request = parse_entry(entry_id, fields)
            reason = reasons[entry_id]
            self.client.xadd(self.names.dead_letters, {**fields, "entry_id": entry_id, "reason": reason,  # type: ignore[dict-item]
                                                        "consumer": self.consumer})
            if request.answerable:  # its answer stays the first one written, if any
                self._finish([request], {str(request.request_id): error_answer(request, reason)}, ack=False)
            self._ack([entry_id])
            self.stats.dead_lettered += 1
            log.error("dead-lettered %s of %s: %s", entry_id, self.names.requests, reason)

    def process(self, entries: Sequence[tuple[str, dict[str, str]]], model: ServingModel) -> None:
        """Answer, log and acknowledge a batch; entries whose scoring or logging failed stay pending."""
        requests = [parse_entry(entry_id, fields) for entry_id, fields in entries]
        orphans = [entry for entry, r in zip(entries, requests, strict=True) if not r.answerable]
        if orphans:  # no usable request id: nobody to answer
            self.dead_letter(orphans, {r.entry_id: str(r.problem) for r in requests if not r.answerable})
        requests = [r for r in requests if r.answerable]
        if not requests:
            return
        stored = reply(self.client.mget([self.names.result(str(r.request_id)) for r in requests]))
        answers = {str(r.request_id): json.loads(text) for r, text in zip(requests, stored, strict=True)
                   if text is not None}
        fresh: dict[str, QueuedRequest] = {}  # one per request id: its first entry (repeats share its answer)
        for r in requests:
            if str(r.request_id) not in answers:
                fresh.setdefault(str(r.request_id), r)
        try:
            answers.update(score_requests(model, list(fresh.values())))
        except Exception as exc:  # noqa: BLE001 - the batch stays pending; claimed again, then dead-lettered
            self._failed([r.entry_id for r in requests], exc)
            return
        self._finish(requests, answers)

    def _finish(self, requests: Sequence[QueuedRequest], answers: Mapping[str, dict[str, Any]],
                ack: bool = True) -> None:
        """Write the answers once, log them once, then acknowledge and delete the entries."""
        first = {str(r.request_id): r for r in reversed(requests)}  # a request id given twice: its first entry
        new = {i: answers[i] for i in first}
        ids = list(new)
        texts = [json.dumps(new[i], separators=(",", ":"), default=str) for i in ids]
        args: list[Any] = [self.options.result_ttl_seconds, self.options.predictions_maxlen]
        for request_id, text in zip(ids, texts, strict=True):
            args += [request_id, text]
        kept = self._store(keys=[*(self.names.result(i) for i in ids), self.names.predictions], args=args)
        final = {i: json.loads(text) for i, text in zip(ids, kept, strict=True)}
        self.stats.answered += sum(1 for text, k in zip(texts, kept, strict=True) if text == k)
        rows = [row for i, r in first.items() for row in log_rows(self.names.spec, r, final[i])]
        try:
            self.stats.rows_logged += warehouse.record_serving_requests_once(self.engine, rows)
        except Exception as exc:  # noqa: BLE001 - unlogged: stay pending, logged when claimed again
            self._failed([r.entry_id for r in requests], exc)
            return
        if ack:
            self._ack([r.entry_id for r in requests])

    def _ack(self, entry_ids: Sequence[str]) -> None:
        self.stats.acked += int(reply(self.client.xack(self.names.requests, self.names.group, *entry_ids)))
        self.client.xdel(self.names.requests, *entry_ids)
        for entry_id in entry_ids:
            self.stats.failures.pop(entry_id, None)

    def _failed(self, entry_ids: Sequence[str], exc: Exception) -> None:
        log.exception("%d entries of %s left pending", len(entry_ids), self.names.requests)
        for entry_id in entry_ids:
            self.stats.failures[entry_id] = f"{type(exc).__name__}: {exc}"
