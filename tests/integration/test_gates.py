"""The gates on three weeks of real flights: the gate DAG promotes a first good model, and the
fault-injected models (shuffled labels, a leaked target, NaN outputs, worse than the champion,
an artifact that cannot load) never become champion. Real MLflow registry, real SQLite."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import yaml
from flightdeck.core.values import safe_name
from registry import alias_version, registry_client

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


class _Distorted(mlflow.pyfunc.PythonModel):
    """A pyfunc around a real pipeline whose outputs are distorted on purpose (fault injection)."""

    def __init__(self, pipeline: Any, layout: dict[str, list[str]], fault: str) -> None:
        self.pipeline, self.layout, self.fault = pipeline, layout, fault

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        from flightdeck.training.features import FeatureLayout, select_features

        X = select_features(model_input, FeatureLayout(tuple(self.layout["numeric"]),
                                                       tuple(self.layout["categorical"])))
        p = np.asarray(self.pipeline.predict_proba(X))[:, 1]
        if self.fault == "nan":
            return np.where(X["origin"].to_numpy() == "EWR", np.nan, p)
        # "worse": half the signal replaced by noise that is fixed per row
        noise = (pd.util.hash_pandas_object(X, index=False).to_numpy() % 1000) / 1000.0
        return 0.3 * p + 0.7 * noise


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, airflow_db) -> Any:
    """Three weeks of flights through the data stages, with a cheaper training configuration."""
    from flightdeck.core.settings import Settings
    from flightdeck.core.spec import load_spec
    from flightdeck.core.storage import open_store
    from flightdeck.data import replay, runners

    root = tmp_path_factory.mktemp("gates")
    specs = root / "specs"
    shutil.copytree(REPO / "include" / "specs" / "flights", specs / "flights")
    raw = yaml.safe_load((REPO / "include" / "specs" / "flights.yaml").read_text())
    raw["training"].update({"candidates": ["dummy", "logistic", "lightgbm"], "cv_folds": 2, "tune_top": 1,
                            "tuning_budget": 2})
    # three weeks of data: judge against the prior, and allow for calibration noise on 2k test rows
    raw["gates"].update({"baseline": "dummy", "max_calibration_error": 0.15})
    (specs / "flights.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLIGHTDECK_HOME", str(root / "fd"))
        mp.setenv("FLIGHTDECK_SPECS_DIR", str(specs))
        mp.setenv("FLIGHTDECK_PSEUDONYMISATION_KEY", "gates-key")
        settings = Settings.from_env()
        spec = load_spec(specs / "flights.yaml")
        replay.replay(spec, open_store(settings.landing_uri), date(2013, 4, 1), date(2013, 4, 21))
        ctx = runners.StageContext(spec, settings, run_id="data-run", dag_id="flights_data")
        for stage in (runners.ingest_deliveries, runners.profile_batches, runners.validate_batches,
                      runners.curate_batches, runners.split_dataset):
            stage(ctx)
        yield {"settings": settings, "spec": spec}


def _ctx(env: dict[str, Any], run_id: str, dag_id: str = "flights_gate") -> Any:
    from flightdeck.data.runners import StageContext

    return StageContext(env["spec"], env["settings"], run_id=run_id, dag_id=dag_id)


def _train_and_register(env: dict[str, Any], run_id: str) -> str:
    from flightdeck.training import pipeline as training

    ctx = _ctx(env, run_id, "flights_training")
    return training.register_model(ctx, training.train_model(ctx, force=True))["version"]


def _judge(env: dict[str, Any], run_id: str, version: str | None = None) -> dict[str, Any]:
    from flightdeck.gates import promotion as gates

    ctx = _ctx(env, run_id)
    return gates.decide(ctx, gates.judge_version(ctx, version, run_type="manual"))


def _failed(outcome: dict[str, Any]) -> set[str]:
    return {g for g, r in outcome["gates"].items() if not r["passed"]}


def _count(env: dict[str, Any], table: str, run_id: str) -> int:
    import sqlalchemy as sa
    from flightdeck.core import warehouse

    engine = warehouse.connect(env["settings"].warehouse_url)
    t = warehouse.metadata.tables[table]
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(t).where(t.c.run_id == run_id)).scalar())


@pytest.fixture(scope="module")
def first_champion(env: dict[str, Any]) -> dict[str, Any]:
    """The first model, registered by training and judged by the gate DAG through dag.test()."""
    from airflow.dag_processing.dagbag import DagBag

    version = _train_and_register(env, "train-1")
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not bag.import_errors, bag.import_errors
    run = bag.dags["flights_gate"].test()
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    return {"version": version, "run": run, "states": states}


def test_the_gate_dag_promotes_a_first_good_model_with_evidence_and_a_report(env, first_champion):
    from flightdeck.core import warehouse

    assert first_champion["states"] == {"judge": "success", "decide": "success"}
    version, run_id = first_champion["version"], first_champion["run"].run_id
    assert alias_version(env, "champion") == version and alias_version(env, "previous_champion") is None
    engine = warehouse.connect(env["settings"].warehouse_url)
    evidence = warehouse.select_rows(engine, warehouse.test_evidence, {"run_id": run_id})
    assert {e["test_id"] for e in evidence} >= {"data_1", "data_2", "data_3", "data_4", "data_5", "model_3",
                                                 "model_4", "model_5", "model_6", "model_7", "infra_1", "infra_2",
                                                 "infra_4", "infra_5", "infra_6", "infra_7"}
    by_test = {e["test_id"]: e for e in evidence}
    assert by_test["infra_7"]["outcome"] == "not_run"  # a first model has nothing to roll back to
    assert by_test["infra_1"]["outcome"] == "pass", by_test["infra_1"]["detail"]
    assert all(e["run_type"] == "manual" and e["model_version"] == version for e in evidence)
    promoted = warehouse.select_rows(engine, warehouse.promotions, {"run_id": run_id})
    assert [(p["action"], p["model_version"], p["previous_champion"]) for p in promoted] == [
        ("promote", version, None)]
    results = warehouse.select_rows(engine, warehouse.gate_results, {"run_id": run_id})
    assert {r["gate"] for r in results} >= {"absolute", "no_regression", "baseline", "slices", "leakage",
                                            "reproducible", "numerical_stability", "canary", "ml_test_score"}
    assert all(r["passed"] for r in results if r["hard"])
    assert len(warehouse.select_rows(engine, warehouse.shadow_predictions, {"run_id": run_id})) > 0

    client = registry_client(env)
    mv = client.get_model_version(env["spec"].registered_model_name, version)
    assert mv.tags["flightdeck.gate.decision"] == "promote"
    assert float(mv.tags["flightdeck.ml_test_score"]) == 0  # monitoring has no evidence yet: min of sections
    safe = safe_name(run_id)
    logged = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(mv.run_id, f"gates/{safe}")}
    assert {"report.json", "report.html", "slice_metrics.csv", "contributions.csv"} <= logged
    report = json.loads(Path(mv.tags["flightdeck.gate.report"].replace(".html", ".json")).read_text())
    assert len(report["score_card"]["tests"]) == 28
    assert report["score_card"]["band"].startswith("More of a research project")


def test_the_score_card_command_prints_28_tests_sections_and_band(env, first_champion, capsys):
    from flightdeck.apps import cli

    assert cli.main(["score-card", "flights"]) == 0
    out = capsys.readouterr().out
    assert sum(line.split()[0] in {f"{s}_{i}" for s in ("data", "model", "infra", "monitor") for i in range(1, 8)}
               for line in out.splitlines() if line.strip()) == 28
    assert "final score (minimum of the sections): 0" in out
    assert "attested by" in out  # the committed attestations count as manual evidence


def test_rerunning_a_gate_run_gives_the_same_decision_without_duplicates(env, first_champion):
    first = _judge(env, "gate-rerun", first_champion["version"])
    counts = [_count(env, t, "gate-rerun") for t in ("fd_test_evidence", "fd_gate_results", "fd_promotions",
                                                      "fd_shadow_predictions")]
    again = _judge(env, "gate-rerun", first_champion["version"])
    assert (again["decision"], again["reasons"]) == (first["decision"], first["reasons"])
    assert [_count(env, t, "gate-rerun") for t in ("fd_test_evidence", "fd_gate_results", "fd_promotions",
                                                    "fd_shadow_predictions")] == counts
    assert alias_version(env, "champion") == first_champion["version"]


def test_a_version_below_the_configured_ml_test_score_is_not_promoted(env, first_champion):
    from flightdeck.gates import promotion as gates

    verdict = gates.judge_version(_ctx(env, "gate-min-score"), first_champion["version"], run_type="manual",
                                  min_ml_test_score=0.5)
    assert verdict["decision"] == "reject"
    assert [r.split(":")[0] for r in verdict["reasons"]] == ["ml_test_score"]  # monitoring scores 0 so far


def _register_variant(env: dict[str, Any], run_id: str, python_model: Any) -> str:
    """Register a hand-made model with the lineage of the champion's training run (fault injection)."""
    import mlflow
    from flightdeck.training import pipeline as training

    client = registry_client(env)
    name = env["spec"].registered_model_name
    base = client.get_model_version(name, alias_version(env, "champion"))
    ctx = _ctx(env, run_id, "flights_training")
    training.tracking(ctx)
    with mlflow.start_run(run_name=f"fault {run_id}") as run:
        evaluation = mlflow.artifacts.download_artifacts(run_id=base.run_id, artifact_path="evaluation")
        mlflow.log_artifacts(evaluation, artifact_path="evaluation")
        info = mlflow.pyfunc.log_model(name="model", python_model=python_model)
    tags = base.tags
    trained = {"mlflow_run_id": run.info.run_id, "model_uri": info.model_uri,
               "dataset_version": tags["flightdeck.data_snapshot"],
               "training_window": tags["flightdeck.training_window"].split(" .. "),
               "features": tags["flightdeck.features"].split(","), "chosen": tags["flightdeck.chosen"],
               "prediction_fingerprint": tags["flightdeck.prediction_fingerprint"], "window": [None, None],
               "validation": {}, "test": {}}
    return training.register_model(ctx, trained)["version"]


def _champion_pipeline(env: dict[str, Any]) -> tuple[Any, dict[str, list[str]]]:
    from flightdeck.gates import promotion as gates

    model = gates.load_pyfunc(env["spec"].registered_model_name, "champion").unwrap_python_model()
    return model.pipeline, model.layout


def _rewrite_current_dataset(env: dict[str, Any], suffix: str, change: Any) -> str:
    """Publish a copy of the current dataset version with ``change(split_name, frame)`` applied."""
    from flightdeck.core import lake
    from flightdeck.training import pipeline as training

    ctx = _ctx(env, f"dataset-{suffix}")
    manifest = training.current_dataset(ctx)
    version = f"{manifest['version_id'][:10]}{suffix}"
    for split in ("train", "validation", "test"):
        key = lake.dataset_split("flights", manifest["version_id"], split)
        frame = change(split, lake.read_parquet(ctx.lake, key, ctx.workdir))
        out = ctx.workdir / f"{version}-{split}.parquet"
        frame.to_parquet(out)
        uri = ctx.lake.put_file(out, f"datasets/flights/{version}/{split}.parquet")
        manifest["splits"][split]["uri"] = uri
    manifest["version_id"] = version
    ctx.lake.put_bytes(json.dumps(manifest, default=str).encode(), f"datasets/flights/{version}/manifest.json")
    ctx.lake.put_bytes(json.dumps({"version_id": version}).encode(), "datasets/flights/current.json")
    return manifest["version_id"]


@pytest.fixture
def restore_current_dataset(env: dict[str, Any]) -> Any:
    ctx = _ctx(env, "restore")
    saved = ctx.lake.read_bytes("datasets/flights/current.json")
    yield
    ctx.lake.put_bytes(saved, "datasets/flights/current.json")


def _assert_rejected(env: dict[str, Any], outcome: dict[str, Any], champion: str) -> None:
    assert outcome["decision"] == "reject" and not outcome["promoted"]
    assert alias_version(env, "champion") == champion, "a rejected version must never serve"
    tags = registry_client(env).get_model_version(env["spec"].registered_model_name, outcome["version"]).tags
    assert tags["flightdeck.gate.decision"] == "reject" and tags["flightdeck.gate.reasons"]


def test_a_model_trained_on_shuffled_labels_never_becomes_champion(env, first_champion, restore_current_dataset):
    target = env["spec"].target.name

    def shuffle(split: str, frame: pd.DataFrame) -> pd.DataFrame:
        if split != "test":  # the frozen test split keeps the truth the gate judges against
            frame[target] = np.random.default_rng(7).permutation(frame[target].to_numpy())
        return frame

    _rewrite_current_dataset(env, "shuffled", shuffle)
    version = _train_and_register(env, "train-shuffled")
    outcome = _judge(env, "gate-shuffled", version)
    _assert_rejected(env, outcome, first_champion["version"])
    assert {"absolute", "baseline"} & _failed(outcome), outcome["reasons"]


def test_a_model_with_a_leaked_target_feature_never_becomes_champion(env, first_champion, restore_current_dataset):
    spec = env["spec"]

    def leak(split: str, frame: pd.DataFrame) -> pd.DataFrame:
        # the outcome smuggled into an innocent-looking schedule column
        frame["distance"] = frame[spec.target.name].astype(float) * 1000 + frame["distance"] % 97
        return frame

    _rewrite_current_dataset(env, "leaked", leak)
    version = _train_and_register(env, "train-leaked")
    outcome = _judge(env, "gate-leaked", version)
    _assert_rejected(env, outcome, first_champion["version"])
    assert "leakage" in _failed(outcome)
    assert any("distance" in r for r in outcome["reasons"])


def test_a_model_that_emits_nan_for_some_inputs_never_becomes_champion(env, first_champion):
    pipeline, layout = _champion_pipeline(env)
    version = _register_variant(env, "fault-nan", _Distorted(pipeline, layout, "nan"))
    outcome = _judge(env, "gate-nan", version)
    _assert_rejected(env, outcome, first_champion["version"])
    assert "numerical_stability" in _failed(outcome)


def test_a_model_worse_than_the_champion_beyond_tolerance_never_becomes_champion(env, first_champion):
    pipeline, layout = _champion_pipeline(env)
    version = _register_variant(env, "fault-worse", _Distorted(pipeline, layout, "worse"))
    outcome = _judge(env, "gate-worse", version)
    _assert_rejected(env, outcome, first_champion["version"])
    assert "no_regression" in _failed(outcome)
    assert outcome["gates"]["no_regression"]["value"] < -env["spec"].gates.regression_tolerance


def test_a_model_whose_artifact_cannot_be_loaded_never_becomes_champion(env, first_champion):
    from flightdeck.training.model import FlightDeckClassifier

    pipeline, layout = _champion_pipeline(env)
    version = _register_variant(env, "fault-unloadable", FlightDeckClassifier(pipeline, layout))
    client = registry_client(env)
    mv = client.get_model_version(env["spec"].registered_model_name, version)
    location = client.get_logged_model(mv.source.removeprefix("models:/")).artifact_location
    pickled = Path(location.removeprefix("file://")) / "python_model.pkl"
    assert pickled.exists()
    pickled.write_bytes(b"not a pickle")
    outcome = _judge(env, "gate-unloadable", version)
    _assert_rejected(env, outcome, first_champion["version"])
    assert "loads" in _failed(outcome)


def test_a_good_retrain_is_promoted_keeping_previous_champion_and_rollback_restores_it(env, first_champion):
    from flightdeck.apps import cli
    from flightdeck.core import warehouse
    from flightdeck.gates import promotion as gates

    first = first_champion["version"]
    version = _train_and_register(env, "train-again")  # same data and config: reproduces the champion
    verdict = gates.judge_version(_ctx(env, "gate-again"), version, run_type="manual")
    outcome = gates.decide(_ctx(env, "gate-again"), verdict)
    assert outcome["promoted"], outcome["reasons"]
    assert (alias_version(env, "champion"), alias_version(env, "previous_champion")) == (version, first)
    engine = warehouse.connect(env["settings"].warehouse_url)
    evidence = {e["test_id"]: e for e in warehouse.select_rows(engine, warehouse.test_evidence,
                                                              {"run_id": "gate-again"})}
    assert evidence["infra_7"]["outcome"] == "pass"  # the rollback target loads and scores

    assert cli.main(["rollback", "flights", "--reason", "integration test", "--by", "pytest"]) == 0
    assert alias_version(env, "champion") == first
    assert alias_version(env, "previous_champion") is None  # the first champion replaced nothing
    rollbacks = [p for p in warehouse.select_rows(engine, warehouse.promotions, {"action": "rollback"})]
    assert [(r["model_version"], r["previous_champion"], r["decided_by"]) for r in rollbacks] == [
        (first, version, "pytest")]
    with pytest.raises(gates.GateError, match="nothing to roll back to"):
        gates.rollback(_ctx(env, "again"), "pytest")
    # acting on the old verdict again (a cleared task, a late retry) must not undo the rollback
    with pytest.raises(gates.GateError, match="was rolled back"):
        gates.decide(_ctx(env, "gate-again"), verdict)
    assert alias_version(env, "champion") == first


# ---------------------------------------------------------------- ONNX packaging (optional, never blocking)
class _Rounded(mlflow.pyfunc.PythonModel):
    """The packaged model with its scores rounded to 7 decimals: an ONNX export of its pipeline differs
    from it by up to 5e-8, which passes the default parity limit and fails a stricter one."""

    def __init__(self, pipeline: Any, layout: dict[str, list[str]]) -> None:
        self.pipeline, self.layout = pipeline, layout

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        from flightdeck.training.features import FeatureLayout, select_features

        X = select_features(model_input, FeatureLayout(tuple(self.layout["numeric"]),
                                                       tuple(self.layout["categorical"])))
        return np.round(np.asarray(self.pipeline.predict_proba(X))[:, 1], 7)


def _lightgbm_pipeline(env: dict[str, Any]) -> tuple[Any, dict[str, list[str]]]:
    """The champion's LightGBM pipeline (the champion itself, or its LightGBM ensemble member)."""
    pipeline, layout = _champion_pipeline(env)
    members = getattr(pipeline, "members", [pipeline])
    lgbm = [m for m in members if type(m.named_steps["model"]).__name__ == "LGBMClassifier"]
    assert lgbm, f"the champion has no LightGBM pipeline: {members}"
    return lgbm[0], layout


def _onnx_row(env: dict[str, Any], run_id: str) -> dict[str, Any]:
    from flightdeck.core import warehouse

    engine = warehouse.connect(env["settings"].warehouse_url)
    rows = warehouse.select_rows(engine, warehouse.gate_results, {"run_id": run_id, "gate": "onnx_parity"})
    assert len(rows) == 1, rows
    return rows[0]


def test_the_gate_dag_records_the_champions_onnx_export_or_why_it_does_not_convert(env, first_champion):
    from flightdeck.training import packaging

    run_id = first_champion["run"].run_id
    mv = registry_client(env).get_model_version(env["spec"].registered_model_name, first_champion["version"])
    pipeline, _ = _champion_pipeline(env)
    members = [packaging.model_family(m) for m in getattr(pipeline, "members", [pipeline])]
    converts = all(f in packaging.CONVERTIBLE for f in members)
    row = _onnx_row(env, run_id)
    assert not row["hard"]  # reported, never blocking
    assert mv.tags["flightdeck.onnx"] == ("passed" if converts else "unsupported"), mv.tags["flightdeck.onnx_detail"]
    if converts:
        assert float(mv.tags["flightdeck.onnx_max_abs_diff"]) <= 1e-5 and row["passed"]
    else:
        refused = next(f for f in members if f not in packaging.CONVERTIBLE)
        assert refused in mv.tags["flightdeck.onnx_detail"] and not row["passed"]
    report = json.loads(Path(mv.tags["flightdeck.gate.report"].replace(".html", ".json")).read_text())
    gate = {g["gate"]: g for g in report["gates"]}["onnx_parity"]
    assert gate["hard"] is False and gate["figures"]["status"] == mv.tags["flightdeck.onnx"]


def test_a_lightgbm_version_gets_its_onnx_artifact_and_a_failing_export_does_not_refuse_it(env, first_champion):
    import mlflow
    import onnxruntime
    from flightdeck.data.runners import StageContext
    from flightdeck.gates import promotion as gates
    from flightdeck.training import features, packaging
    from flightdeck.training import pipeline as training

    pipeline, layout = _lightgbm_pipeline(env)
    name, client = env["spec"].registered_model_name, registry_client(env)
    version = _register_variant(env, "onnx-pass", _Rounded(pipeline, layout))
    passing = gates.judge_version(_ctx(env, "gate-onnx-pass"), version, run_type="manual")
    mv = client.get_model_version(name, version)
    diff = float(mv.tags["flightdeck.onnx_max_abs_diff"])
    assert mv.tags["flightdeck.onnx"] == "passed" and 1e-8 < diff <= 1e-5  # the rounding, up to 5e-8
    row = _onnx_row(env, "gate-onnx-pass")
    assert row["passed"] and not row["hard"] and row["value"] == pytest.approx(diff, rel=1e-5)
    assert {a.path for a in client.list_artifacts(mv.run_id, "onnx")} == {"onnx/model.onnx", "onnx/parity.json"}
    folder = Path(mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="onnx"))
    parity = json.loads((folder / "parity.json").read_text())
    assert parity["rows"] > 0 and parity["split"] == "test" and parity["max_abs_diff"] == pytest.approx(diff, rel=1e-5)
    assert parity["versions"]["onnxruntime"] == onnxruntime.__version__ and parity["opset"]["ai.onnx.ml"] >= 2
    # the logged file, run by onnxruntime alone, scores the test split like the registered pyfunc
    fd_layout = features.FeatureLayout(tuple(layout["numeric"]), tuple(layout["categorical"]))
    test = _ctx(env, "onnx-read")
    data = training.prepare_data(test, training.dataset_manifest(test, mv.tags["flightdeck.data_snapshot"]),
                                 training.parse_window_tag(mv.tags.get("flightdeck.window_param")), check=False)
    X = features.select_features(data.frames["test"], fd_layout)
    session = packaging.session_for((folder / "model.onnx").read_bytes())
    registered = np.asarray(gates.load_pyfunc(name, version).predict(X), dtype=float)
    assert len(X) == parity["rows"]
    np.testing.assert_allclose(packaging.predict_onnx(session, X, fd_layout), registered, rtol=0, atol=1e-5)

    # the same model with a parity limit below its real difference: export refused, model judged the same
    strict = env["spec"].model_copy(update={"gates": env["spec"].gates.model_copy(
        update={"onnx_max_abs_diff": 1e-8})})
    again = _register_variant(env, "onnx-fail", _Rounded(pipeline, layout))
    failing = gates.judge_version(StageContext(strict, env["settings"], run_id="gate-onnx-fail",
                                               dag_id="flights_gate"), again, run_type="manual")
    mv_fail = client.get_model_version(name, again)
    assert mv_fail.tags["flightdeck.onnx"] == "failed"
    assert float(mv_fail.tags["flightdeck.onnx_max_abs_diff"]) == pytest.approx(diff, rel=1e-5)
    assert "refused" in mv_fail.tags["flightdeck.onnx_detail"]
    assert client.list_artifacts(mv_fail.run_id, "onnx") == []
    assert not _onnx_row(env, "gate-onnx-fail")["passed"]
    assert failing["decision"] == passing["decision"]
    assert not any(r.startswith("onnx") for r in failing["reasons"])
