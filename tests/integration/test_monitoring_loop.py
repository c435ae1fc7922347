"""Monitoring and the continuous-training loop on real flights: real dag.test() runs, a real MLflow
registry, a real SQLite warehouse.

One state is prepared per module (:func:`env`) and grows test by test, like days passing:

* 2013-04-01..21 delivered (schedules and outcomes), curated and split; a first champion
  trained, judged and promoted by :func:`flightdeck.apps.year.retrain_and_gate` (the training and
  gate DAGs' stages in-process);
* the schedules of 04-22..24 delivered and scored, one scoring run per day, outcomes not yet;
* the monitoring DAG runs (:func:`first_monitoring`); the outcomes of 04-22 arrive late, with a
  label for a key never scheduled, then again as a second batch (:func:`labelled`);
* the outcomes of 04-23 and 04-24 arrive with their delays shuffled (the realised ROC AUC
  collapses) and the monitoring DAG asks for retraining (:func:`alerting`);
* a later monitoring run inside the cooldown is held back (no second request);
* 04-25..05-07 arrive whole (genuine), 05-08..09 open, and the loop retrains on the request,
  promotes the challenger and rescores the open partitions (the last test).

The spec copy keeps training cheap (as ``test_gates`` does) and asks for only 500 labelled
rows before decay is judged, so three labelled days suffice instead of the two weeks
production waits for.
"""

from __future__ import annotations

import io
import json
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from registry import alias_version, registry_client

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SPEC = "flights"
OPEN = ["2013-04-22", "2013-04-23", "2013-04-24"]  # scored by the first champion before their outcomes land
LATE = OPEN[0]                                     # its genuine outcomes arrive late (twice)
DEGRADED = OPEN[1:]                                # their outcomes arrive with shuffled delays
GENUINE_AFTER = [d.date().isoformat() for d in pd.date_range("2013-04-25", "2013-05-07")]  # delivered whole
OPEN_AFTER = ["2013-05-08", "2013-05-09"]          # schedules open when the challenger is judged
UNKNOWN_FLIGHT = "9999"                            # no flight carries this number in 2013
DECAY_METRICS = {"roc_auc", "precision", "recall", "f1", "log_loss", "calibration_error", "prediction_bias"}
RETRAIN_ASSET = f"flightdeck.{SPEC}.retrain"


# ---------------------------------------------------------------- the prepared state
@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, airflow_db) -> Any:
    """Three weeks of flights curated, a first champion promoted, three open days scored."""
    from flightdeck.apps import year
    from flightdeck.core.settings import Settings
    from flightdeck.core.spec import load_spec
    from flightdeck.core.storage import open_store
    from flightdeck.data import replay
    from flightdeck.serving import scoring

    root = tmp_path_factory.mktemp("monitoring")
    specs = root / "specs"
    shutil.copytree(REPO / "include" / "specs" / SPEC, specs / SPEC)
    raw = yaml.safe_load((REPO / "include" / "specs" / f"{SPEC}.yaml").read_text())
    # one model family: champion and challenger are comparable, so the canary's score-shift limit judges
    # the retrain and not a change of family (an ensemble with a logistic shifts every score)
    raw["training"].update({"candidates": ["dummy", "lightgbm"], "cv_folds": 2, "tune_top": 0})
    raw["gates"].update({"baseline": "dummy", "max_calibration_error": 0.15})
    monitoring = raw.setdefault("monitoring", {})
    monitoring.setdefault("decay", {}).update({"metric": "roc_auc", "window": "P14D", "min_labelled": 500,
                                               "max_drop": 0.05})
    monitoring.update({"retrain_on": ["decay"], "cooldown": "P14D"})
    (specs / f"{SPEC}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLIGHTDECK_HOME", str(root / "fd"))
        mp.setenv("FLIGHTDECK_SPECS_DIR", str(specs))
        mp.setenv("FLIGHTDECK_PSEUDONYMISATION_KEY", "monitoring-key")
        settings = Settings.from_env()
        spec = load_spec(specs / f"{SPEC}.yaml")
        source = replay.load_replay_source(spec)
        source = source[(source["_local_date"] >= date(2013, 4, 1)) & (source["_local_date"] <= date(2013, 5, 9))]
        e = {"settings": settings, "spec": spec, "source": source, "landing": open_store(settings.landing_uri)}
        for d in pd.date_range("2013-04-01", "2013-04-21"):
            _deliver(e, d.date().isoformat(), ("schedule", "outcomes"))
        for day in OPEN:
            _deliver(e, day, ("schedule",))
        year.data_stages(_ctx(e, "data__bootstrap", "flights_data"))
        first = year.retrain_and_gate(_ctx(e, "training__bootstrap", "flights_training"), "bootstrap",
                                      (None, None), settings.min_ml_test_score)
        assert first["promoted"], first["reasons"]
        e["v1"] = first["version"]
        model = scoring.load_model(_ctx(e, "scoring__load"))
        assert model.version == e["v1"]
        assert scoring.partitions_to_score(_ctx(e, "scoring__list"), model.version) == OPEN
        for day in OPEN:  # one scoring run per day, as the scoring DAG would run them
            scoring.score_partition(_ctx(e, f"scoring__{day}", "flights_scoring"), day, model.version, model=model)
        yield e


def _ctx(env: dict[str, Any], run_id: str, dag_id: str = "flights_monitoring") -> Any:
    from flightdeck.data.runners import StageContext

    return StageContext(env["spec"], env["settings"], run_id=run_id, dag_id=dag_id)


def _cut(env: dict[str, Any], day: str, source: str) -> tuple[str, pd.DataFrame]:
    """The replay cut of one source's delivery of one day: its file name and rows (as delivered text)."""
    from flightdeck.data import replay

    d = date.fromisoformat(day)
    frame = env["source"][env["source"]["_local_date"] == d]
    for delivery, payload in replay.cut_deliveries(env["spec"], frame, d, d):
        if delivery.source == source:
            rows = pd.read_csv(io.BytesIO(payload), dtype=str, keep_default_na=False, na_filter=False)
            return delivery.file_name, rows
    raise AssertionError(f"no {source} delivery on {day}")


def _land(env: dict[str, Any], file_name: str, rows: pd.DataFrame) -> None:
    env["landing"].put_bytes(rows.to_csv(index=False).encode(), f"{SPEC}/{file_name}")


def _deliver(env: dict[str, Any], day: str, sources: tuple[str, ...]) -> None:
    for source in sources:
        _land(env, *_cut(env, day, source))


def _shuffled_delays(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The day's outcomes with the departure delays permuted among the flights that departed."""
    out = rows.copy()
    departed = ~out["dep_delay"].isin(["", "NA"])  # cancelled flights stay without a delay
    out.loc[departed, "dep_delay"] = np.random.default_rng(seed).permutation(out.loc[departed, "dep_delay"].to_numpy())
    return out


def _figures(env: dict[str, Any], **where: Any) -> list[dict[str, Any]]:
    from flightdeck.core import warehouse

    engine = warehouse.connect(env["settings"].warehouse_url)
    return warehouse.select_rows(engine, warehouse.monitoring_metrics, {"spec_name": SPEC, **where})


def _one(rows: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(rows) == 1, rows
    return rows[0]


def _count(env: dict[str, Any], table: str, **where: Any) -> int:
    from flightdeck.core import warehouse

    engine = warehouse.connect(env["settings"].warehouse_url)
    t = warehouse.metadata.tables[table]
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(t)
                                .where(*(t.c[k] == v for k, v in where.items()))).scalar())


def _curated(env: dict[str, Any], day: str) -> pd.DataFrame:
    from flightdeck.monitoring import monitor as monitoring

    frame = monitoring.read_curated(_ctx(env, "read"), day)
    assert frame is not None, day
    return frame


def _labelled_rows(env: dict[str, Any], day: str) -> int:
    return int(_curated(env, day)[env["spec"].target.name].notna().sum())


def _monitored_features(env: dict[str, Any], version: str) -> set[str]:
    from flightdeck.monitoring import monitor as monitoring

    layout = monitoring.ModelCache(_ctx(env, "layout")).get(version).layout
    wanted = set(env["spec"].monitoring.drift.features) or set(layout.columns)
    return wanted & set(layout.columns)


def _states(run: Any) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def _retrain_events(source_run_id: str | None = None) -> list[dict[str, Any]]:
    """Events of the retrain Asset in Airflow's metadata DB (of one DAG run, or all)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    query = (sa.select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
             .where(AssetModel.name == RETRAIN_ASSET))
    if source_run_id is not None:
        query = query.where(AssetEvent.source_run_id == source_run_id)
    with create_session() as session:
        return [{"extra": dict(ev.extra or {}), "source_dag_id": ev.source_dag_id, "source_run_id": ev.source_run_id,
                 "source_task_id": ev.source_task_id} for ev in session.scalars(query)]


@pytest.fixture(scope="module")
def monitoring_dag(env: dict[str, Any]) -> Any:
    """``flights_monitoring``, parsed from the dags folder with this module's specs directory."""
    import os

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    assert not bag.import_errors, bag.import_errors
    return bag.dags[f"{SPEC}_monitoring"]


@pytest.fixture(scope="module")
def first_monitoring(env: dict[str, Any], monitoring_dag: Any) -> Any:
    """The monitoring DAG after the scoring runs, before any outcome of the scored days arrived."""
    return monitoring_dag.test()


@pytest.fixture(scope="module")
def labelled(env: dict[str, Any], first_monitoring: Any) -> dict[str, Any]:
    """The outcomes of LATE arrive (plus one for a key never scheduled), then the same outcomes again."""
    from flightdeck.apps import year
    from flightdeck.monitoring import monitor as monitoring

    name, rows = _cut(env, LATE, "outcomes")
    stranger = rows.iloc[[0]].copy()
    stranger["flight"] = UNKNOWN_FLIGHT
    _land(env, name, pd.concat([rows, stranger], ignore_index=True))
    year.data_stages(_ctx(env, "data__labels-1", "flights_data"))
    first = monitoring.run_monitoring(_ctx(env, "monitoring__labels-1"))
    once = {f["metric"]: f for f in _figures(env, check_name="decay", partition_date=LATE, window="partition",
                                             subject="")}
    # the same outcomes once more: other bytes (rows reversed) and another name, so a new batch
    _land(env, name.replace(".csv", "_resent.csv"), rows.iloc[::-1])
    year.data_stages(_ctx(env, "data__labels-2", "flights_data"))
    second = monitoring.run_monitoring(_ctx(env, "monitoring__labels-2"))
    return {"rows": rows, "first": first, "once": once, "second": second}


@pytest.fixture(scope="module")
def alerting(env: dict[str, Any], monitoring_dag: Any, labelled: dict[str, Any]) -> Any:
    """The outcomes of DEGRADED arrive with shuffled delays; the monitoring DAG runs on them."""
    from flightdeck.apps import year

    for i, day in enumerate(DEGRADED):
        name, rows = _cut(env, day, "outcomes")
        _land(env, name, _shuffled_delays(rows, seed=13 + i))
    year.data_stages(_ctx(env, "data__degraded", "flights_data"))
    return monitoring_dag.test()


# ---------------------------------------------------------------- 1. after a scoring run
def test_the_monitoring_dag_measures_every_check_of_the_scored_partitions(env, first_monitoring):
    """Every check writes figures after a scoring run; decay says "no_labels", never a zero metric;
    training and serving paths agree (skew 0); evidence monitor_1..7 is recorded for the champion."""
    from flightdeck.core import warehouse
    from flightdeck.serving import predictions

    run, v1 = first_monitoring, env["v1"]
    assert _states(run) == {"monitor": "success", "request_retraining": "skipped"}  # nothing asks to retrain
    as_of = OPEN[-1]  # the newest published partition
    monitored = _monitored_features(env, v1)
    assert len(monitored) >= 10
    for day in OPEN:
        published = predictions.count_partition(_ctx(env, "count").engine, env["spec"], day)["rows"]
        assert published == len(_curated(env, day)) > 500
        by_check: dict[str, list[dict[str, Any]]] = {}
        for f in _figures(env, partition_date=day, window="partition"):
            by_check.setdefault(f["check_name"], []).append(f)
        assert set(by_check) == {"stability", "invariants", "drift", "score_drift", "skew"}, day
        assert all(f["run_id"] == run.run_id and f["model_version"] == v1 for fs in by_check.values() for f in fs)

        stability = {f["metric"]: f for f in by_check["stability"]}
        assert set(stability) == {"nan_scores", "infinite_scores", "out_of_range_scores", "extreme_share",
                                  "mean_score"}
        for metric in ("nan_scores", "infinite_scores", "out_of_range_scores"):
            assert (stability[metric]["value"], stability[metric]["status"]) == (0.0, "ok")
        assert stability["mean_score"]["rows"] == published and 0 < stability["mean_score"]["value"] < 1

        invariants = {f["metric"]: f for f in by_check["invariants"]}
        assert invariants["validated"]["value"] == 1.0 and invariants["validated"]["status"] in ("ok", "warn")
        assert invariants["refused_batches"]["value"] == 0.0

        psi = [f for f in by_check["drift"] if f["metric"] == "psi"]
        assert sorted(f["subject"] for f in psi) == sorted(monitored), "one PSI row per monitored feature"
        assert all(f["value"] is not None and f["value"] >= 0 and f["rows"] == published for f in psi)
        assert all(f["status"] in ("ok", "warn", "alert") for f in psi)
        summary = _one([f for f in by_check["drift"] if f["metric"] == "features_in_alert"])
        alerted = sorted(f["subject"] for f in psi if f["status"] == "alert")
        assert summary["subject"] == "" and summary["value"] == len(alerted)
        assert sorted(json.loads(summary["detail"])["alert"]) == alerted
        score_drift = _one(by_check["score_drift"])
        assert score_drift["metric"] == "psi" and score_drift["value"] >= 0 and score_drift["rows"] == published

        skew = {(f["metric"], f["subject"]): f for f in by_check["skew"]}
        assert set(skew) == {("rows_differing_share", ""), ("features_differing", "")}, "no feature differs"
        share = skew[("rows_differing_share", "")]
        assert (share["value"], share["status"]) == (0.0, "ok")
        assert share["rows"] == min(env["spec"].monitoring.skew_sample_rows, published)
        assert json.loads(share["detail"])["missing_in_raw"] == 0

    # no decay figure of a partition before its labels; the rolling window says so, with no value
    assert _figures(env, check_name="decay", window="partition") == []
    rolling = _one(_figures(env, check_name="decay", window="rolling"))
    assert (rolling["metric"], rolling["partition_date"], rolling["status"], rolling["value"], rolling["rows"]) == (
        "roc_auc", as_of, "no_labels", None, 0)
    assert all(f["value"] is None for f in _figures(env, check_name="decay"))

    run_level = {(f["check_name"], f["metric"], f["subject"]): f
                 for f in _figures(env, partition_date=as_of, window="run")}
    for metric in ("model_data_age_days", "model_registry_age_days", "input_age_hours"):
        assert run_level[("staleness", metric, "")]["status"] == "ok", metric
    assert 0 < run_level[("staleness", "model_data_age_days", "")]["value"] <= 30
    assert ("performance", "rows_per_s_ratio", "") in run_level  # three scoring runs: a ratio to their median
    assert run_level[("performance", "rows_per_s", "")]["rows"] == len(_curated(env, as_of))
    deps = {s: f for (c, _, s), f in run_level.items() if c == "dependencies"}
    assert set(deps) == {"packages", "schema:schedule", "schema:outcomes"}
    assert all((f["value"], f["status"]) == (0.0, "ok") for f in deps.values()), "a first run sets the baseline"

    engine = warehouse.connect(env["settings"].warehouse_url)
    evidence = {e["test_id"]: e for e in warehouse.select_rows(engine, warehouse.test_evidence,
                                                               {"run_id": run.run_id})}
    assert set(evidence) == {f"monitor_{i}" for i in range(1, 8)}
    assert all(e["model_version"] == v1 and e["section"] == "monitor" and e["mode"] == "automated"
               and e["dag_id"] == f"{SPEC}_monitoring" for e in evidence.values())
    assert {t: evidence[t]["outcome"] for t in ("monitor_1", "monitor_2", "monitor_3", "monitor_4", "monitor_5",
                                                "monitor_7")} == {
        "monitor_1": "pass", "monitor_2": "pass", "monitor_3": "pass", "monitor_4": "pass", "monitor_5": "pass",
        "monitor_7": "not_run"}  # decay cannot be judged without labels: not run, neither pass nor fail
    # throughput depends on the machine's load: whatever it measured, the evidence follows the figures
    perf = {f["status"] for f in _figures(env, check_name="performance", partition_date=as_of)}
    assert evidence["monitor_6"]["outcome"] == ("fail" if "alert" in perf else
                                                "not_run" if perf <= {"insufficient"} else "pass")
    assert _count(env, "fd_retraining") == 0, "'none' is not recorded"


# ---------------------------------------------------------------- 2. late labels
def test_late_labels_give_decay_per_partition_orphans_kept_and_duplicates_counted_once(env, labelled):
    """Outcomes of a scored day arrive: realised metrics on exactly the labelled scored rows; an outcome
    for a key never scheduled is counted and kept; the same outcomes delivered again count as duplicates
    and change nothing; re-running monitoring adds no row."""
    from flightdeck.core import warehouse
    from flightdeck.monitoring import monitor as monitoring

    spec, v1 = env["spec"], env["v1"]
    n = _labelled_rows(env, LATE)
    assert 500 < n < len(_curated(env, LATE)), "cancelled flights have no label"
    assert labelled["first"]["partitions"]["decay"] == [LATE]
    once = labelled["once"]
    assert DECAY_METRICS <= set(once)
    for metric in DECAY_METRICS:
        assert once[metric]["rows"] == n and once[metric]["value"] is not None, metric
        assert once[metric]["model_version"] == v1
    assert 0.5 < once["roc_auc"]["value"] < 1 and once["roc_auc"]["status"] in ("ok", "alert")
    assert once["roc_auc"]["threshold"] == pytest.approx(
        float(registry_client(env).get_model_version(spec.registered_model_name, v1).tags["test.roc_auc"])
        - spec.monitoring.decay.max_drop)
    assert (once["labels_unknown_key"]["value"], once["labels_unknown_key"]["status"]) == (1.0, "warn")
    assert once["labels_duplicate"]["value"] == 0.0
    slices = _figures(env, check_name="decay", partition_date=LATE, window="partition", metric="roc_auc")
    assert {f["subject"].split("=")[0] for f in slices if f["subject"]} == set(spec.training.slices)

    # the second delivery: every genuine key now came twice, and is counted once
    again = {f["metric"]: f for f in _figures(env, check_name="decay", partition_date=LATE, window="partition",
                                              subject="")}
    assert labelled["second"]["partitions"]["decay"] == [LATE], "new labels of the partition: measured again"
    delivered = len(labelled["rows"])
    assert again["labels_duplicate"]["value"] == delivered and again["labels_duplicate"]["status"] == "warn"
    assert again["labels_duplicate"]["rows"] == 2 * delivered + 1, "every delivered outcome row is seen"
    assert again["labels_unknown_key"]["value"] == 1.0
    for metric in DECAY_METRICS:
        assert again[metric]["rows"] == n, f"{metric}: duplicates must not count twice"
        assert again[metric]["value"] == pytest.approx(once[metric]["value"]), metric
    rolling = _one(_figures(env, check_name="decay", window="rolling", metric="roc_auc", partition_date=OPEN[-1]))
    assert rolling["rows"] == n and rolling["value"] == pytest.approx(once["roc_auc"]["value"])

    engine = warehouse.connect(env["settings"].warehouse_url)
    orphans = warehouse.select_rows(engine, warehouse.label_orphans, {"spec_name": SPEC, "partition_date": LATE})
    unknown = [o for o in orphans if o["reason"] == "unknown_key"]
    assert len(unknown) == 1 and json.loads(unknown[0]["entity_key"])["flight"] == UNKNOWN_FLIGHT
    assert unknown[0]["occurrences"] == 1
    duplicates = [o for o in orphans if o["reason"] == "duplicate"]
    assert len(duplicates) == delivered and all(o["occurrences"] == 2 for o in duplicates)
    assert all(len(json.loads(o["batch_ids"])) == 2 for o in duplicates)

    # re-running (a new run, a forced re-check of the partition, the same run again) adds no row
    tables = ("fd_monitoring_metrics", "fd_label_orphans", "fd_retraining")
    before = {t: _count(env, t) for t in tables}
    fingerprints = _count(env, "fd_fingerprints")
    rerun = monitoring.run_monitoring(_ctx(env, "monitoring__labels-3"))
    assert "decay" not in rerun["partitions"] and "serving" not in rerun["partitions"], "nothing changed"
    forced = monitoring.run_monitoring(_ctx(env, "monitoring__labels-4"), partitions=[LATE])
    assert forced["partitions"] == {"serving": [LATE], "decay": [LATE]}
    evidence = _count(env, "fd_test_evidence", run_id="monitoring__labels-4")
    monitoring.run_monitoring(_ctx(env, "monitoring__labels-4"), partitions=[LATE])
    assert {t: _count(env, t) for t in tables} == before
    assert _count(env, "fd_fingerprints") == fingerprints + 2 * 3, "one baseline per run: packages and two schemas"
    assert _count(env, "fd_test_evidence", run_id="monitoring__labels-4") == evidence == 7
    again_rows = {f["metric"]: f["rows"] for f in _figures(env, check_name="decay", partition_date=LATE,
                                                             window="partition", subject="")}
    assert {m: again_rows[m] for m in DECAY_METRICS} == {m: n for m in DECAY_METRICS}


# ---------------------------------------------------------------- 3. injected drift
def test_a_shift_injected_in_one_feature_raises_drift_for_that_feature_only(env, first_monitoring):
    """Distance tripled in one curated partition and rescored by name: distance alone alerts; every
    other feature keeps exactly the PSI and status it had; skew names distance as the one difference."""
    from flightdeck.core import lake
    from flightdeck.monitoring import monitor as monitoring
    from flightdeck.serving import scoring

    day, v1 = OPEN[1], env["v1"]
    ctx = _ctx(env, "drift__inject")
    # the untouched partition rescored now, so that both sides serve with the same label history
    # (the history features move as outcomes arrive: that is not the injected shift)
    scoring.score_partition(_ctx(env, "scoring__drift-baseline", "flights_scoring"), day, v1)
    monitoring.run_monitoring(_ctx(env, "drift__baseline"))
    before = {f["subject"]: f for f in _figures(env, check_name="drift", metric="psi", partition_date=day)}
    assert before["distance"]["status"] != "alert" and before["distance"]["run_id"] == "drift__baseline"
    path = ctx.lake.path(lake.curated(SPEC, day))
    original = path.read_bytes()
    try:
        frame = pd.read_parquet(path)
        frame["distance"] = (frame["distance"] * 3).clip(upper=6000)  # the spec's declared maximum
        frame.to_parquet(path, index=False)
        scoring.score_partition(_ctx(env, "scoring__drift", "flights_scoring"), day, v1)
        manifest = monitoring.run_monitoring(ctx)
        assert manifest["partitions"]["serving"] == [day], "a new scoring run of the partition is checked again"
        after = {f["subject"]: f for f in _figures(env, check_name="drift", metric="psi", partition_date=day)}
        assert set(after) == set(before)
        assert after["distance"]["status"] == "alert" and after["distance"]["run_id"] == ctx.run_id
        assert after["distance"]["value"] > max(env["spec"].monitoring.drift.psi_alert, before["distance"]["value"])
        for feature in set(before) - {"distance"}:
            assert after[feature]["status"] == before[feature]["status"], feature
            assert after[feature]["value"] == pytest.approx(before[feature]["value"]), feature
        summary = _one(_figures(env, check_name="drift", metric="features_in_alert", partition_date=day))
        assert "distance" in json.loads(summary["detail"])["alert"]
        assert summary["value"] == sum(f["status"] == "alert" for f in after.values())
        skew = {(f["metric"], f["subject"]): f for f in _figures(env, check_name="skew", partition_date=day)}
        assert skew[("features_differing", "")]["value"] == 1.0
        assert [s for (m, s) in skew if m == "rows_differing"] == ["distance"]
        assert skew[("rows_differing_share", "")]["status"] == "alert"
    finally:  # the partition as delivered, scored again: later tests see the genuine day
        path.write_bytes(original)
        scoring.score_partition(_ctx(env, "scoring__restore", "flights_scoring"), day, v1)
        monitoring.run_monitoring(_ctx(env, "drift__restore"))
    restored = {f["subject"]: f for f in _figures(env, check_name="drift", metric="psi", partition_date=day)}
    assert {k: f["status"] for k, f in restored.items()} == {k: f["status"] for k, f in before.items()}
    assert {k: f["value"] for k, f in restored.items()} == pytest.approx({k: f["value"] for k, f in before.items()})


# ---------------------------------------------------------------- 4. decay asks for retraining
def test_decay_makes_the_monitoring_dag_request_retraining_with_its_reason(env, alerting):
    """Shuffled outcomes collapse the realised ROC AUC: the rolling decay alerts, request_retraining
    emits the retrain Asset with the reason in its extra, and the decision is recorded."""
    from flightdeck.core import warehouse

    run = alerting
    assert _states(run) == {"monitor": "success", "request_retraining": "success"}
    as_of = OPEN[-1]
    for day in DEGRADED:
        auc = _one(_figures(env, check_name="decay", metric="roc_auc", partition_date=day, subject="",
                            window="partition"))
        assert auc["status"] == "alert" and auc["value"] < 0.6 and auc["rows"] == _labelled_rows(env, day)
    rolling = _one(_figures(env, check_name="decay", window="rolling", metric="roc_auc", partition_date=as_of))
    assert rolling["status"] == "alert" and rolling["run_id"] == run.run_id
    assert rolling["value"] < rolling["threshold"]
    assert rolling["rows"] == sum(_labelled_rows(env, d) for d in OPEN)

    engine = warehouse.connect(env["settings"].warehouse_url)
    decision = _one(warehouse.select_rows(engine, warehouse.retraining, {"run_id": run.run_id}))
    assert (decision["action"], decision["as_of"], decision["model_version"], decision["cooldown_until"]) == (
        "retrain", as_of, env["v1"], "2013-05-08")
    reasons = json.loads(decision["reasons"])
    assert [(r["check"], r["metric"], r["window"]) for r in reasons] == [("decay", "roc_auc", "rolling")]
    evidence = _one(warehouse.select_rows(engine, warehouse.test_evidence, {"run_id": run.run_id,
                                                                            "test_id": "monitor_7"}))
    assert evidence["outcome"] == "fail"

    events = _retrain_events(run.run_id)
    assert len(events) == 1, events
    event = events[0]
    assert (event["source_dag_id"], event["source_task_id"]) == (f"{SPEC}_monitoring", "request_retraining")
    assert event["extra"]["monitoring_run_id"] == run.run_id and event["extra"]["as_of"] == as_of
    assert event["extra"]["model_version"] == env["v1"]
    assert event["extra"]["reason"].startswith("decay roc_auc ") and "rolling" in event["extra"]["reason"]


# ---------------------------------------------------------------- 5. the cooldown
def test_the_cooldown_holds_a_second_request_with_the_same_alert(env, monitoring_dag, alerting):
    """A later day inside the cooldown, still alerting: recorded as cooldown, task skipped, no event."""
    from flightdeck.core import warehouse

    before = len(_retrain_events())
    later = "2013-04-25"
    run = monitoring_dag.test(run_conf={"as_of": later})
    assert _states(run) == {"monitor": "success", "request_retraining": "skipped"}
    rolling = _one(_figures(env, check_name="decay", window="rolling", metric="roc_auc", partition_date=later))
    assert rolling["status"] == "alert" and rolling["run_id"] == run.run_id, "the same alert as of a later day"
    engine = warehouse.connect(env["settings"].warehouse_url)
    decision = _one(warehouse.select_rows(engine, warehouse.retraining, {"run_id": run.run_id}))
    assert (decision["action"], decision["as_of"], decision["cooldown_until"]) == ("cooldown", later, "2013-05-08")
    assert _retrain_events(run.run_id) == []
    assert len(_retrain_events()) == before


# ---------------------------------------------------------------- 4. the loop closes
def test_the_loop_retrains_on_the_request_promotes_and_rescores_the_open_partitions(env, alerting):
    """The request is acted on (the training and gate DAGs' stages in-process): the challenger's MLflow
    run and version carry the monitoring run in ``flightdeck.trigger``; it is promoted and the open
    partitions are rescored by it.

    Deterministic by design (seeded splits, deterministic LightGBM), and judged on genuine labels:
    the shuffled outcomes (04-23, 04-24) end up in the training split, while the genuine days
    delivered before training (04-25..05-07) make the validation and the frozen test split. The
    daily late rate swings between 0.1 and 0.48 with the weather and a model's calendar features
    carry the level of its last training days, so the canary (score PSI against the champion at
    most 0.25) passes only when both models' last training days are alike: here both end in calm
    days (champion 04-13..17, challenger about 04-30). Measured: canary PSI 0.20, regression
    +0.084 (95% CI +0.052 .. +0.119), test ROC AUC 0.652. With only 04-25..28 after the alert,
    the challenger's last training days were 04-22..23 (late rate 0.33-0.42) and the canary
    rejected it (PSI 3.0).
    """
    from flightdeck.apps import year
    from flightdeck.core import warehouse
    from flightdeck.monitoring import monitor as monitoring
    from flightdeck.serving import predictions, scoring

    engine = warehouse.connect(env["settings"].warehouse_url)
    request = _one(warehouse.select_rows(engine, warehouse.retraining, {"run_id": alerting.run_id}))
    decision = monitoring.RetrainDecision(request["action"], tuple(json.loads(request["reasons"])),
                                          request["as_of"], request["model_version"])
    assert decision.retrain
    for day in GENUINE_AFTER:
        _deliver(env, day, ("schedule", "outcomes"))
    for day in OPEN_AFTER:
        _deliver(env, day, ("schedule",))
    year.data_stages(_ctx(env, "data__after", "flights_data"))
    v1 = env["v1"]
    daily = scoring.score_open_partitions(env["settings"], SPEC, run_id="scoring__after")
    assert (daily["model_version"], daily["partitions"]) == (v1, OPEN_AFTER)

    trigger = f"monitoring {alerting.run_id}: {decision.reason_text()}"
    outcome = year.retrain_and_gate(_ctx(env, "training__retrain", "flights_training"), trigger, (None, None),
                                    env["settings"].min_ml_test_score)
    v2 = outcome["version"]
    assert v2 != v1
    client = registry_client(env)
    mv = client.get_model_version(env["spec"].registered_model_name, v2)
    for tags in (mv.tags, client.get_run(mv.run_id).data.tags):
        assert tags["flightdeck.trigger"] == trigger
        assert alerting.run_id in tags["flightdeck.trigger"] and "decay roc_auc" in tags["flightdeck.trigger"]
    gates = {g["gate"]: g for g in warehouse.select_rows(engine, warehouse.gate_results,
                                                          {"run_id": "training__retrain", "model_version": v2})}
    assert all(g["passed"] for g in gates.values() if g["hard"]), {g: r["detail"] for g, r in gates.items()
                                                                   if not r["passed"]}
    assert outcome["promoted"] and outcome["reasons"] == []
    assert json.loads(gates["no_regression"]["figures"])["champion"] == v1
    assert (alias_version(env, "champion"), alias_version(env, "previous_champion")) == (v2, v1)
    assert [(p["action"], p["previous_champion"]) for p in warehouse.select_rows(
        engine, warehouse.promotions, {"run_id": "training__retrain"})] == [("promote", v1)]

    # the champion moved: the open partitions are scored again, by the new version
    rescored = scoring.score_open_partitions(env["settings"], SPEC, run_id="scoring__rescore")
    assert (rescored["model_version"], rescored["partitions"]) == (v2, OPEN_AFTER)
    for day in OPEN_AFTER:
        assert predictions.count_partition(engine, env["spec"], day) == {
            "rows": len(_curated(env, day)), "versions": 1, "model_version": v2, "run_ids": 1,
            "run_id": "scoring__rescore"}
    for day in OPEN:  # labelled partitions keep what was served and judged
        assert predictions.count_partition(engine, env["spec"], day)["model_version"] == v1
