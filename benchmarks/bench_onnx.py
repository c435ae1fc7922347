"""Benchmark: the ONNX export of a LightGBM champion under onnxruntime against the native MLflow pyfunc.

Set-up: April 2013 flights through ingestion and wrangling, features built by the training
code (weather and planes joins, history rates), and a LightGBM pipeline fitted like training
does (the spec's default parameters: 300 trees, 31 leaves, ``threads`` from the spec) on the
first three weeks. The scoring rows are the last week's feature rows, resampled (seeded) to
each size. The pyfunc is saved with ``mlflow.pyfunc.save_model`` and loaded back, as the
registry would give it; the ONNX graph is :func:`flightdeck.training.packaging.export_onnx`
(the whole pipeline, preprocessing included).

Per size (default 100k and 1M rows), best of ``--repeat`` runs of:

* ``pyfunc``: ``PyFuncModel.predict`` on the feature frame (the reference);
* ``pipeline``: the fitted Pipeline's ``predict_proba`` on the typed model input;
* ``onnxruntime``: the same feature frame typed by ``select_features``, its input arrays built and
  :func:`~flightdeck.training.packaging.predict_onnx` run (what the pyfunc does, in ONNX), and
  ``session.run`` alone on ready arrays (on the spec's threads, and on one thread).

Then single-row latency (p50/p99 over ``--single`` calls) and the parity on every row scored.
Usage: ``python benchmarks/bench_onnx.py [--rows 100000 1000000] [--repeat 3] [--single 300]``.
Nothing is asserted; the figures to read are the ratios to the pyfunc measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO / "include")]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
KEY = "bench-onnx-key"


def curated_april(spec: Any) -> pd.DataFrame:
    """April 2013 flights through ingestion and wrangling, as the data DAG curates them."""
    from flightdeck.core.warehouse import now
    from flightdeck.data import ingest, wrangle
    from flightdeck.data.replay import load_replay_source

    frame = load_replay_source(spec)
    rows = frame[(frame["_local_date"] >= date(2013, 4, 1)) & (frame["_local_date"] <= date(2013, 4, 30))]
    parsed = {}
    for name, source in (("features", spec.features_source), ("labels", spec.labels_source)):
        rules = ingest.RowRules(batch_id=name, batch_date=None, received_at=now())
        accepted = ingest.parse_rows(rows[list(source.columns)], spec, source, rules, 1, KEY).accepted
        parsed[name] = accepted.drop(columns=["_batch_id", "_row_number"])
    curated = wrangle.wrangle_frame(parsed["features"], parsed["labels"], spec)
    return curated[curated[spec.target.name].notna()].sort_values(spec.event_time).reset_index(drop=True)


def fitted_champion(spec: Any) -> tuple[Any, Any, pd.DataFrame]:
    """(pipeline, layout, scoring feature frame) fitted on three weeks, scoring rows from the fourth."""
    from flightdeck.data import wrangle
    from flightdeck.training import features

    curated = curated_april(spec)
    params = wrangle.fit_wrangle(curated, spec)
    rows = wrangle.apply_wrangle(curated, spec, params)
    references = features.load_references(spec, KEY)
    cut = pd.Timestamp("2013-04-22", tz="UTC")
    train = rows[rows[spec.event_time] < cut]
    prior = float(train[spec.target.name].astype("float64").mean())
    frame = features.build_feature_frame(rows, spec, references, train, prior)
    layout = features.feature_layout(spec, frame)
    fit_rows = frame[frame[spec.event_time] < cut]
    pipeline = features.build_estimator("lightgbm", spec, layout)
    pipeline.fit(features.select_features(fit_rows, layout), fit_rows[spec.target.name].astype(int),
                 **features.fit_params("lightgbm", layout))
    return pipeline, layout, frame[frame[spec.event_time] >= cut][layout.columns].reset_index(drop=True)


def best_of(repeat: int, call: Callable[[], Any]) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - started)
    return min(times), out


def single_row(call: Callable[[pd.DataFrame], Any], rows: pd.DataFrame, n: int) -> tuple[float, float]:
    """p50 and p99 of one-row calls, in milliseconds (after a warm-up)."""
    for i in range(5):
        call(rows.iloc[[i]])
    latencies = []
    for i in range(n):
        row = rows.iloc[[i % len(rows)]]
        started = time.perf_counter()
        call(row)
        latencies.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--single", type=int, default=300)
    args = parser.parse_args()

    import mlflow.pyfunc
    from flightdeck.core.spec import load_spec
    from flightdeck.training import features, packaging
    from flightdeck.training.model import FlightDeckClassifier

    spec = load_spec(REPO / "include" / "specs" / "flights.yaml")
    threads = spec.training.threads
    pipeline, layout, pool = fitted_champion(spec)
    started = time.perf_counter()
    model = packaging.export_onnx(pipeline, layout, pool.head(16))
    export_s = time.perf_counter() - started
    assert isinstance(model, bytes), model
    session = packaging.session_for(model, threads)
    single_thread = packaging.session_for(model, 1)
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.pyfunc.save_model(str(Path(tmp) / "model"), python_model=FlightDeckClassifier(pipeline,
                                                                                             layout.to_dict()))
        pyfunc = mlflow.pyfunc.load_model(str(Path(tmp) / "model"))
    print(f"model: LightGBM, {pipeline.named_steps['model'].n_estimators} trees, {len(layout.columns)} features "
          f"({len(layout.categorical)} categorical); threads {threads}; export {export_s:.2f} s, "
          f"{len(model) / 1e6:.2f} MB ONNX; {packaging.runtime_versions()}")
    print("| rows | path | seconds | rows/s | x pyfunc | max abs diff vs pyfunc |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(7)
    for n in args.rows:
        frame = pool.iloc[rng.integers(0, len(pool), n)].reset_index(drop=True)
        X = features.select_features(frame, layout)
        feed = packaging.onnx_inputs(X, layout)
        ref_s, ref = best_of(args.repeat, lambda frame=frame: np.asarray(pyfunc.predict(frame), dtype=float))
        results = {
            "pyfunc (reference)": (ref_s, ref),
            "Pipeline.predict_proba": best_of(args.repeat, lambda X=X: pipeline.predict_proba(X)[:, 1]),
            "onnxruntime (frame to scores)": best_of(args.repeat, lambda frame=frame: packaging.predict_onnx(
                session, features.select_features(frame, layout), layout)),
            "onnxruntime session.run only": best_of(args.repeat, lambda feed=feed: np.asarray(
                session.run([packaging.PROBABILITIES], feed)[0], dtype=float)[:, 1]),
            "onnxruntime session.run only, 1 thread": best_of(args.repeat, lambda feed=feed: np.asarray(
                single_thread.run([packaging.PROBABILITIES], feed)[0], dtype=float)[:, 1]),
        }
        for path, (seconds, scores) in results.items():
            diff = float(np.max(np.abs(np.asarray(scores, dtype=float) - ref)))
            print(f"| {n:,} | {path} | {seconds:.2f} | {n / seconds:,.0f} | {seconds / ref_s:.2f} | {diff:.2g} |")
    sample = pool.head(500)
    p50_ref, p99_ref = single_row(lambda r: pyfunc.predict(r), sample, args.single)
    p50_onnx, p99_onnx = single_row(
        lambda r: packaging.predict_onnx(session, features.select_features(r, layout), layout), sample, args.single)
    feeds = [packaging.onnx_inputs(features.select_features(sample.iloc[[i]], layout), layout) for i in range(500)]
    p50_run, p99_run = single_row(lambda r: session.run([packaging.PROBABILITIES], feeds[int(r.index[0])]),
                                  sample, args.single)
    print(f"\n| single row | p50 ms | p99 ms | p50 x pyfunc |\n|---|---|---|---|\n"
          f"| pyfunc (reference) | {p50_ref:.3f} | {p99_ref:.3f} | 1.00 |\n"
          f"| onnxruntime (select_features + inputs + run) | {p50_onnx:.3f} | {p99_onnx:.3f} | "
          f"{p50_onnx / p50_ref:.2f} |\n"
          f"| onnxruntime session.run only | {p50_run:.3f} | {p99_run:.3f} | {p50_run / p50_ref:.3f} |")


if __name__ == "__main__":
    main()
