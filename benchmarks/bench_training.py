"""Benchmark: the whole training stage on the full flights year against a plain lightgbm.train.

The year is delivered as one schedule file and one outcomes file, run through the data
stages once, then (each in a fresh subprocess, so peak RSS is its own):

* ``training``: ``train_model`` + ``register_model`` as the training DAG runs them (feature
  building, CV of four families, tuning, ensemble, evaluation artifacts, MLflow tracking);
* ``reference``: ``lightgbm.train`` on the same training feature matrix with the tuned
  LightGBM parameters, nothing else.

Usage: ``python benchmarks/bench_training.py`` (takes several minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_data_pipeline import peak_rss_mib


def year_spec():  # type: ignore[no-untyped-def]
    from flightdeck.core.settings import Settings
    from flightdeck.core.spec import load_spec

    base = load_spec(Settings.from_env().specs_dir / "flights.yaml")
    sources = {n: s.model_copy(update={"batch_date": None, "pattern": f"{n}_year.csv"})
               for n, s in base.sources.items()}
    quality = base.quality.model_copy(update={"max_event_lead": "P36500D"})
    return base.model_copy(update={"sources": sources, "quality": quality})


def prepare(home: Path) -> None:
    from flightdeck.core.settings import Settings
    from flightdeck.core.storage import open_store
    from flightdeck.data import replay, runners

    os.environ["FLIGHTDECK_HOME"] = str(home)
    spec = year_spec()
    settings = Settings.from_env()
    frame = replay.load_replay_source(spec)
    landing = open_store(settings.landing_uri)
    for name, source in spec.sources.items():
        landing.put_bytes(frame[list(source.columns)].to_csv(index=False).encode(), f"flights/{name}_year.csv")
    ctx = runners.StageContext(spec, settings, run_id="bench-data")
    for stage in (runners.ingest_deliveries, runners.validate_batches, runners.curate_batches, runners.split_dataset):
        stage(ctx)


def run_training(home: Path) -> dict[str, object]:
    from flightdeck.core.settings import Settings
    from flightdeck.data import runners
    from flightdeck.training import pipeline as training

    os.environ["FLIGHTDECK_HOME"] = str(home)
    ctx = runners.StageContext(year_spec(), Settings.from_env(), run_id=f"bench-train-{time.time():.0f}",
                               dag_id="flights_training")
    start = time.perf_counter()
    trained = training.train_model(ctx, force=True)
    training.register_model(ctx, trained)
    seconds = time.perf_counter() - start
    (home / "trained.json").write_text(json.dumps(trained, default=str))
    return {"seconds": seconds, "peak_rss_mib": peak_rss_mib(), "trained": trained}


def run_reference(home: Path) -> dict[str, object]:
    """Plain lightgbm.train on the training feature matrix, with the tuned LightGBM parameters."""
    import lightgbm as lgb
    import mlflow
    import numpy as np
    import pandas as pd
    from flightdeck.core.settings import Settings
    from flightdeck.data import runners
    from flightdeck.training import features
    from flightdeck.training import pipeline as training
    from flightdeck.training.train import SoftVotingEnsemble

    os.environ["FLIGHTDECK_HOME"] = str(home)
    settings = Settings.from_env()
    spec = year_spec()
    ctx = runners.StageContext(spec, settings, run_id="bench-ref")
    trained = json.loads((home / "trained.json").read_text())
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    leaderboard = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=trained["mlflow_run_id"], artifact_path="evaluation/leaderboard.json")).read_text())
    tuned = next((e["params"] for e in leaderboard if e["name"] == "lightgbm-tuned"), {})
    dataset = training.current_dataset(ctx)
    splits = training.load_splits(ctx, dataset, (None, None))
    references = features.load_references(spec, settings.resolve_pseudonymisation_key())
    history = pd.concat(splits.values(), ignore_index=True)
    prior = float(splits["train"][spec.target.name].astype("float64").mean())
    frame = features.build_feature_frame(splits["train"].reset_index(drop=True), spec, references, history, prior)
    layout = features.feature_layout(spec, frame)
    X = features.select_features(frame, layout)
    y = frame[spec.target.name].astype(int).to_numpy()
    pipe = features.build_estimator("lightgbm", spec, layout, tuned)
    Xt = pipe.named_steps["features"].fit_transform(X)
    params = {**pipe.named_steps["model"].get_params(), "objective": "binary"}
    rounds = int(params.pop("n_estimators"))
    params = {k: v for k, v in params.items() if v is not None and k not in ("importance_type", "class_weight")}
    start = time.perf_counter()
    booster = lgb.train(params, lgb.Dataset(np.asarray(Xt), y, categorical_feature=list(
        features.fit_params("lightgbm", layout).get("model__categorical_feature", []))), num_boost_round=rounds)
    seconds = time.perf_counter() - start
    assert booster.num_trees() > 0 and not isinstance(booster, SoftVotingEnsemble)
    from sklearn.metrics import log_loss

    baseline = {}  # the dummy candidate predicts the training prior for every flight
    for name in ("validation", "test"):
        labels = splits[name][spec.target.name].astype(int).to_numpy()
        baseline[name] = {"roc_auc": 0.5, "log_loss": float(log_loss(labels, np.full(labels.size, prior),
                                                                      labels=[0, 1]))}
    return {"seconds": seconds, "peak_rss_mib": peak_rss_mib(), "rounds": rounds, "params": tuned,
            "baseline": baseline}


def main() -> None:
    if len(sys.argv) == 3:
        mode, home = sys.argv[1], Path(sys.argv[2])
        result = {"prepare": lambda: prepare(home) or {}, "training": lambda: run_training(home),
                  "reference": lambda: run_reference(home)}[mode]()
        print(json.dumps(result, default=str))
        return
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "fd"
        out = {}
        for mode in ("prepare", "training", "reference"):
            proc = subprocess.run([sys.executable, __file__, mode, str(home)], capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"{mode} failed:\n{proc.stderr[-3000:]}")
            out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    t, r = out["training"], out["reference"]
    trained = t["trained"]
    print("| run | seconds | peak RSS MiB | x reference |")
    print("|---|---|---|---|")
    print(f"| training stage (CV, tuning, ensemble, artifacts, MLflow) | {t['seconds']:.1f} | "
          f"{t['peak_rss_mib']:.0f} | {t['seconds'] / r['seconds']:.1f} |")
    print(f"| plain lightgbm.train, {r['rounds']} rounds, tuned params | {r['seconds']:.1f} | "
          f"{r['peak_rss_mib']:.0f} | 1.0 |")
    print(f"\nchosen: {trained['chosen']}; validation {trained['validation']}; test {trained['test']}")
    print(f"dummy (prior) baseline: {r['baseline']}")
    print(f"tuned LightGBM params: {r['params']}")


if __name__ == "__main__":
    main()
