"""Benchmark: model on demand, ``flightdeck worker`` processes answering a Redis Streams queue; one worker and two.

Set-up: the prepared home of ``bench_service.py`` (April 2013 flights, a champion), kept in ``--home``.

Per request size (1 row, 10 rows) and worker count (1, 2): the workers are started
(``flightdeck worker flights --batch 100``) and wait on the empty queue (each has loaded the
champion: its heartbeat file exists); a few warm-up requests are answered; then ``--requests`` requests are
submitted and the clock runs from the first submit to the last answer (read with
``queue.results``). Each worker validates, scores (the training-time feature code), writes the
answers to Redis and logs every row to the SQLite warehouse before acknowledging.

The reference, measured in the same run: the same requests scored in this process by
``queue.score_requests`` (the worker's scoring, batches of 100 requests) without Redis and without
the request log. Usage: ``python benchmarks/bench_queue.py [--home DIR] [--requests 2000]``.
Nothing is asserted; read the ratios (2 workers / 1 worker; workers / the in-process reference).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench_service import BIN, payloads, prepare, set_env

REDIS_URL = os.environ.get("FLIGHTDECK_REDIS_URL", "redis://127.0.0.1:6379/0")


def start_workers(count: int, prefix: str, home: Path) -> list[subprocess.Popen[bytes]]:
    """``count`` worker processes on the queues of ``prefix``, once each has loaded the champion and waits.

    Ready means its heartbeat file exists: it is touched before the first read, after the champion is loaded.
    """
    env = {**os.environ, "FLIGHTDECK_QUEUE_PREFIX": prefix, "FLIGHTDECK_REDIS_URL": REDIS_URL}
    beats = [home / f"worker-{i}.alive" for i in range(count)]
    for beat in beats:
        beat.unlink(missing_ok=True)
    processes = [subprocess.Popen([str(BIN / "flightdeck"), "worker", "flights", "--batch", "100", "--block-ms", "200",
                                   "--consumer", f"bench-{i}", "--heartbeat-file", str(beats[i])], env=env,
                                  stdout=subprocess.DEVNULL, stderr=(home / f"worker-{i}.log").open("wb"))
                 for i in range(count)]
    deadline = time.monotonic() + 300
    while not all(beat.exists() for beat in beats):
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"a worker exited {process.returncode}; see {home}/worker-*.log")
        if time.monotonic() > deadline:
            raise TimeoutError("the workers did not load the champion within 300 s")
        time.sleep(0.2)
    return processes


def stop_workers(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def through_workers(count: int, bodies: list[list[dict[str, Any]]], home: Path) -> dict[str, float]:
    """Requests/s and rows/s of ``count`` workers answering ``bodies`` (one request each)."""
    from flightdeck.serving import queue

    prefix = f"bench-{uuid.uuid4().hex[:10]}"
    names = queue.QueueNames("flights", prefix)
    client = queue.connect(REDIS_URL)
    processes = start_workers(count, prefix, home)
    try:
        warm = [queue.submit(client, names, body) for body in bodies[:20]]
        queue.results(client, names, warm, timeout=300)
        clock = time.perf_counter()
        ids = [queue.submit(client, names, body) for body in bodies]
        answers = queue.results(client, names, ids, timeout=1800)
        seconds = time.perf_counter() - clock
    finally:
        stop_workers(processes)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    assert all(a["status"] == "ok" for a in answers.values())
    rows = sum(len(b) for b in bodies)
    return {"seconds": seconds, "requests_per_s": len(bodies) / seconds, "rows_per_s": rows / seconds}


def in_process(bodies: list[list[dict[str, Any]]]) -> dict[str, float]:
    """The reference: the worker's scoring of the same requests in this process, no Redis, no log."""
    from datetime import UTC, datetime

    from flightdeck.core.settings import Settings
    from flightdeck.serving import queue
    from flightdeck.serving.champion import load_serving_model

    model = load_serving_model("flights", Settings.from_env())
    now = datetime.now(UTC)
    requests = [queue.QueuedRequest(f"{i}-0", f"r{i}", body, None, now) for i, body in enumerate(bodies)]
    queue.score_requests(model, requests[:20])  # warm-up
    clock = time.perf_counter()
    for start in range(0, len(requests), 100):
        queue.score_requests(model, requests[start:start + 100])
    seconds = time.perf_counter() - clock
    rows = sum(len(b) for b in bodies)
    return {"seconds": seconds, "requests_per_s": len(bodies) / seconds, "rows_per_s": rows / seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=str(Path(tempfile.gettempdir()) / "flightdeck-bench-queue"))
    parser.add_argument("--requests", type=int, default=2000, help="single-row requests per measurement")
    parser.add_argument("--batch-requests", type=int, default=400, help="10-row requests per measurement")
    args = parser.parse_args()
    home = Path(args.home)
    set_env(home)
    clock = time.perf_counter()
    prepare(home)
    print(f"set-up {time.perf_counter() - clock:.1f} s; load average {os.getloadavg()[0]:.2f}; "
          f"{os.cpu_count()} cores", flush=True)
    _version, curated, _matrix = payloads(home)
    cases = {
        "1 row": [[curated[i % len(curated)]] for i in range(args.requests)],
        "10 rows": [[curated[(10 * i + j) % len(curated)] for j in range(10)] for i in range(args.batch_requests)],
    }
    print("| request | how | requests | seconds | requests/s | rows/s | vs in-process | vs 1 worker |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for label, bodies in cases.items():
        reference = in_process(bodies)
        one = through_workers(1, bodies, home)
        two = through_workers(2, bodies, home)
        for how, figures in (("in-process score_requests (reference)", reference), ("1 worker", one),
                             ("2 workers", two)):
            print(f"| {label} | {how} | {len(bodies)} | {figures['seconds']:.2f} | {figures['requests_per_s']:.0f} | "
                  f"{figures['rows_per_s']:.0f} | {figures['rows_per_s'] / reference['rows_per_s']:.2f} | "
                  f"{figures['rows_per_s'] / one['rows_per_s']:.2f} |", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
