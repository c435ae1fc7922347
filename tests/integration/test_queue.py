"""Model on demand: the queue worker on a real Redis (127.0.0.1:6379), a real MLflow registry and SQLite warehouse.

Each test has its own key prefix (``FLIGHTDECK_QUEUE_PREFIX``), whose keys it deletes at the
end, and its own copy of the scoring DAG's prepared home (a registered champion). Answers must
equal what precompute scoring publishes for the same rows; the kill test runs two real
``flightdeck worker`` processes and SIGKILLs one while it holds pending entries.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_scoring_dag import OPEN, use_copy_of_prepared_home

pytestmark = pytest.mark.slow

DAY = OPEN[0]
REDIS_URL = os.environ.get("FLIGHTDECK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
FLIGHTDECK = Path(sys.executable).parent / "flightdeck"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_copy_of_prepared_home(tmp_path, monkeypatch)


@pytest.fixture
def names(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """This test's queue names (a unique prefix, set for subprocesses too); its Redis keys are deleted after."""
    from flightdeck.serving import queue

    prefix = f"fdtest-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("FLIGHTDECK_QUEUE_PREFIX", prefix)
    monkeypatch.setenv("FLIGHTDECK_REDIS_URL", REDIS_URL)
    client = queue.connect(REDIS_URL)
    try:
        yield queue.QueueNames("flights", prefix)
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def redis_client(names) -> Iterator[Any]:
    from flightdeck.serving import queue

    client = queue.connect(REDIS_URL)
    yield client
    client.close()


def _ctx():
    from flightdeck.core.context import StageContext
    from flightdeck.core.settings import Settings
    from flightdeck.core.spec import spec_named

    settings = Settings.from_env()
    return StageContext(spec_named(settings.specs_dir, "flights"), settings, run_id="precompute")


def _curated_rows(ctx, day: str) -> list[dict[str, Any]]:
    from flightdeck.core import lake

    frame = lake.read_parquet(ctx.lake, lake.curated(ctx.name, day), ctx.workdir)
    frame = frame.drop(columns=[ctx.spec.target.name])
    return json.loads(frame.to_json(orient="records", date_format="iso", date_unit="us"))


def _published(ctx, day: str) -> dict[tuple[Any, ...], float]:
    """Entity key -> the score precompute published for ``day`` (scoring it first)."""
    from flightdeck.serving import predictions, scoring

    scoring.score_partition(ctx, day)
    rows = predictions.lookup(ctx.engine, ctx.spec, partition=day, limit=100_000)
    return {tuple(r[k] for k in ctx.spec.entity_key): r["score"] for r in rows}


def _key(ctx, row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[k] for k in ctx.spec.entity_key)


def _worker(names, consumer: str = "w1", **options: Any):
    from flightdeck.core import warehouse
    from flightdeck.core.settings import Settings
    from flightdeck.core.spec import spec_named
    from flightdeck.serving import queue
    from flightdeck.serving.online import ChampionSlot

    settings = Settings.from_env()
    worker = queue.Worker(queue.connect(settings.redis_url), ChampionSlot(spec_named(settings.specs_dir, "flights"),
                          settings), warehouse.connect(settings.warehouse_url), names, consumer,
                          queue.WorkerOptions(**options))
    worker.ensure_group()
    worker.slot.refresh()
    assert worker.slot.model is not None, worker.slot.last_error
    return worker


def _drain(worker) -> int:
    """Steps without blocking until a step finds nothing; how many entries were handled."""
    handled = 0
    for _ in range(1000):
        n = worker.step(block=False)
        if n == 0:
            return handled
        handled += n
    raise AssertionError("the worker never ran out of entries")


def _log_of(ctx, request_id: str) -> list[dict[str, Any]]:
    from flightdeck.core import warehouse

    return warehouse.queries.serving_requests_of(ctx.engine, "flights", request_id=request_id)


def _prediction_ids(client, names) -> list[str]:
    return [fields["request_id"] for _id, fields in client.xrange(names.predictions)]


def _pending(client, names) -> int:
    return int(client.xpending(names.requests, names.group)["pending"])


def test_answers_equal_the_rest_and_precompute_scores_and_every_row_is_logged(names, redis_client):
    from flightdeck.serving import queue
    from flightdeck.serving.online import score_rows

    ctx = _ctx()
    published = _published(ctx, DAY)
    rows = _curated_rows(ctx, DAY)
    assert len(rows) > 150
    single = queue.submit(redis_client, names, rows[0], request_id="one-row")
    batch = queue.submit(redis_client, names, rows[1:101])
    many = [queue.submit(redis_client, names, [row]) for row in rows[101:151]]
    worker = _worker(names, batch=20)
    assert _drain(worker) == 52
    answers = queue.results(redis_client, names, [single, batch, *many], timeout=5)
    version = worker.slot.model.version
    rest = score_rows(worker.slot.model, rows[:151])  # what POST /predict answers for these rows

    assert single == "one-row" and len(batch) == 32
    one = answers["one-row"]
    assert (one["status"], one["model_version"], one["request_id"]) == ("ok", version, "one-row")
    assert one["predictions"][0]["key"] == {k: rows[0][k] for k in ctx.spec.entity_key}
    got = one["predictions"] + answers[batch]["predictions"] + [p for r in many for p in answers[r]["predictions"]]
    assert len(got) == 151
    for row, answer, rest_score in zip(rows[:151], got, rest["score"], strict=True):
        assert answer["key"] == {k: row[k] for k in ctx.spec.entity_key}, "answers keep the input order"
        assert answer["score"] == pytest.approx(published[_key(ctx, row)], abs=1e-12)
        assert answer["score"] == pytest.approx(float(rest_score), abs=1e-12)
        assert answer["label"] == int(answer["score"] >= worker.slot.model.threshold)

    assert sorted(_prediction_ids(redis_client, names)) == sorted([single, batch, *many])
    assert _pending(redis_client, names) == 0 and redis_client.xlen(names.requests) == 0, "acknowledged, deleted"
    logged = _log_of(ctx, batch)
    assert [r["row_number"] for r in logged] == list(range(1, 101))
    for r, answer in zip(logged, answers[batch]["predictions"], strict=True):
        assert (r["endpoint"], r["status"], r["model_version"]) == ("queue", "ok", version)
        assert r["score"] == pytest.approx(answer["score"], abs=1e-12) and len(r["input_hash"]) == 64
        assert json.loads(r["entity_key"]) == answer["key"] and r["latency_ms"] >= 0
    assert [len(_log_of(ctx, r)) for r in many] == [1] * 50
    assert worker.stats.rows_logged == 151 and worker.stats.answered == 52 == worker.stats.acked


def test_an_invalid_request_is_answered_with_the_field_and_what_was_expected(names, redis_client):
    from flightdeck.serving import queue

    ctx = _ctx()
    row = _curated_rows(ctx, DAY)[0]
    missing = queue.submit(redis_client, names, {k: v for k, v in row.items() if k != "carrier"}, "bad-missing")
    wrong = queue.submit(redis_client, names, [row, {**row, "flight": "UA1545"}], "bad-type")
    good = queue.submit(redis_client, names, row, "good")
    redis_client.xadd(names.requests, {"request_id": "bad-json", "rows": "{nope"})
    redis_client.xadd(names.requests, {"request_id": "no rows"})  # a request id with a space: nobody to answer
    redis_client.xadd(names.requests, {"request_id": "empty", "rows": "[]"})
    worker = _worker(names)
    _drain(worker)
    answers = queue.results(redis_client, names, [missing, wrong, good, "bad-json", "empty"], timeout=5)

    (error,) = answers["bad-missing"]["detail"]
    assert answers["bad-missing"]["status"] == "invalid"
    assert error["loc"] == ["body", 0, "carrier"] and "missing required column; expected a string" in error["msg"]
    assert {tuple(e["loc"]): e["msg"] for e in answers["bad-type"]["detail"]} == {
        ("body", 1, "flight"): "expected an integer, got 'UA1545'"}
    assert answers["good"]["status"] == "ok", "a bad request in the batch does not fail the good ones"
    assert answers["bad-json"]["status"] == "invalid" and answers["bad-json"]["message"].startswith(
        "rows: expected JSON")
    assert answers["empty"]["message"] == "expected 1 to 10000 rows, got 0"
    (dead,) = redis_client.xrange(names.dead_letters)
    assert dead[1]["request_id"] == "no rows" and dead[1]["reason"].startswith("request_id: expected 1 to 128")
    assert _pending(redis_client, names) == 0
    logged = _log_of(ctx, "bad-missing")
    assert [(r["row_number"], r["status"], r["endpoint"]) for r in logged] == [(0, "invalid", "queue")]
    assert "carrier" in logged[0]["error"]


def test_a_redelivered_request_is_answered_once_and_logged_once(names, redis_client):
    from flightdeck.serving import queue

    ctx = _ctx()
    rows = _curated_rows(ctx, DAY)
    queue.submit(redis_client, names, rows[:3], "twice")
    queue.submit(redis_client, names, rows[3:8], "twice")  # the same id again, in the same batch
    worker = _worker(names)
    _drain(worker)
    first = queue.results(redis_client, names, ["twice"], timeout=5)["twice"]
    queue.submit(redis_client, names, rows[:3], "twice")  # and once more, later
    _drain(worker)

    # a consumer that reads and dies: its entries are claimed by a worker and answered
    queue.submit(redis_client, names, rows[10:12], "claimed")
    got = redis_client.xreadgroup(names.group, "ghost", {names.requests: ">"}, count=10)
    assert [fields["request_id"] for _id, fields in got[0][1]] == ["claimed"]
    assert redis_client.xpending(names.requests, names.group)["consumers"] == [{"name": "ghost", "pending": 1}]
    assert _drain(worker) == 0, "not idle long enough: not claimed"
    taker = _worker(names, "taker", claim_idle_ms=0)
    assert _drain(taker) == 1 and taker.stats.claimed == 1

    assert len(first["predictions"]) == 3, "the first submission's answer"
    assert queue.results(redis_client, names, ["twice"], timeout=5)["twice"] == first
    assert _prediction_ids(redis_client, names) == ["twice", "claimed"], "one prediction entry per request id"
    assert [r["row_number"] for r in _log_of(ctx, "twice")] == [1, 2, 3]
    assert [r["row_number"] for r in _log_of(ctx, "claimed")] == [1, 2]
    assert _pending(redis_client, names) == 0 and redis_client.xlen(names.requests) == 0

    redis_client.delete(names.requests)  # the stream and its group deleted under a running worker
    assert worker.step(block=False) == 0, "the group is made again"
    queue.submit(redis_client, names, rows[12], "after-delete")
    assert worker.step(block=False) == 1
    assert queue.results(redis_client, names, ["after-delete"], timeout=5)["after-delete"]["status"] == "ok"


def test_a_request_that_keeps_failing_goes_to_the_dead_letters(names, redis_client, tmp_path):
    from flightdeck.core import warehouse
    from flightdeck.serving import queue

    ctx = _ctx()
    row = _curated_rows(ctx, DAY)[0]
    worker = _worker(names, claim_idle_ms=0, max_deliveries=2)
    broken = tmp_path / "broken.db"
    worker.engine = warehouse.connect(f"sqlite:///{broken}")
    worker.engine.dispose()
    for path in tmp_path.glob("broken.db*"):
        path.unlink()
    broken.mkdir()  # the request log cannot be written: a folder where the database was
    queue.submit(redis_client, names, row, "poison")
    assert worker.step(block=False) == 1  # delivered: scored and answered, but not logged, so left pending
    assert worker.step(block=False) == 1  # claimed again (idle >= 0 ms): the 2nd delivery, the same failure
    assert redis_client.xlen(names.dead_letters) == 0
    worker.step(block=False)  # the 3rd delivery is one too many
    (dead,) = redis_client.xrange(names.dead_letters)
    assert dead[1]["request_id"] == "poison" and json.loads(dead[1]["rows"]) == [row]
    assert dead[1]["reason"].startswith("delivered 3 times without being answered; last error: OperationalError")
    assert _pending(redis_client, names) == 0 and worker.stats.dead_lettered == 1
    answer = queue.results(redis_client, names, ["poison"], timeout=5)["poison"]
    assert answer["status"] == "ok", "scored at the first delivery; the log was what failed"


def test_a_killed_worker_loses_no_request(names, redis_client, home, tmp_path):
    """Two ``flightdeck worker`` processes; one is SIGKILLed while it holds pending entries.

    Deterministic: the test holds the warehouse's write lock, so each worker reads a batch,
    writes its answers and then waits to log them, its entries pending. Only then is one
    killed and the lock released; the other must claim the dead one's entries.
    """
    from flightdeck.serving import queue

    ctx = _ctx()
    published = _published(ctx, DAY)
    rows = _curated_rows(ctx, DAY)
    ids = [queue.submit(redis_client, names, rows[3 * i:3 * i + 3], f"kill-{i:02d}") for i in range(30)]
    redis_client.xgroup_create(names.requests, names.group, id="0")
    lock = sqlite3.connect(home / "warehouse.db", isolation_level=None, timeout=60)
    lock.execute("BEGIN EXCLUSIVE")  # writers wait (busy timeout); readers go on (WAL)
    workers: dict[str, subprocess.Popen[str]] = {}
    try:
        for name in ("victim", "survivor"):
            workers[name] = subprocess.Popen(
                [str(FLIGHTDECK), "worker", "flights", "--batch", "10", "--block-ms", "200", "--claim-idle-ms", "500",
                 "--consumer", name, "--heartbeat-file", str(tmp_path / f"{name}.alive")],
                stdout=subprocess.PIPE, stderr=open(tmp_path / f"{name}.log", "w"), text=True)
        deadline = time.monotonic() + 300
        while True:  # both hold 10 answered, unlogged, pending entries
            consumers = {c["name"]: c["pending"] for c in redis_client.xpending(names.requests, names.group)[
                "consumers"]} if redis_client.exists(names.requests) else {}
            answered = sum(v is not None for v in redis_client.mget([names.result(i) for i in ids]))
            if consumers == {"victim": 10, "survivor": 10} and answered == 20:
                break
            for name, process in workers.items():
                assert process.poll() is None, (tmp_path / f"{name}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"workers never both held a batch: {consumers}, {answered} answered"
            time.sleep(0.1)
        workers["victim"].send_signal(signal.SIGKILL)
        assert workers["victim"].wait(timeout=60) == -signal.SIGKILL
        lock.execute("ROLLBACK")
        answers = queue.results(redis_client, names, ids, timeout=300)
        while _pending(redis_client, names) or redis_client.xlen(names.requests):
            assert time.monotonic() < deadline, "entries left pending"
            time.sleep(0.1)
        workers["survivor"].send_signal(signal.SIGTERM)  # a clean stop: finish, acknowledge, exit 0
        out, _ = workers["survivor"].communicate(timeout=120)
        assert workers["survivor"].returncode == 0, (tmp_path / "survivor.log").read_text()[-3000:]
    finally:
        lock.close()
        for process in workers.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=60)

    assert (tmp_path / "survivor.alive").is_file(), "the heartbeat a healthcheck reads"
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["consumer"] == "survivor" and summary["claimed"] >= 10, summary  # the victim's 10
    assert sorted(_prediction_ids(redis_client, names)) == ids, "exactly one answer per request"
    for i, request_id in enumerate(ids):
        answer = answers[request_id]
        assert answer["status"] == "ok"
        for row, p in zip(rows[3 * i:3 * i + 3], answer["predictions"], strict=True):
            assert p["score"] == pytest.approx(published[_key(ctx, row)], abs=1e-12)
        assert [r["row_number"] for r in _log_of(ctx, request_id)] == [1, 2, 3], request_id
    assert _pending(redis_client, names) == 0


def _log_row(request_id: str, row_number: int, score: float | None) -> dict[str, Any]:
    from datetime import UTC, datetime

    row: dict[str, Any] = {"request_id": request_id, "row_number": row_number, "spec_name": "flights",
                           "endpoint": "queue", "received_at": datetime.now(UTC), "input_hash": "0" * 64,
                           "latency_ms": 1.0, "status": "ok" if score is not None else "invalid"}
    if score is not None:
        row["score"] = score
    return row


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_log_writer_skips_rows_it_logged_before(backend: str, tmp_path: Path):
    from contextlib import nullcontext

    from flightdeck.core import warehouse
    from pg_support import postgres_url, private_schema

    where = private_schema(postgres_url(), "fdqueue") if backend == "postgresql" else nullcontext(
        f"sqlite:///{tmp_path / 'w.db'}")
    with where as url:
        engine = warehouse.connect(url)
        first = [_log_row("q1", 1, 0.25), _log_row("q1", 2, 0.5), _log_row("q2", 0, None)]
        assert warehouse.record_serving_requests_once(engine, first) == 3
        again = [_log_row("q1", 1, 0.99), _log_row("q1", 3, 0.75), _log_row("q1", 3, 0.1)]
        assert warehouse.record_serving_requests_once(engine, again) == 1, "only (q1, 3), once"
        logged = warehouse.queries.serving_requests_of(engine, "flights", request_id="q1")
        assert [(r["row_number"], r["score"]) for r in logged] == [(1, 0.25), (2, 0.5), (3, 0.75)]
        assert warehouse.record_serving_requests_once(engine, []) == 0
        engine.dispose()
