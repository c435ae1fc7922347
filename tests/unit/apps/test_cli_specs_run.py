"""``flightdeck specs`` names the field of an invalid spec and exits 1; ``flightdeck run`` knows its stages."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from flightdeck.apps import cli, stages

PENGUINS = Path(__file__).resolve().parents[2] / "fixtures" / "specs" / "penguins.yaml"


def test_specs_lists_valid_specs_and_exits_0(tmp_path, capsys):
    shutil.copy(PENGUINS, tmp_path / "penguins.yaml")
    assert cli.main(["specs", "--check", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("penguins ") and "Palmer penguins" in out


def test_specs_prints_each_error_with_its_field_and_exits_1(tmp_path, capsys):
    raw = yaml.safe_load(PENGUINS.read_text())
    raw["target"] = {"name": "female", "column": "sex", "op": "gt", "value": 0}
    (tmp_path / "penguins.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    shutil.copy(PENGUINS, tmp_path / "other.yaml")  # valid content, wrong name: also reported
    assert cli.main(["specs", "--check", str(tmp_path / "penguins.yaml"), "--check", str(tmp_path / "other.yaml")]) == 1
    out = capsys.readouterr().out
    assert "penguins.yaml: target.op: gt needs a numeric target column" in out
    assert "other.yaml: name: 'penguins' must equal the file name stem 'other'" in out
    assert "2 of 2 specs invalid" in out


def test_specs_of_an_empty_folder_is_an_error(tmp_path, capsys):
    assert cli.main(["specs", "--check", str(tmp_path)]) == 1
    assert "no specs" in capsys.readouterr().out


def test_run_rejects_an_unknown_stage(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "penguins", "--stage", "deploy"])
    assert "invalid choice: 'deploy'" in capsys.readouterr().err
    assert set(stages.RUNS) == set(stages.STAGES) == {"data", "training", "gate", "scoring"}


def test_run_data_with_nothing_landed_says_why(penguins_home, capsys):
    assert cli.main(["run", "penguins", "--stage", "data", "--run-id", "cli-empty"]) == 0
    out = capsys.readouterr().out
    assert "ingest: skipped: nothing to ingest for penguins: no new deliveries" in out
    assert "profile:" not in out
