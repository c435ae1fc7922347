"""Benchmark: the model as a service (``flightdeck serve``) against ``mlflow models serve`` of the same version.

Set-up (once, kept in ``--home``): twelve days of real flights (April 2013) through the data
stages, a champion trained and registered by the training runners (``[dummy, lightgbm]``,
no tuning, to keep it short) and ``@champion`` set on it.

Two servers, each in its own process, one worker each, on loopback ports:

* ``flightdeck``: ``flightdeck serve flights``; requests are curated rows (``POST /predict``):
  validation, the training-time feature code (joins, history rates), the model, and the
  request log written to the warehouse before the answer;
* ``mlflow``: ``mlflow models serve -m models:/flightdeck-flights/<version> --env-manager local``;
  requests are the model's own input, the feature matrix (``POST /invocations``): the
  reference, the stock server with no feature code and no logging.

Per server, rows (single, batch of 100) and client concurrency (1, 8, 32): a bounded number of
requests from threads with their own ``httpx.Client``, after a warm-up; p50 and p99 latency,
requests/s and rows/s.
Usage: ``python benchmarks/bench_service.py [--home DIR] [--requests 200] [--concurrency 1 8 32]``.
Nothing is asserted; the figures to read are the ratios to mlflow measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO / "include")]
BIN = Path(sys.executable).parent


def set_env(home: Path) -> None:
    os.environ.update({"FLIGHTDECK_HOME": str(home), "FLIGHTDECK_SPECS_DIR": str(home / "specs"),
                       "FLIGHTDECK_PSEUDONYMISATION_KEY": "bench-key", "MLFLOW_DISABLE_TELEMETRY": "true",
                       "GX_ANALYTICS_ENABLED": "false", "NO_PROXY": "*"})


def prepare(home: Path) -> None:
    """Curated April 2013 flights and a champion (kept between runs: ``home/READY``)."""
    if (home / "READY").exists():
        return
    import yaml

    if home.exists():
        shutil.rmtree(home)
    shutil.copytree(REPO / "include" / "specs", home / "specs")
    raw = yaml.safe_load((home / "specs" / "flights.yaml").read_text())
    raw["training"].update(candidates=["dummy", "lightgbm"], tune_top=0, cv_folds=2)
    (home / "specs" / "flights.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    from flightdeck.core import registry
    from flightdeck.core.settings import Settings
    from flightdeck.core.spec import load_spec
    from flightdeck.core.storage import open_store
    from flightdeck.data import replay, runners
    from flightdeck.training import pipeline as training

    settings = Settings.from_env()
    spec = load_spec(home / "specs" / "flights.yaml")
    replay.replay(spec, open_store(settings.landing_uri), date(2013, 4, 1), date(2013, 4, 12))
    ctx = runners.StageContext(spec, settings, run_id="bench-data")
    for stage in (runners.ingest_deliveries, runners.profile_batches, runners.validate_batches,
                  runners.curate_batches, runners.split_dataset):
        stage(ctx)
    tctx = runners.StageContext(spec, settings, run_id="bench-train", dag_id="flights_training")
    registered = training.register_model(tctx, training.train_model(tctx))
    registry.mlflow_client(settings.mlflow_tracking_uri).set_registered_model_alias(
        spec.registered_model_name, registry.CHAMPION, registered["version"])
    (home / "READY").write_text("ok")


def payloads(home: Path) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """(champion version, curated rows without the label, the same rows as the model's feature matrix)."""
    from flightdeck.core import lake
    from flightdeck.core.settings import Settings
    from flightdeck.core.storage import open_store
    from flightdeck.serving.champion import load_serving_model

    settings = Settings.from_env()
    model = load_serving_model("flights", settings)
    frame = lake.read_parquet(open_store(settings.lake_uri), lake.curated("flights", "2013-04-12"), Path(home))
    frame = frame.drop(columns=["departed_late"]).head(1000)
    curated = json.loads(frame.to_json(orient="records", date_format="iso", date_unit="us"))
    matrix = json.loads(model.feature_matrix(frame).to_json(orient="records"))
    return model.version, curated, matrix


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(command: list[str], url: str, log: Path) -> subprocess.Popen[bytes]:
    """Start a server process and wait until ``url`` answers 200 (at most 180 s)."""
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[0]} exited {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise TimeoutError(f"{url} did not answer within 180 s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def load(url: str, bodies: list[Any], concurrency: int, requests: int, warmup: int = 2) -> dict[str, float]:
    """``requests`` POSTs of the bodies (round robin) from ``concurrency`` threads; latency and throughput."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    counter = iter(range(requests))
    warm = threading.Barrier(concurrency + 1)

    def worker() -> None:
        with httpx.Client(timeout=120) as http:
            for i in range(warmup):
                http.post(url, json=bodies[i % len(bodies)])
            warm.wait()
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t = time.perf_counter()
                response = http.post(url, json=bodies[i % len(bodies)])
                elapsed = time.perf_counter() - t
                with lock:
                    latencies.append(elapsed)
                    failures[0] += response.status_code != 200

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    warm.wait()  # every client warmed up (connection open, first requests served)
    began = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    ms = np.asarray(latencies) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "requests_s": len(ms) / wall, "failures": failures[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=str(Path(tempfile.gettempdir()) / "flightdeck-bench-service"))
    parser.add_argument("--requests", type=int, default=200, help="requests per single-row measurement")
    parser.add_argument("--batch-requests", type=int, default=64, help="requests per 100-row measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32],
                        help="client threads, one measurement each")
    args = parser.parse_args()
    home = Path(args.home)
    set_env(home)
    clock = time.perf_counter()
    prepare(home)
    print(f"set-up {time.perf_counter() - clock:.1f} s; load average {os.getloadavg()[0]:.2f}", flush=True)
    version, curated, matrix = payloads(home)
    cases = {"flightdeck": curated, "mlflow": matrix}
    ports = {name: free_port() for name in cases}
    env_uri = f"sqlite:///{home / 'mlflow.db'}"
    commands = {
        "flightdeck": ([str(BIN / "flightdeck"), "serve", "flights", "--port", str(ports["flightdeck"])],
                       f"http://127.0.0.1:{ports['flightdeck']}/ready", "/predict"),
        "mlflow": ([str(BIN / "mlflow"), "models", "serve", "-m", f"models:/flightdeck-flights/{version}",
                    "--env-manager", "local", "-h", "127.0.0.1", "-p", str(ports["mlflow"]), "-w", "1"],
                   f"http://127.0.0.1:{ports['mlflow']}/ping", "/invocations"),
    }
    os.environ["MLFLOW_TRACKING_URI"] = env_uri
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"  # mlflow execs `uvicorn`
    results: list[dict[str, Any]] = []
    for name, (command, ready, path) in commands.items():
        clock = time.perf_counter()
        process = start(command, ready, home / f"{name}.log")
        startup = time.perf_counter() - clock
        rows = cases[name]
        try:
            for size, n in ((1, args.requests), (100, args.batch_requests)):
                if name == "mlflow":
                    bodies = [{"dataframe_records": rows[i:i + size]} for i in range(0, len(rows) - size + 1, size)]
                else:
                    bodies = [rows[i] if size == 1 else rows[i:i + size] for i in range(0, len(rows) - size + 1, size)]
                for concurrency in args.concurrency:
                    figures = load(f"http://127.0.0.1:{ports[name]}{path}", bodies, concurrency, n)
                    results.append({"server": name, "rows": size, "concurrency": concurrency, "requests": n,
                                    "startup_s": startup, **figures, "rows_s": figures["requests_s"] * size,
                                    "load": os.getloadavg()[0]})
                    print(json.dumps(results[-1]), flush=True)
        finally:
            stop(process)
    reference = {(r["rows"], r["concurrency"]): r for r in results if r["server"] == "mlflow"}
    print("\n| server | rows/request | concurrency | requests | p50 ms | p99 ms | requests/s | rows/s "
          "| p50 × mlflow | rows/s ÷ mlflow | failures |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ref = reference[(r["rows"], r["concurrency"])]
        print(f"| {r['server']} | {r['rows']} | {r['concurrency']} | {r['requests']} | {r['p50_ms']:.1f} "
              f"| {r['p99_ms']:.1f} | {r['requests_s']:.1f} | {r['rows_s']:.0f} | {r['p50_ms'] / ref['p50_ms']:.2f} "
              f"| {r['rows_s'] / ref['rows_s']:.2f} | {r['failures']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
