"""FlightDeck on S3: the object store, the whole runner chain and the landing trigger.

The S3 API is served by moto on loopback (see ``s3_endpoint`` in conftest.py); boto3 is
not patched, so these tests exercise the same HTTP calls as a real bucket would see.
"""

from __future__ import annotations

import asyncio
import io
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from flightdeck.core import lake as lake_catalog
from flightdeck.core.storage import LocalStore, S3Store, open_store

pytestmark = pytest.mark.s3


# ---------------------------------------------------------------- S3Store
@pytest.fixture
def store(make_bucket, s3_endpoint) -> S3Store:
    return S3Store(f"s3://{make_bucket('store')}/some/prefix", s3_endpoint)


def test_open_store_returns_s3store_with_endpoint(s3_endpoint):
    st = open_store("s3://bucket/a/b/", s3_endpoint)
    assert isinstance(st, S3Store)
    assert (st.bucket, st.prefix, st.endpoint_url) == ("bucket", "a/b", s3_endpoint)
    assert st.uri() == "s3://bucket/a/b"
    assert st.uri("x/y.csv") == "s3://bucket/a/b/x/y.csv"


def test_put_bytes_read_exists_list(store, s3_client):
    uri = store.put_bytes(b"hello", "dir/one.txt")
    store.put_bytes(b"world!", "dir/sub/two.txt")
    store.put_bytes(b"x", "other.txt")

    assert uri == f"s3://{store.bucket}/some/prefix/dir/one.txt"
    assert store.read_bytes("dir/one.txt") == b"hello"
    assert store.exists("dir/one.txt")
    assert not store.exists("dir/missing.txt")
    assert not store.exists("dir")  # a "folder" is not an object

    listed = store.list("dir/")
    assert [(o.key, o.size) for o in listed] == [("dir/one.txt", 5), ("dir/sub/two.txt", 6)]
    assert all(o.modified.tzinfo is not None for o in listed)
    assert [o.key for o in store.list()] == ["dir/one.txt", "dir/sub/two.txt", "other.txt"]
    # the keys really sit below the store's prefix in the bucket
    raw = s3_client.list_objects_v2(Bucket=store.bucket)["Contents"]
    assert sorted(o["Key"] for o in raw) == [
        "some/prefix/dir/one.txt",
        "some/prefix/dir/sub/two.txt",
        "some/prefix/other.txt",
    ]


def test_list_ignores_sibling_prefix(make_bucket, s3_endpoint, s3_client):
    bucket = make_bucket("siblings")
    s3_client.put_object(Bucket=bucket, Key="zone2/not-mine.txt", Body=b"n")
    s3_client.put_object(Bucket=bucket, Key="zone/mine.txt", Body=b"m")
    st = S3Store(f"s3://{bucket}/zone", s3_endpoint)
    assert [o.key for o in st.list()] == ["mine.txt"]


def test_put_file_download_and_move(store, tmp_path: Path):
    src = tmp_path / "data.bin"
    src.write_bytes(b"\x00\x01payload" * 1000)
    uri = store.put_file(src, "in/data.bin")
    assert uri == store.uri("in/data.bin")

    got = store.download("in/data.bin", tmp_path / "copy.bin")
    assert got.read_bytes() == src.read_bytes()

    store.move("in/data.bin", "archive/2013/data.bin")
    assert not store.exists("in/data.bin")
    assert store.read_bytes("archive/2013/data.bin") == src.read_bytes()
    assert [o.key for o in store.list()] == ["archive/2013/data.bin"]


def test_delete_and_delete_prefix(store):
    for key in ("a/1.txt", "a/2.txt", "a/b/3.txt", "keep/4.txt"):
        store.put_bytes(key.encode(), key)
    store.delete("a/1.txt")
    store.delete("a/never-existed.txt")  # deleting a missing key is not an error
    assert not store.exists("a/1.txt")

    store.delete_prefix("a/")
    assert [o.key for o in store.list()] == ["keep/4.txt"]
    store.delete_prefix("nothing-here/")
    assert [o.key for o in store.list()] == ["keep/4.txt"]


def test_list_paginates_past_one_page(store):
    # list_objects_v2 returns at most 1000 keys a page
    for i in range(1005):
        store.put_bytes(b"", f"many/{i:05d}")
    keys = [o.key for o in store.list("many/")]
    assert len(keys) == 1005
    assert keys == sorted(keys)


def test_delete_prefix_without_slash_matches_local_store(store, tmp_path: Path):
    local = LocalStore(tmp_path / "local")
    for st in (store, local):
        st.put_bytes(b"1", "batch/a.txt")
        st.put_bytes(b"2", "batch2/b.txt")
        st.delete_prefix("batch")
    assert [o.key for o in local.list()] == ["batch2/b.txt"]
    assert [o.key for o in store.list()] == ["batch2/b.txt"]


def test_s3store_rejects_bad_uris():
    with pytest.raises(ValueError, match="not an s3"):
        S3Store("/tmp/x")
    with pytest.raises(ValueError, match="no bucket"):
        S3Store("s3:///prefix")


# ---------------------------------------------------------------- the runner chain on S3
def _read_csv(store, key: str) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(store.read_bytes(key)), dtype=str, keep_default_na=False)


def test_runner_chain_on_s3(s3_endpoint, s3_client, flights_spec, tmp_path: Path):
    from flightdeck.core import warehouse
    from flightdeck.core.settings import Settings
    from flightdeck.data import replay, runners

    for bucket in ("landing", "lake"):
        s3_client.create_bucket(Bucket=bucket)
    settings = Settings.from_env(
        {
            "FLIGHTDECK_HOME": str(tmp_path / "fd"),
            "FLIGHTDECK_PSEUDONYMISATION_KEY": "test-key-not-secret",
            "FLIGHTDECK_CHUNK_ROWS": "500",
            "FLIGHTDECK_LANDING_URI": "s3://landing/zone",
            "FLIGHTDECK_LAKE_URI": "s3://lake/data",
            "FLIGHTDECK_S3_ENDPOINT_URL": s3_endpoint,
        }
    )
    landing = open_store(settings.landing_uri, s3_endpoint)
    assert isinstance(landing, S3Store)
    landed = replay.replay(flights_spec, landing, date(2013, 5, 1), date(2013, 5, 2))
    assert sorted(d.file_name for d in landed) == [
        "flights_2013-05-01.csv",
        "flights_2013-05-02.csv",
        "outcomes_2013-05-01.csv",
        "outcomes_2013-05-02.csv",
    ]

    # one bad row: an origin outside the allowed set must be quarantined, not staged
    bad_key = "flights/flights_2013-05-01.csv"
    frame = _read_csv(landing, bad_key)
    frame.loc[0, "origin"] = "BOS"
    landing.put_bytes(frame.to_csv(index=False).encode(), bad_key)

    (tmp_path / "work").mkdir()
    ctx = runners.StageContext(flights_spec, settings, run_id="s3-run", workdir=tmp_path / "work")
    ingested = runners.ingest_deliveries(ctx)
    profiled = runners.profile_batches(ctx)
    validated = runners.validate_batches(ctx)
    curated = runners.curate_batches(ctx)
    published = runners.split_dataset(ctx)

    schedule_rows = sum(d.rows for d in landed if d.source == "schedule")
    assert ingested["claimed"] == ingested["batches"] == 4 and ingested["rejected"] == 0
    assert ingested["duplicates"] == []
    assert ingested["rows_in"] == 2 * schedule_rows
    assert ingested["rows_quarantined"] >= 1
    assert ingested["rows_in"] == ingested["rows_accepted"] + ingested["rows_quarantined"]
    assert profiled["profiled"] == 4 and validated["validated"] == 4
    assert curated["partitions"] == 2 and curated["rows"] > 0
    assert published["train_rows"] > published["validation_rows"] > 0 and published["test_rows"] > 0

    # the lake bucket holds every stage's output, below the lake prefix
    lake_keys = [
        o["Key"]
        for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket="lake")
        for o in page.get("Contents", [])
    ]
    assert all(k.startswith("data/") for k in lake_keys)
    by_area = {
        area: [k for k in lake_keys if k.startswith(f"data/{area}/flights/")]
        for area in ("raw", "staged", "curated", "datasets", "reports")
    }
    assert len([k for k in by_area["raw"] if k.endswith(".csv")]) == 4
    assert len([k for k in by_area["staged"] if k.endswith("/data.parquet")]) == 4
    assert sorted(by_area["curated"]) == [
        f"data/curated/flights/batch_date=2013-05-0{d}/data.parquet" for d in (1, 2)
    ]
    version = published["version_id"]
    for name in ("train.parquet", "validation.parquet", "test.parquet", "manifest.json"):
        assert f"data/datasets/flights/{version}/{name}" in by_area["datasets"]
    assert "data/datasets/flights/current.json" in by_area["datasets"]
    assert published["manifest_uri"] == f"s3://lake/data/datasets/flights/{version}/manifest.json"
    assert by_area["reports"], "profile and validation reports written to the lake"

    # the landing files are archived (the raw copies are checked against them below)
    lake = open_store(settings.lake_uri, s3_endpoint)
    landing_keys = [o.key for o in landing.list()]
    assert all(k.startswith("flights/_archive/") for k in landing_keys), landing_keys
    assert len(landing_keys) == 4
    assert runners.waiting_files(landing, "flights", ["*"]) == []

    # catalog counts reconcile with the staged Parquet and the quarantine table
    engine = warehouse.connect(settings.warehouse_url)
    batches = warehouse.list_batches(engine, "flights", run_id="s3-run")
    assert len(batches) == 4
    for b in batches:
        assert b["status"] == "curated"
        assert b["rows_in"] == b["rows_accepted"] + b["rows_quarantined"]
        assert b["raw_uri"].startswith("s3://lake/data/raw/flights/")
        assert b["source_uri"] == f"s3://landing/zone/flights/{b['file_name']}"
        raw_key = b["raw_uri"].removeprefix("s3://lake/data/")
        archived = f"flights/_archive/{b['batch_id'][:12]}-{b['file_name']}"
        assert lake.read_bytes(raw_key) == landing.read_bytes(archived)
        staged = pd.read_parquet(
            io.BytesIO(lake.read_bytes(lake_catalog.staged("flights", b["source"], b["batch_id"])))
        )
        assert len(staged) == b["rows_accepted"]
        with engine.connect() as conn:
            quarantined_rows = conn.execute(
                sa.select(sa.func.count(sa.distinct(warehouse.quarantine.c.row_number))).where(
                    warehouse.quarantine.c.spec_name == "flights",
                    warehouse.quarantine.c.batch_id == b["batch_id"],
                )
            ).scalar_one()
        assert quarantined_rows == b["rows_quarantined"]
    bad = next(b for b in batches if b["file_name"] == "flights_2013-05-01.csv")
    reasons = warehouse.quarantine_counts(engine, "flights", bad["batch_id"])
    assert reasons.get("unseen_category", 0) >= 1, reasons
    assert sum(b["rows_in"] for b in batches if b["source"] == "schedule") == schedule_rows


# ---------------------------------------------------------------- LandingFilesTrigger
async def _first_event(trigger):
    gen = trigger.run()
    try:
        return await anext(gen)
    finally:
        await gen.aclose()


def _run_trigger(**kwargs):
    from flightdeck_airflow.triggers import LandingFilesTrigger

    trigger = LandingFilesTrigger(
        spec_name="flights", patterns=["flights_*.csv", "outcomes_*.csv"], **kwargs
    )
    return asyncio.run(_first_event(trigger)).payload


@pytest.fixture
def s3_landing(make_bucket, s3_endpoint) -> S3Store:
    return S3Store(f"s3://{make_bucket('landing')}/zone", s3_endpoint)


def test_trigger_finds_file_on_s3(s3_landing, s3_endpoint):
    s3_landing.put_bytes(b"year\n2013\n", "flights/flights_2013-05-01.csv")
    event = _run_trigger(
        landing_uri=s3_landing.uri(), s3_endpoint_url=s3_endpoint, poll_interval=0.2, timeout=30
    )
    assert event == {"status": "found", "files": ["flights/flights_2013-05-01.csv"]}


def test_trigger_times_out_on_s3_when_nothing_waits(s3_landing, s3_endpoint):
    # archived, hidden and non-matching files are not waiting deliveries
    s3_landing.put_bytes(b"x", "flights/_archive/abc-flights_2013-05-01.csv")
    s3_landing.put_bytes(b"x", "flights/.flights_2013-05-02.csv")
    s3_landing.put_bytes(b"x", "flights/readme.txt")
    s3_landing.put_bytes(b"x", "other/flights_2013-05-03.csv")
    event = _run_trigger(
        landing_uri=s3_landing.uri(), s3_endpoint_url=s3_endpoint, poll_interval=0.2, timeout=1
    )
    assert event == {"status": "timeout"}


def test_trigger_finds_file_in_local_folder(tmp_path: Path):
    landing = LocalStore(tmp_path / "landing")
    landing.put_bytes(b"year\n2013\n", "flights/outcomes_2013-05-01.csv")
    event = _run_trigger(landing_uri=str(tmp_path / "landing"), poll_interval=0.2, timeout=30)
    assert event == {"status": "found", "files": ["flights/outcomes_2013-05-01.csv"]}


def test_trigger_times_out_on_empty_local_folder(tmp_path: Path):
    landing = LocalStore(tmp_path / "landing")
    landing.put_bytes(b"x", "flights/_archive/abc-flights_2013-05-01.csv")
    event = _run_trigger(landing_uri=str(tmp_path / "landing"), poll_interval=0.2, timeout=1)
    assert event == {"status": "timeout"}


def test_trigger_serialize_round_trip(s3_endpoint):
    from flightdeck_airflow.triggers import LandingFilesTrigger

    trigger = LandingFilesTrigger(
        "s3://landing/zone",
        "flights",
        ["flights_*.csv"],
        poll_interval=5,
        timeout=60,
        s3_endpoint_url=s3_endpoint,
    )
    path, kwargs = trigger.serialize()
    assert path == "flightdeck_airflow.triggers.LandingFilesTrigger"
    clone = LandingFilesTrigger(**kwargs)
    assert clone.serialize() == (path, kwargs)
