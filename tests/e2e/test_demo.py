"""The demo end to end through the real scheduler, with the clock where it hurts.

``make demo`` on a fresh home once failed because the scheduled runs that fire when a
scheduler starts (the daily scoring and monitoring, the weekly training) opened a brand-new
MLflow store together and corrupted it. Which runs fire at start-up, and when, depends on
the wall clock, so this test does not leave it to the time CI happens to run: the whole
demo (its ``airflow standalone`` and every task process) runs with the clock put just past
Monday 04:00 UTC (``fakeclock/sitecustomize.py``: time-machine in every interpreter), when
every scheduled interval has passed: training's (Monday 04:00 UTC) seconds ago, scoring's
(20:00) and monitoring's (21:00 New York) hours ago.

Asserts what the demo promises (a champion, published predictions, monitoring figures),
that the start-up runs really fired and ended harmlessly (skipped, with their reason
logged), and that the MLflow store is whole afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from e2e_support import DemoRun, next_monday_0400

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("now", "expected"), [
    (datetime(2026, 12, 2, 17, 15, tzinfo=UTC), datetime(2026, 12, 7, 4, tzinfo=UTC)),  # the failing Wednesday
    (datetime(2026, 12, 7, 3, 59, tzinfo=UTC), datetime(2026, 12, 7, 4, tzinfo=UTC)),
    (datetime(2026, 12, 7, 4, 0, 1, tzinfo=UTC), datetime(2026, 12, 14, 4, tzinfo=UTC)),
])
def test_the_clock_is_put_on_the_next_monday_0400(now: datetime, expected: datetime):
    assert next_monday_0400(now) == expected


def _runs(env: dict[str, str], dag_id: str) -> list[dict[str, str]]:
    out = subprocess.run([str(Path(sys.executable).with_name("airflow")), "dags", "list-runs", dag_id, "-o", "json"],
                         env=env, capture_output=True, text=True, check=True).stdout
    line = next((raw for raw in out.splitlines() if raw.startswith("[")), "[]")
    return list(json.loads(line))


def test_the_demo_passes_when_every_scheduled_interval_has_just_passed(demo_run: DemoRun):
    fake_start, faked, home, env = demo_run.fake_start, demo_run.faked_now, demo_run.home, demo_run.env
    assert timedelta(0) <= faked - fake_start < timedelta(minutes=2), f"the fake clock did not move: {faked}"
    output = demo_run.output
    assert demo_run.returncode == 0, output[-6000:]
    # what the demo promises, in its summary
    assert "gate decision for version 1: PROMOTE" in output, output[-4000:]
    assert "@champion" in output
    assert "monitoring (fd_monitoring_metrics" in output
    assert "stopping airflow standalone" in output

    # the start-up runs fired (the clock was where it hurts) and ended harmlessly
    expected = {"flights_training": fake_start,                       # Monday 04:00 UTC
                "flights_scoring": fake_start - timedelta(hours=3),   # Sunday 20:00 New York (EST)
                "flights_monitoring": fake_start - timedelta(hours=2)}  # Sunday 21:00 New York
    for dag_id, when in expected.items():
        runs = _runs(env, dag_id)
        scheduled = [r for r in runs if r["run_id"].startswith("scheduled__")]
        wanted = f"scheduled__{when.isoformat()}"
        assert wanted in {r["run_id"] for r in scheduled}, f"{dag_id}: no start-up run {wanted} in {runs}"
        assert all(r["state"] == "success" for r in scheduled), f"{dag_id} start-up runs: {scheduled}"
        assert not [r for r in runs if r["state"] == "failed"], f"{dag_id}: failed runs {runs}"
    logs = "\n".join(p.read_text(errors="replace") for p in (home / "airflow" / "logs").rglob("*.log")
                     if "scheduled__" in str(p))
    assert "no @champion version yet" in logs  # scoring and training at start-up say why they skip

    # the MLflow store is whole: no temporary tables of an interrupted migration
    engine = sa.create_engine(f"sqlite:///{home / 'mlflow.db'}")
    tables = sa.inspect(engine).get_table_names()
    engine.dispose()
    assert not [t for t in tables if t.startswith("_alembic_tmp_")], tables
    # the precomputed predictions are there to query
    warehouse = sa.create_engine(f"sqlite:///{home / 'warehouse.db'}")
    with warehouse.connect() as conn:
        published = conn.execute(sa.text("SELECT count(*) FROM flights_predictions WHERE partition_date = "
                                         "'2013-02-01'")).scalar_one()
    warehouse.dispose()
    assert published > 900
