"""After ``flightdeck init`` the DAGs of every spec are listed: no ``airflow dags reserialize`` needed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PENGUINS = Path(__file__).resolve().parents[1] / "fixtures" / "specs" / "penguins.yaml"


def test_init_serializes_the_dags_so_airflow_lists_them(tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    shutil.copy(PENGUINS, specs / "penguins.yaml")
    airflow_home = tmp_path / "airflow"
    env = {**os.environ, "FLIGHTDECK_HOME": str(tmp_path / "fd"), "FLIGHTDECK_SPECS_DIR": str(specs),
           "AIRFLOW_HOME": str(airflow_home),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}"}
    bin_dir = Path(sys.executable).parent
    init = subprocess.run([str(bin_dir / "flightdeck"), "init"], env=env, capture_output=True, text=True, timeout=300)
    assert init.returncode == 0, init.stderr[-2000:]
    assert "airflow DAGs serialized" in init.stdout
    listed = subprocess.run([str(bin_dir / "airflow"), "dags", "list", "-o", "json"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr[-2000:]
    table = listed.stdout[listed.stdout.index("[{"):]  # warnings may precede the JSON
    dag_ids = {d["dag_id"] for d in json.JSONDecoder().raw_decode(table)[0]}
    assert {f"penguins_{s}" for s in ("data", "training", "gate", "scoring", "monitoring")} <= dag_ids
