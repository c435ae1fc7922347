"""A third use case from a spec alone (tests/fixtures/specs/penguins.yaml), through the real DAGs.

Palmer penguins (palmerpenguins, CC0): a string target (``Sex``: FEMALE positive, MALE
negative) delivered in the same file as the features, one file per month, headers that are
not identifiers. The data, training, gate and scoring DAGs are generated from the spec and
run with ``dag.test()`` at historical logical dates; the predictions are then looked up by
entity key. No code of the use case's own exists.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pendulum
import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.slow

SPEC_FILE = Path(__file__).resolve().parents[1] / "fixtures" / "specs" / "penguins.yaml"
MONTHS = ["2007-11-01", "2007-12-01", "2008-11-01", "2009-11-01", "2009-12-01"]


@pytest.fixture
def penguin_dags(penguins_home, airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    assert not bag.import_errors, bag.import_errors
    assert {d for d in bag.dags if d.startswith("flights")} == set(), "only the penguins spec is there"
    return bag.dags


def _states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_penguins_from_landing_files_to_looked_up_predictions(penguin_dags, penguins_home):
    from flightdeck.core import warehouse
    from flightdeck.core.settings import Settings
    from flightdeck.core.spec import spec_named
    from flightdeck.core.storage import open_store
    from flightdeck.data import replay
    from flightdeck.serving import predictions

    settings = Settings.from_env()
    spec = spec_named(settings.specs_dir, "penguins")
    assert penguin_dags["penguins_data"].start_date <= pendulum.datetime(2007, 11, 1, tz="UTC")
    landed = replay.replay(spec, open_store(settings.landing_uri), date(2007, 11, 1), date(2009, 12, 31))
    assert [d.file_name for d in landed] == ["penguins_2007_11.csv", "penguins_2007_12.csv", "penguins_2008_11.csv",
                                             "penguins_2009_11.csv", "penguins_2009_12.csv"]
    # one penguin of November 2008 is delivered with a sex nobody declared
    nov = Path(settings.landing_uri) / "penguins" / "penguins_2008_11.csv"
    lines = nov.read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if ",MALE," in line)
    lines[row] = lines[row].replace(",MALE,", ",.,", 1)
    nov.write_text("\n".join(lines) + "\n")

    # a historical logical date runs (the spec's start_date is 2007-11-01)
    data = penguin_dags["penguins_data"].test(logical_date=pendulum.datetime(2009, 12, 1, tz="UTC"))
    assert data.state == "success" and set(_states(data).values()) == {"success"}, _states(data)

    engine = warehouse.connect(settings.warehouse_url)
    batches = warehouse.list_batches(engine, "penguins")
    assert sorted(b["batch_date"] for b in batches) == MONTHS, "partition dates are month starts"
    assert {b["status"] for b in batches} == {"curated"}
    assert all(b["rows_in"] == b["rows_accepted"] + b["rows_quarantined"] for b in batches)
    assert sum(b["rows_in"] for b in batches) == 344
    assert sum(b["rows_quarantined"] for b in batches) == 1
    quarantined = warehouse.quarantine_counts(engine, "penguins", next(
        b["batch_id"] for b in batches if b["file_name"] == "penguins_2008_11.csv"))
    assert quarantined == {"unknown_target": 1}
    curated = sorted(p.parent.name for p in (Path(settings.lake_uri) / "curated" / "penguins").glob("*/data.parquet"))
    assert curated == [f"batch_date={m}" for m in MONTHS]

    training = penguin_dags["penguins_training"].test()
    assert _states(training) == {"train": "success", "register": "success"}, _states(training)
    gate = penguin_dags["penguins_gate"].test()
    assert _states(gate) == {"judge": "success", "decide": "success"}, _states(gate)
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    champion = mlflow.MlflowClient().get_model_version_by_alias(spec.registered_model_name, "champion")
    assert str(champion.version) == "1", "the first model was promoted"

    scoring = penguin_dags["penguins_scoring"].test()
    states = [ti.state for ti in scoring.get_task_instances() if ti.task_id == "score"]
    assert scoring.state == "success" and states == ["success"] * len(MONTHS), _states(scoring)

    published = predictions.latest_published(engine, "penguins")
    assert sorted(published) == MONTHS and all(p["model_version"] == "1" for p in published.values())
    first = predictions.lookup(engine, spec, partition="2008-11-01", limit=1)[0]
    key = {k: first[k] for k in spec.entity_key}
    found = predictions.lookup(engine, spec, key=key)
    assert len(found) == 1 and 0.0 <= found[0]["score"] <= 1.0
    assert found[0]["partition_date"] == "2008-11-01" and found[0]["model_version"] == "1"
    assert "label" in found[0]

    # monitoring works per month: drift, skew (rebuilt with the month's window rule) and realised quality
    monitoring = penguin_dags["penguins_monitoring"].test()
    assert _states(monitoring)["monitor"] == "success", _states(monitoring)
    metrics = warehouse.monitoring_metrics
    with engine.connect() as conn:
        rows = conn.execute(sa.select(metrics.c.partition_date, metrics.c.status).where(
            metrics.c.spec_name == "penguins", metrics.c.metric == "rows_differing_share")).all()
    assert rows and {r.partition_date for r in rows} <= set(MONTHS)
    assert {r.status for r in rows} == {"ok"}, rows


@pytest.mark.parametrize("logical", [pendulum.datetime(2008, 1, 1, tz="UTC"),    # nothing landed
                                     pendulum.datetime(2005, 1, 1, tz="UTC")])   # before the spec's start_date
def test_a_historical_run_with_nothing_to_do_skips(penguin_dags, penguins_home, logical):
    run = penguin_dags["penguins_data"].test(logical_date=logical)
    states = _states(run)
    assert states["wait_for_deliveries"] == "skipped", states
    assert set(states.values()) == {"skipped"}, "no task succeeds having done nothing"


def test_undated_deliveries_are_batched_by_the_day_they_arrive(tmp_path, monkeypatch):
    """``batch_grain: none``: no date in the file name; each file is a batch keyed by its arrival day."""
    import yaml
    from flightdeck.apps import init as stores
    from flightdeck.core import lake, warehouse
    from flightdeck.core.context import StageContext
    from flightdeck.core.settings import Settings
    from flightdeck.core.spec import load_spec
    from flightdeck.core.storage import open_store
    from flightdeck.data import replay, runners

    raw = yaml.safe_load(SPEC_FILE.read_text())
    raw["sources"]["survey"].update(batch_grain="none", batch_date=None)
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "penguins.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.setenv("FLIGHTDECK_HOME", str(tmp_path / "fd"))
    monkeypatch.setenv("FLIGHTDECK_SPECS_DIR", str(specs))
    monkeypatch.setenv("FLIGHTDECK_PSEUDONYMISATION_KEY", "penguins-key")
    settings = Settings.from_env()
    stores.init_stores(settings, airflow=False)
    spec = load_spec(specs / "penguins.yaml")
    landing = open_store(settings.landing_uri)
    frame = replay.load_replay_source(spec)
    for name, rows in (("penguins_first.csv", frame.iloc[:200]), ("penguins_second.csv", frame.iloc[200:])):
        landing.put_bytes(rows[list(spec.features_source.headers)].to_csv(index=False).encode(), f"penguins/{name}")
    ctx = StageContext(spec, settings, run_id="undated-1")
    ingested = runners.ingest_deliveries(ctx)
    assert (ingested["batches"], ingested["rows_in"], ingested["rows_quarantined"]) == (2, 344, 0), \
        "no outside_window without a period"
    for stage in (runners.profile_batches, runners.validate_batches, runners.curate_batches, runners.split_dataset):
        stage(ctx)
    batches = warehouse.list_batches(ctx.engine, "penguins")
    today = warehouse.now().date().isoformat()
    assert {b["batch_date"] for b in batches} == {today} and {b["status"] for b in batches} == {"curated"}
    assert lake.curated_keys(ctx.lake, "penguins") == [lake.curated("penguins", today)]
