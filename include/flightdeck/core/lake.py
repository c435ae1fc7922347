"""The lake's catalog: every key FlightDeck writes, spelled once, and how objects are read and written.

Layout below the lake root (a folder or ``s3://bucket/prefix``)::

    raw/<spec>/<source>/<sha[:2]>/<sha>/<file>           every delivered file, byte for byte
    staged/<spec>/<source>/batch_id=<id>/data.parquet    one batch, typed
    curated/<spec>/batch_date=<day>/data.parquet         one day's validated rows (the scoring input)
    reports/<spec>/<kind>/<name>.<ext>                   profile, validation and quarantine reports
    reports/<spec>/gates/v<version>/<run>/...            the gate report of one judged version
    datasets/<spec>/current.json                         the published dataset version
    datasets/<spec>/<version>/<split>.parquet            its splits, manifest and training profile
    monitoring/<spec>/reference/v<version>.parquet       the drift reference of a model version

Local and S3 stores differ only in :meth:`Store.local_copy`; nothing here asks which one it has.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from flightdeck.core.storage import Store
from flightdeck.core.values import safe_name

CURATED_FILE = "data.parquet"


# ---------------------------------------------------------------- keys
def raw(spec: str, source: str, sha: str, file_name: str) -> str:
    """A delivered file, kept byte for byte under its content hash."""
    return f"raw/{spec}/{source}/{sha[:2]}/{sha}/{file_name}"


def staged(spec: str, source: str, batch_id: str) -> str:
    """One batch after typing and quarantine."""
    return f"staged/{spec}/{source}/batch_id={batch_id}/data.parquet"


def curated_prefix(spec: str) -> str:
    """The folder of a spec's curated partitions."""
    return f"curated/{spec}/"


def curated(spec: str, batch_date: str) -> str:
    """One day's curated partition."""
    return f"{curated_prefix(spec)}batch_date={batch_date}/{CURATED_FILE}"


def curated_date(spec: str, key: str) -> str | None:
    """The batch date of a curated partition's key, or None for any other key."""
    rel = key.removeprefix(curated_prefix(spec))
    if rel == key or not (rel.startswith("batch_date=") and rel.endswith("/" + CURATED_FILE)):
        return None
    return rel[len("batch_date="):-len("/" + CURATED_FILE)]


def report(spec: str, kind: str, name: str, ext: str) -> str:
    """A data report (profile, validation, quarantine) of one batch."""
    return f"reports/{spec}/{kind}/{name}.{ext}"


def gate_report(spec: str, version: str, run_id: str, file_name: str = "report.html") -> str:
    """A file of the gate report of one judged model version."""
    return f"reports/{spec}/gates/v{version}/{safe_name(run_id)}/{file_name}"


def dataset(spec: str, version_id: str, file_name: str | None = None) -> str:
    """A dataset version's folder, or one of its files (``train.parquet``, ``manifest.json``...)."""
    prefix = f"datasets/{spec}/{version_id}"
    return f"{prefix}/{file_name}" if file_name else prefix


def dataset_split(spec: str, version_id: str, split: str) -> str:
    """One split (train, validation, test) of a dataset version."""
    return dataset(spec, version_id, f"{split}.parquet")


def dataset_manifest(spec: str, version_id: str) -> str:
    return dataset(spec, version_id, "manifest.json")


def current_dataset(spec: str) -> str:
    """The pointer to the dataset version training uses."""
    return f"datasets/{spec}/current.json"


def reference(spec: str, model_version: str) -> str:
    """The drift reference sample of one model version."""
    return f"monitoring/{spec}/reference/v{model_version}.parquet"


# ---------------------------------------------------------------- listing
def curated_keys(store: Store, spec: str) -> list[str]:
    """Keys of a spec's curated partitions, oldest day first."""
    return sorted(o.key for o in store.list(curated_prefix(spec)) if curated_date(spec, o.key) is not None)


# ---------------------------------------------------------------- reading and writing
def read_parquet(store: Store, key: str, workdir: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """One Parquet object whole; with ``columns``, only those of them that the file has."""
    with store.local_copy(key, workdir) as path:
        if columns is None:
            return pd.read_parquet(path)
        names = set(pq.ParquetFile(path).schema_arrow.names)
        frame: pd.DataFrame = pq.read_table(path, columns=[c for c in columns if c in names]).to_pandas()
        return frame


def iter_parquet(store: Store, key: str, workdir: Path, chunk_rows: int,
                 drop: tuple[str, ...] = ()) -> Iterator[pd.DataFrame]:
    """A Parquet object chunk by chunk, without the ``drop`` columns (never decoded)."""
    with store.local_copy(key, workdir) as path:
        pf = pq.ParquetFile(path)
        columns = [c for c in pf.schema_arrow.names if c not in drop]
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=columns):
            yield batch.to_pandas()


def write_parquet(store: Store, key: str, frame: pd.DataFrame, workdir: Path) -> str:
    """Write ``frame`` as zstd Parquet to ``key`` in one atomic put; the object's URI."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / "data.parquet"
        frame.to_parquet(path, index=False, compression="zstd")
        return store.put_file(path, key)


def put_json(store: Store, key: str, payload: Any) -> str:
    """Write ``payload`` as indented, key-sorted JSON; the object's URI."""
    return store.put_bytes(json.dumps(payload, indent=2, default=str, sort_keys=True).encode(), key)


def read_json(store: Store, key: str) -> Any:
    return json.loads(store.read_bytes(key))
