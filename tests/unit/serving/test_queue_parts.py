"""The queue worker's pure parts: names, request ids, stream entries, frames of rows, answers and log rows,
options, settings and the ``flightdeck worker`` command line (no Redis needed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from flightdeck.apps.cli import build_parser
from flightdeck.core.settings import Settings
from flightdeck.serving import queue
from flightdeck.serving.online import MAX_ROWS, input_hash

ROW = {"year": 2013, "carrier": "B6", "flight": 707}


def test_the_names_of_a_specs_queues():
    names = queue.QueueNames("flights")
    assert (names.requests, names.predictions, names.dead_letters, names.group, names.result("r-1")) == (
        "flightdeck:flights:requests", "flightdeck:flights:predictions", "flightdeck:flights:dead-letters",
        "flightdeck-flights-workers", "flightdeck:flights:result:r-1")
    assert queue.QueueNames("flights", "t1").requests == "t1:flights:requests"


@pytest.mark.parametrize("value", ["r", "a" * 128, "2f1c0e4b-uuid", "client:42/7"])
def test_a_request_id_that_is_kept(value: str):
    assert queue.check_request_id(value) == value


@pytest.mark.parametrize("value", [None, "", "a" * 129, "has space", "tab\there", "new\nline", 42])
def test_a_request_id_that_is_refused_names_the_field(value: Any):
    with pytest.raises(ValueError, match=r"request_id: expected 1 to 128 printable characters"):
        queue.check_request_id(value)


def test_submit_refuses_rows_that_are_no_rows_before_writing_anything():
    with pytest.raises(ValueError, match="rows: expected a row"):
        queue.submit(None, queue.QueueNames("flights"), "year=2013")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rows: expected JSON values"):
        queue.submit(None, queue.QueueNames("flights"), [{"year": float("nan")}])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="request_id"):
        queue.submit(None, queue.QueueNames("flights"), ROW, request_id="a b")  # type: ignore[arg-type]


def test_received_at_is_the_milliseconds_of_the_entry_id():
    assert queue.received_at("1700000000123-4") == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    with pytest.raises(ValueError, match="entry id: expected <milliseconds>-<sequence>, got 'x-1'"):
        queue.received_at("x-1")


@pytest.mark.parametrize(("fields", "request_id", "rows", "problem"), [
    ({"request_id": "r1", "rows": json.dumps([ROW])}, "r1", [ROW], None),
    ({"request_id": "r1", "rows": json.dumps(ROW)}, "r1", [ROW], None),  # one row, not in a list
    ({"request_id": "r1", "rows": "[]"}, "r1", [], None),  # answered "expected 1 to ... rows" when scored
    ({"request_id": "r1"}, "r1", None, "rows: missing; expected the JSON of a list of rows"),
    ({"request_id": "r1", "rows": "{nope"}, "r1", None, "rows: expected JSON, Expecting property name"),
    ({"request_id": "r1", "rows": "7"}, "r1", None, "rows: expected a row (an object) or a list of rows, got int"),
    ({"rows": "[]"}, None, None, "request_id: expected 1 to 128"),
    ({"request_id": "a b", "rows": "[]"}, None, None, "request_id: expected"),
])
def test_an_entry_is_parsed_or_keeps_what_is_wrong(fields, request_id, rows, problem):
    request = queue.parse_entry("1700000000123-0", fields)
    assert (request.request_id, request.rows, request.answerable) == (request_id, rows, request_id is not None)
    assert (request.problem is None) if problem is None else request.problem.startswith(problem)


def _request(request_id: str, n: int) -> queue.QueuedRequest:
    return queue.QueuedRequest("1700000000000-0", request_id, [ROW] * n, None, datetime(2023, 11, 14, tzinfo=UTC))


@pytest.mark.parametrize(("sizes", "frames"), [
    ([1, 1, 1], [[1, 1, 1]]),
    ([MAX_ROWS, 1], [[MAX_ROWS], [1]]),
    ([MAX_ROWS - 1, 1, 1], [[MAX_ROWS - 1, 1], [1]]),
    ([6000, 6000, 3000], [[6000], [6000, 3000]]),
    ([], []),
])
def test_requests_are_scored_in_frames_of_at_most_max_rows(sizes, frames):
    grouped = queue._frames([_request(f"r{i}", n) for i, n in enumerate(sizes)])
    assert [[len(r.rows or []) for r in group] for group in grouped] == frames


def test_the_log_rows_of_an_answer_and_of_a_refusal():
    request = _request("r1", 2)
    answer = {"status": "ok", "model_version": "3", "answered_at": "2023-11-14T00:00:00.250000+00:00",
              "predictions": [{"key": {"flight": 707}, "score": 0.25, "label": 0},
                              {"key": {"flight": 708}, "score": 0.75, "label": 1}]}
    rows = queue.log_rows("flights", request, answer)
    assert [(r["row_number"], r["score"], r["label"], r["entity_key"], r["status"]) for r in rows] == [
        (1, 0.25, 0, '{"flight": 707}', "ok"), (2, 0.75, 1, '{"flight": 708}', "ok")]
    assert {(r["endpoint"], r["model_version"], r["latency_ms"]) for r in rows} == {("queue", "3", 250.0)}
    assert rows[0]["input_hash"] == input_hash(ROW)
    refused = queue.log_rows("flights", request, {"status": "invalid", "model_version": "3", "message": "no",
                                                  "answered_at": "2023-11-14T00:00:01+00:00"})
    assert [(r["row_number"], r["status"], r["error"], r["input_hash"]) for r in refused] == [
        (0, "invalid", "no", input_hash([ROW, ROW]))]


def test_an_invalid_answer_keeps_the_422_errors():
    errors = [{"loc": ["body", 0, "carrier"], "msg": "missing", "type": "missing"}]
    answer = queue.invalid_answer(_request("r1", 1), None, errors, "body.0.carrier: missing")
    assert (answer["status"], answer["detail"], answer["model_version"], answer["request_id"]) == (
        "invalid", errors, None, "r1")


@pytest.mark.parametrize(("option", "value", "message"), [
    ("batch", 0, "batch: expected a positive whole number, got 0"),
    ("block_ms", -1, "block_ms: expected a positive"),
    ("max_deliveries", 0, "max_deliveries: expected a positive"),
    ("claim_idle_ms", -5, "claim_idle_ms: expected 0 or more, got -5"),
    ("refresh_seconds", 0, "refresh_seconds: expected a positive number"),
])
def test_worker_options_refuse_what_cannot_work(option, value, message):
    with pytest.raises(ValueError, match=message):
        queue.WorkerOptions(**{option: value})


def test_the_redis_settings_and_their_defaults(tmp_path):
    default = Settings.from_env({"FLIGHTDECK_HOME": str(tmp_path)})
    assert (default.redis_url, default.queue_prefix) == ("redis://127.0.0.1:6379/0", "flightdeck")
    given = Settings.from_env({"FLIGHTDECK_HOME": str(tmp_path), "FLIGHTDECK_REDIS_URL": "redis://r:6380/2",
                               "FLIGHTDECK_QUEUE_PREFIX": "fd-test"})
    assert (given.redis_url, given.queue_prefix) == ("redis://r:6380/2", "fd-test")
    with pytest.raises(ValueError, match="FLIGHTDECK_QUEUE_PREFIX must be a word without spaces or braces"):
        Settings.from_env({"FLIGHTDECK_HOME": str(tmp_path), "FLIGHTDECK_QUEUE_PREFIX": "{a}"})


def test_the_worker_command_and_its_defaults():
    args = build_parser().parse_args(["worker", "flights"])
    assert (args.command, args.spec, args.batch, args.block_ms, args.claim_idle_ms, args.max_deliveries,
            args.result_ttl_seconds, args.refresh_seconds, args.consumer) == (
        "worker", "flights", 100, 1000, 30_000, 5, 86_400, 30.0, None)
    args = build_parser().parse_args(["worker", "flights", "--batch", "10", "--claim-idle-ms", "0",
                                      "--consumer", "w1"])
    assert (args.batch, args.claim_idle_ms, args.consumer) == (10, 0, "w1")


def test_a_bad_worker_option_fails_the_command_naming_it(capsys):
    from flightdeck.apps.cli import main

    assert main(["worker", "flights", "--batch", "0"]) == 2
    assert "batch: expected a positive whole number, got 0" in capsys.readouterr().err
