"""The lake catalog spells every key once, and reading a store never asks whether it is local or S3."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from flightdeck.core import lake
from flightdeck.core.spec import SpecError, spec_named
from flightdeck.core.storage import LocalStore
from flightdeck.core.values import jsonable, safe_name, utc


def test_curated_keys_round_trip_their_batch_date():
    key = lake.curated("flights", "2013-01-05")
    assert key == "curated/flights/batch_date=2013-01-05/data.parquet"
    assert lake.curated_date("flights", key) == "2013-01-05"
    assert lake.curated_date("flights", "curated/flights/batch_date=2013-01-05/other.json") is None
    assert lake.curated_date("weather", key) is None


def test_dataset_keys_share_one_prefix():
    assert lake.dataset_split("s", "v1", "train") == "datasets/s/v1/train.parquet"
    assert lake.dataset_manifest("s", "v1") == lake.dataset("s", "v1", "manifest.json")
    assert lake.current_dataset("s") == "datasets/s/current.json"


def test_gate_report_keys_make_the_run_id_a_safe_folder():
    key = lake.gate_report("flights", "3", "scheduled__2013-01-01T00:00:00+00:00")
    assert key == "reports/flights/gates/v3/scheduled__2013-01-01T00_00_00_00_00/report.html"


def test_curated_keys_lists_only_partitions_oldest_first(tmp_path):
    store = LocalStore(tmp_path)
    for day in ("2013-01-03", "2013-01-01"):
        lake.write_parquet(store, lake.curated("f", day), pd.DataFrame({"x": [1]}), tmp_path)
    store.put_bytes(b"{}", "curated/f/notes.json")
    assert lake.curated_keys(store, "f") == [lake.curated("f", "2013-01-01"), lake.curated("f", "2013-01-03")]


def test_read_parquet_keeps_only_the_columns_the_file_has(tmp_path):
    store = LocalStore(tmp_path / "lake")
    lake.write_parquet(store, "a/data.parquet", pd.DataFrame({"x": [1, 2], "y": ["a", "b"]}), tmp_path)
    frame = lake.read_parquet(store, "a/data.parquet", tmp_path, columns=["y", "missing"])
    assert list(frame.columns) == ["y"]
    chunks = list(lake.iter_parquet(store, "a/data.parquet", tmp_path, chunk_rows=1, drop=("y",)))
    assert [list(c.columns) for c in chunks] == [["x"], ["x"]]


def test_local_copy_of_a_local_store_is_the_file_itself(tmp_path):
    store = LocalStore(tmp_path)
    store.put_bytes(b"abc", "k/v.bin")
    with store.local_copy("k/v.bin") as path:
        assert path == store.path("k/v.bin") and path.read_bytes() == b"abc"


def test_utc_takes_naive_values_as_utc_and_converts_aware_ones():
    assert utc(datetime(2013, 1, 1, 5)) == datetime(2013, 1, 1, 5, tzinfo=UTC)
    assert utc(datetime(2013, 1, 1, 0, tzinfo=timezone(timedelta(hours=-5)))).hour == 5
    assert utc(None) is None


def test_safe_name_collapses_runs_and_never_starts_hidden():
    assert safe_name("../a b:/c") == "_a_b_c"
    assert safe_name("...") == "_"
    assert len(safe_name("x" * 500)) == 120


def test_jsonable_gives_plain_json_types():
    out = jsonable({"nan": float("nan"), "np": np.float32(0.5), "arr": np.arange(2), 1: pd.Timestamp("2013-01-01")})
    assert out == {"nan": None, "np": 0.5, "arr": [0, 1], "1": "2013-01-01T00:00:00"}


def test_spec_named_names_the_folder_and_its_specs(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\n")
    with pytest.raises(SpecError, match=r"no spec named 'b' in .* \(specs there: a\)"):
        spec_named(tmp_path, "b")
    with pytest.raises(SpecError, match="no spec named"):
        spec_named(tmp_path, "../a")
