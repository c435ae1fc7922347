"""Prediction tables on a real SQLite warehouse: schema, atomic partition publication, lookups.

The same checks run against a real PostgreSQL server in tests/integration/test_scoring_postgres.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from flightdeck.core import warehouse
from flightdeck.core.spec import ServingSpec, load_spec
from flightdeck.serving import predictions

REPO = Path(__file__).resolve().parents[3]
FLIGHTS_SPEC = REPO / "include" / "specs" / "flights.yaml"


@pytest.fixture(scope="module")
def spec():
    return load_spec(FLIGHTS_SPEC)


@pytest.fixture
def engine(tmp_path: Path):
    return warehouse.connect(f"sqlite:///{tmp_path / 'warehouse.db'}")


def make_rows(spec, n: int, *, partition: str = "2013-04-11", version: str = "1", run_id: str = "run-1",
              first_flight: int = 1, seed: int = 0) -> pa.Table:
    """``n`` finished prediction rows of distinct flights."""
    pt = predictions.prediction_table(spec)
    rng = np.random.default_rng(seed)
    y, m, d = (int(p) for p in partition.split("-"))
    flights = np.arange(first_flight, first_flight + n)
    keys = {"year": np.full(n, y), "month": np.full(n, m), "day": np.full(n, d),
            "carrier": np.where(flights % 2 == 0, "UA", "B6").astype(object), "flight": flights,
            "origin": np.array(["EWR", "JFK", "LGA"], dtype=object)[flights % 3], "sched_dep_time": 600 + flights % 60}
    score = rng.random(n)
    return predictions.prediction_rows(pt, keys, score, (score >= 0.5).astype("int8"),
                                       rng.integers(-2**62, 2**62, n), partition=partition,
                                       model_name="flightdeck-flights", model_version=version, run_id=run_id,
                                       scored_at=datetime.now(UTC))


def publish(engine, spec, table: pa.Table, partition: str = "2013-04-11", run_id: str = "run-1") -> int:
    run = {"run_id": run_id, "started_at": warehouse.now(), "finished_at": warehouse.now(),
           "model_name": "flightdeck-flights", "model_version": "1"}
    half = table.num_rows // 2
    return predictions.publish_partition(engine, spec, partition, [table.slice(0, half), table.slice(half)], run)


def test_tables_indexes_and_view_are_created(engine, spec):
    pt = predictions.ensure_tables(engine, spec)
    inspector = sa.inspect(engine)
    assert pt.name == "flights_predictions"
    columns = [c["name"] for c in inspector.get_columns(pt.name)]
    assert columns == [*spec.entity_key, "partition_date", "score", "label", "model_name", "model_version",
                       "run_id", "scored_at", "feature_hash"]
    indexes = {i["name"]: (i["column_names"], bool(i["unique"])) for i in inspector.get_indexes(pt.name)}
    assert indexes["ux_flights_predictions_partition_key"] == (["partition_date", *spec.entity_key], True)
    assert indexes["ix_flights_predictions_key"] == (list(spec.entity_key), False)
    assert "flights_predictions_current" in inspector.get_view_names()
    assert "fd_scoring_runs" in inspector.get_table_names()


def test_republishing_replaces_the_partition_never_duplicates_and_leaves_others(engine, spec):
    assert publish(engine, spec, make_rows(spec, 100)) == 100
    assert publish(engine, spec, make_rows(spec, 40, partition="2013-04-12"), "2013-04-12") == 40
    assert publish(engine, spec, make_rows(spec, 80, version="2", run_id="run-2"), run_id="run-2") == 80
    assert predictions.count_partition(engine, spec, "2013-04-11") == {
        "rows": 80, "versions": 1, "model_version": "2", "run_ids": 1, "run_id": "run-2"}
    assert predictions.count_partition(engine, spec, "2013-04-12")["rows"] == 40
    # the same run again (a retry): same rows, one run row
    publish(engine, spec, make_rows(spec, 80, version="2", run_id="run-2"), run_id="run-2")
    assert predictions.count_partition(engine, spec, "2013-04-11")["rows"] == 80
    runs = predictions.list_runs(engine, "flights", "2013-04-11")
    assert sorted((r["run_id"], r["status"], r["rows"]) for r in runs) == [
        ("run-1", "published", 100), ("run-2", "published", 80)]
    assert predictions.latest_published(engine, "flights")["2013-04-11"]["run_id"] == "run-2"


def test_an_empty_batch_publishes_an_empty_partition(engine, spec):
    publish(engine, spec, make_rows(spec, 30))
    empty = make_rows(spec, 0, run_id="run-empty")
    assert publish(engine, spec, empty, run_id="run-empty") == 0
    assert predictions.count_partition(engine, spec, "2013-04-11")["rows"] == 0
    run = predictions.list_runs(engine, "flights", "2013-04-11")[0]
    assert (run["run_id"], run["status"], run["rows"]) == ("run-empty", "published", 0)


def test_the_view_gives_the_current_prediction_per_entity(engine, spec):
    old = make_rows(spec, 5, partition="2013-04-11", seed=1)
    publish(engine, spec, old)
    # the same flights (same key values) scored again under a later partition
    newer = old.set_column(old.schema.get_field_index("partition_date"), "partition_date",
                           pa.repeat(pa.scalar("2013-04-12"), 5))
    newer = newer.set_column(newer.schema.get_field_index("score"), "score", pa.array(np.full(5, 0.99)))
    publish(engine, spec, newer, "2013-04-12", run_id="run-2")
    key = {k: old.column(k)[2].as_py() for k in spec.entity_key}
    current = predictions.lookup(engine, spec, key=key)
    assert [(r["partition_date"], r["score"]) for r in current] == [("2013-04-12", 0.99)]
    by_partition = predictions.lookup(engine, spec, key=key, partition="2013-04-11")
    assert len(by_partition) == 1 and by_partition[0]["score"] == pytest.approx(old.column("score")[2].as_py())
    assert len(predictions.lookup(engine, spec, key={"carrier": "UA"}, limit=1000)) == 2  # partial key


@pytest.mark.parametrize(("key", "partition", "error"), [
    ({"tailnum": "N1"}, None, "unknown key column"),
    ({"flight": "1; DROP TABLE flights_predictions"}, None, "flight.*int"),
    ({}, "2013-13-01", "not a YYYY-MM-DD"),
    ({}, "2013-4-1", "not a YYYY-MM-DD"),
    ({}, None, "give a key"),
])
def test_lookups_validate_names_and_values(engine, spec, key, partition, error):
    with pytest.raises(predictions.PredictionLookupError, match=error):
        predictions.lookup(engine, spec, key=key, partition=partition)


def test_lookup_values_are_bound_parameters(engine, spec):
    publish(engine, spec, make_rows(spec, 10))
    assert predictions.lookup(engine, spec, key={"carrier": "UA' OR '1'='1"}) == []
    assert predictions.lookup(engine, spec, key={"carrier": "UA'; DROP TABLE flights_predictions; --"}) == []
    assert predictions.count_partition(engine, spec, "2013-04-11")["rows"] == 10
    assert predictions.parse_key_args(spec, ["carrier=UA", "flight=2"]) == {"carrier": "UA", "flight": "2"}
    with pytest.raises(predictions.PredictionLookupError, match="column=value"):
        predictions.parse_key_args(spec, ["carrier"])


def test_names_from_the_spec_are_validated(spec):
    sneaky = spec.model_copy(update={"serving": ServingSpec.model_construct(table="p; DROP TABLE x", horizon="P1D",
                                                                            threshold=None)})
    with pytest.raises(ValueError, match="predictions table"):
        predictions.prediction_table(sneaky)
    clash = spec.model_copy(update={"entity_key": ("flight", "score")})
    with pytest.raises(ValueError, match="clash"):
        predictions.prediction_table(clash)


def test_rows_of_another_shape_are_refused_and_nothing_changes(engine, spec):
    publish(engine, spec, make_rows(spec, 10))
    wrong = make_rows(spec, 10).drop_columns(["feature_hash"])
    with pytest.raises(ValueError, match="expected"):
        publish(engine, spec, wrong, run_id="run-bad")
    assert predictions.count_partition(engine, spec, "2013-04-11") == {
        "rows": 10, "versions": 1, "model_version": "1", "run_ids": 1, "run_id": "run-1"}


def partition_states_seen_while_republishing(engine, spec, small, large, rounds: int) -> set[tuple[int, int]]:
    """Republish ``small`` and ``large`` in turn while a reader counts the partition: (rows, versions) seen."""
    publish(engine, spec, small)
    seen: set[tuple[int, int]] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            c = predictions.count_partition(engine, spec, "2013-04-11")
            seen.add((c["rows"], c["versions"]))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(rounds):
            publish(engine, spec, large if i % 2 == 0 else small, run_id=f"run-{i}")
    finally:
        stop.set()
        reader.join()
    return seen


def test_readers_see_the_old_or_the_new_complete_partition_never_a_mix(engine, spec):
    small, large = make_rows(spec, 300, version="1"), make_rows(spec, 900, version="2", run_id="run-2")
    seen = partition_states_seen_while_republishing(engine, spec, small, large, rounds=12)
    assert seen <= {(300, 1), (900, 1)} and seen, seen


KILLED_WRITER = """
import sys, time
from pathlib import Path
import pyarrow.parquet as pq
from flightdeck.serving import predictions
from flightdeck.core import warehouse
from flightdeck.core.spec import load_spec
url, spec_path, rows_path, marker = sys.argv[1:5]
engine = warehouse.connect(url)
spec = load_spec(spec_path)
table = pq.read_table(rows_path)

def batches():
    yield table.slice(0, table.num_rows // 2)
    Path(marker).write_text("half written")
    time.sleep(600)  # killed here, inside the publishing transaction
    yield table.slice(table.num_rows // 2)

predictions.publish_partition(engine, spec, "2013-04-11", batches(),
                              {"run_id": "run-2", "started_at": warehouse.now(), "model_version": "2"})
"""


def kill_mid_write(url: str, spec_path: Path, rows: pa.Table, tmp: Path) -> None:
    """Publish ``rows`` in a subprocess and SIGKILL it after half of them were written."""
    rows_path, marker = tmp / "rows.parquet", tmp / "marker"
    pq.write_table(rows, rows_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "include"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, url, str(spec_path), str(rows_path), str(marker)],
                            env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "writer died"
            assert time.monotonic() < deadline, "the writer never got half-way"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_a_writer_killed_mid_write_leaves_the_published_state_and_the_retry_completes(engine, spec, tmp_path):
    publish(engine, spec, make_rows(spec, 200))
    new = make_rows(spec, 500, version="2", run_id="run-2", first_flight=1000)
    kill_mid_write(engine.url.render_as_string(hide_password=False), FLIGHTS_SPEC, new, tmp_path)
    assert predictions.count_partition(engine, spec, "2013-04-11") == {
        "rows": 200, "versions": 1, "model_version": "1", "run_ids": 1, "run_id": "run-1"}
    assert publish(engine, spec, new, run_id="run-2") == 500  # the retry
    assert predictions.count_partition(engine, spec, "2013-04-11") == {
        "rows": 500, "versions": 1, "model_version": "2", "run_ids": 1, "run_id": "run-2"}
