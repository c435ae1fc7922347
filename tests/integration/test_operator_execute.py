"""``execute`` and ``poke`` of the operators that the DAG tests only run end to end.

Each is called with the context keys it reads, on a real home (curated data, a trained
run and a registered champion: the scoring DAG's prepared home), so how it answers a
given situation (skip, fail, the manifest it pushes) is pinned down apart from the DAGs.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from flightdeck.core.manifests import MonitorManifest, RegisterManifest, ScoreManifest
from test_scoring_dag import OPEN, use_copy_of_prepared_home

pytestmark = pytest.mark.slow


class _Ti:
    def __init__(self, pulled: Any = None) -> None:
        self.pulled = pulled

    def xcom_pull(self, task_ids: str) -> Any:
        return self.pulled


def _context(run_type: str = "manual", pulled: Any = None, outlets: list[Any] | None = None) -> dict[str, Any]:
    run_id = f"{run_type}__2013-04-12T20:00:00+00:00"
    dag_run = SimpleNamespace(run_type=run_type, run_id=run_id, run_after=pd.Timestamp("2013-04-12T23:00Z"))
    return {"run_id": run_id, "dag_run": dag_run, "ti": _Ti(pulled),
            "outlet_events": {o: SimpleNamespace(extra=None) for o in outlets or []},
            "logical_date": dag_run.run_after}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_copy_of_prepared_home(tmp_path, monkeypatch)


def _champion(home: Path) -> str:
    from flightdeck.core import registry
    from flightdeck.core.settings import Settings
    from flightdeck.core.spec import spec_named

    settings = Settings.from_env()
    client = registry.mlflow_client(settings.mlflow_tracking_uri)
    version = registry.alias_version(client, spec_named(settings.specs_dir, "flights").registered_model_name,
                                     registry.CHAMPION)
    assert version, f"the prepared home {home} has a champion"
    return version


def _publish_open_partitions(home: Path, run_id: str) -> str:
    """Score and publish the open partitions with the champion, as a scoring run would; its version."""
    from flightdeck.core.context import StageContext
    from flightdeck.core.settings import Settings
    from flightdeck.core.spec import spec_named
    from flightdeck.serving import scoring

    settings = Settings.from_env()
    ctx = StageContext(spec_named(settings.specs_dir, "flights"), settings, run_id=run_id)
    version = _champion(home)
    for day in OPEN:
        scoring.score_partition(ctx, day, version)
    return version


# ---------------------------------------------------------------- RegisterModelOperator
def test_register_pushes_the_version_and_tells_the_gate_which_one(home):
    from flightdeck_airflow.assets import challenger_asset
    from flightdeck_airflow.operators import RegisterModelOperator

    trained = json.loads((home / "trained.json").read_text())
    asset = challenger_asset("flights")
    op = RegisterModelOperator(task_id="register", spec_name="flights", outlets=[asset])
    context = _context(pulled=trained, outlets=[asset])
    first = op.execute(context)
    assert first["alias"] == "challenger" and first["mlflow_run_id"] == trained["mlflow_run_id"]
    assert context["outlet_events"][asset].extra == {"version": first["version"]}
    assert set(first) == set(RegisterManifest.__annotations__)
    again = op.execute(_context(pulled=trained, outlets=[asset]))
    assert again["version"] == first["version"], "a re-run registers the same training run once"


def test_register_without_a_training_manifest_fails_naming_the_task(home):
    from flightdeck_airflow.operators import RegisterModelOperator

    op = RegisterModelOperator(task_id="register", spec_name="flights", train_task_id="train")
    with pytest.raises(AirflowFailException, match="no manifest from task 'train'"):
        op.execute(_context(pulled=None))


# ---------------------------------------------------------------- ScorablePartitionsSensor
def _sensor(version: str, **kwargs: Any):
    from flightdeck_airflow.scoring import ScorablePartitionsSensor

    return ScorablePartitionsSensor(task_id="wait_for_partitions", spec_name="flights", model_version=version,
                                    **kwargs)


def test_sensor_hands_the_open_partitions_to_the_map(home):
    result = _sensor(_champion(home)).poke(_context("manual"))
    assert result.is_done and result.xcom_value == OPEN


def test_sensor_skips_when_the_champion_moved_while_it_waited(home):
    with pytest.raises(AirflowSkipException, match="champion moved from version 999"):
        _sensor("999").poke(_context("scheduled"))


def test_a_scheduled_sensor_keeps_waiting_when_everything_is_scored(home):
    version = _publish_open_partitions(home, run_id="earlier")
    scheduled = _sensor(version).poke(_context("scheduled"))
    assert not scheduled.is_done and scheduled.xcom_value == []
    by_hand = _sensor(version).poke(_context("manual"))
    assert by_hand.is_done and by_hand.xcom_value == [], "a person's run ends at once, having nothing to do"
    forced = _sensor(version, force=True).poke(_context("manual"))
    assert forced.xcom_value == OPEN


# ---------------------------------------------------------------- ScorePartitionOperator
def test_score_partition_publishes_and_a_rerun_replaces(home):
    from flightdeck.core import lake
    from flightdeck_airflow.scoring import ScorePartitionOperator

    version = _champion(home)
    op = ScorePartitionOperator(task_id="score", spec_name="flights", partition=OPEN[0], model_version=version)
    first = op.execute(_context())
    rows = len(pd.read_parquet(home / "lake" / lake.curated("flights", OPEN[0])))
    assert (first["rows"], first["model_version"], first["empty"]) == (rows, version, False)
    assert set(first) == set(ScoreManifest.__annotations__)
    assert op.execute(_context())["rows"] == rows


def test_score_partition_of_a_missing_day_fails_without_retry(home):
    from flightdeck_airflow.scoring import ScorePartitionOperator

    op = ScorePartitionOperator(task_id="score", spec_name="flights", partition="2013-12-31",
                                model_version=_champion(home))
    with pytest.raises(AirflowFailException, match="2013-12-31"):
        op.execute(_context())


# ---------------------------------------------------------------- MonitorModelOperator
def test_monitor_measures_the_published_partitions(home):
    from flightdeck_airflow.monitoring import MonitorModelOperator

    version = _publish_open_partitions(home, run_id="score-run")
    manifest = MonitorModelOperator(task_id="monitor", spec_name="flights", as_of=OPEN[-1]).execute(
        _context("scheduled"))
    assert manifest["as_of"] == OPEN[-1] and manifest["champion"] == version
    assert set(manifest) - {"notified"} == set(MonitorManifest.__annotations__)
    assert sum(manifest["status"].values()) > 0, "figures were measured"
    assert all(a["partition"] in OPEN for a in manifest["alerts"])
    assert ("notified" in manifest) == bool(manifest["alerts"]), "alerts, and only alerts, are notified"


def test_monitor_skips_before_there_is_a_champion_or_a_prediction(tmp_path, monkeypatch):
    from flightdeck_airflow.monitoring import MonitorModelOperator

    monkeypatch.setenv("FLIGHTDECK_HOME", str(tmp_path / "empty"))
    with pytest.raises(AirflowSkipException, match="champion"):
        MonitorModelOperator(task_id="monitor", spec_name="flights").execute(_context("scheduled"))
