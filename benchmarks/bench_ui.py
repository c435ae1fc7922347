"""Benchmark: the FlightDeck pages with a year of data (issue: FlightDeck in the Airflow web UI).

Set-up: :func:`flightdeck.apps.ui.sample.fill_history` writes a year (365 days, 2013) of the
flights spec's life through the library's own writers into a fresh SQLite warehouse, MLflow
registry and lake: ``--rows`` predictions per day (the real year averages 923 flights a day),
two deliveries a day with quarantined rows and their reports, weekly dataset versions, daily
monitoring figures (decay, PSI of every feature), a new champion every 30 days with its
28 ML Test Score records, gate results and gate report.

Then each page is timed two ways, median (and worst) of ``--repeats`` warm runs:

- **render**: the view function (the queries, the registry, the score card) plus the template;
- **HTTP**: ``GET`` through the FastAPI app (``web.create_app``, in-process ``TestClient``),
  the auth dependency aside (a JWT check: microseconds).

The first request of each page in a fresh process (imports, MLflow client, migrations check)
is reported apart as "cold". The floor is ``GET /api/specs`` (a route that only lists the spec
files): the fixed cost of a request through the app.
Usage: ``python benchmarks/bench_ui.py [--rows 923] [--repeats 15]``. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

PAGES = ("models", "data", "predictions", "monitoring")


def fill(home: Path, rows: int) -> dict[str, object]:
    from flightdeck.apps.ui import sample
    from flightdeck.core.settings import Settings
    from flightdeck.core.spec import load_spec

    settings = Settings.from_env({"FLIGHTDECK_HOME": str(home)})
    spec = load_spec(settings.specs_dir / "flights.yaml")
    start = time.perf_counter()
    history = sample.fill_history(settings, spec, date(2013, 1, 1), 365, rows_per_day=rows)
    return {"seconds": time.perf_counter() - start, "key": history.key, "versions": len(history.versions)}


def cold(home: Path, page: str) -> float:
    """The first request of ``page`` in a fresh interpreter (imports included)."""
    code = ("import time, sys; t = time.perf_counter(); from fastapi.testclient import TestClient; "
            "from flightdeck.apps.ui.web import create_app; c = TestClient(create_app()); "
            f"r = c.get('/flights/{page}'); assert r.status_code == 200, r.text; "
            "print(time.perf_counter() - t)")
    env = {**os.environ, "FLIGHTDECK_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def timed(fn, repeats: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    fn()  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=923, help="predictions per day")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="fd-bench-ui-"))
    os.environ["FLIGHTDECK_HOME"] = str(home)
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    made = fill(home, args.rows)

    from fastapi.testclient import TestClient
    from flightdeck.apps.ui import pages, views
    from flightdeck.apps.ui.web import create_app
    from flightdeck.core.settings import Settings

    settings = Settings.from_env()
    specs = views.spec_names(settings)
    client = TestClient(create_app())
    key = "&".join(f"key.{k}={v}" for k, v in made["key"].items())  # type: ignore[attr-defined]
    renders = {
        "index": lambda: pages.render_index(views.summaries(settings), specs),
        "models": lambda: pages.render_models(views.models_view(settings, "flights"), specs),
        "data": lambda: pages.render_data(views.data_view(settings, "flights"), specs),
        "predictions": lambda: pages.render_predictions(
            views.predictions_view(settings, "flights", dict(made["key"])), specs),  # type: ignore[call-overload]
        "monitoring": lambda: pages.render_monitoring(views.monitoring_view(settings, "flights"), specs),
    }
    urls = {"index": "/", "models": "/flights/models", "data": "/flights/data",
            "predictions": f"/flights/predictions?{key}", "monitoring": "/flights/monitoring"}
    engine = views.engine_of(settings)
    import sqlalchemy as sa

    with engine.connect() as conn:
        counts = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()  # noqa: S608 - fixed names
                  for t in ("flights_predictions", "fd_catalog", "fd_quarantine", "fd_monitoring_metrics",
                            "fd_scoring_runs", "fd_test_evidence")}
    print(f"filled a year in {made['seconds']:.1f} s: {json.dumps(counts)}, {made['versions']} model versions")
    floor, _ = timed(lambda: client.get("/api/specs").raise_for_status(), args.repeats)
    print(f"floor: GET /api/specs median {floor * 1000:.1f} ms")
    print("| page | render median s | render worst s | HTTP median s | HTTP worst s | HTML KiB | x floor | cold s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, render in renders.items():
        r_med, r_max = timed(render, args.repeats)
        h_med, h_max = timed(lambda url=urls[name]: client.get(url).raise_for_status(), args.repeats)
        size = len(client.get(urls[name]).content) / 1024
        first = cold(home, name) if name in PAGES else None
        print(f"| {name} | {r_med:.3f} | {r_max:.3f} | {h_med:.3f} | {h_max:.3f} | {size:.0f} | "
              f"{h_med / floor:.1f} | {'-' if first is None else f'{first:.2f}'} |")


if __name__ == "__main__":
    main()
