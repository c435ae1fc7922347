"""Object stores for the landing zone, the raw area and the lake.

A store is a local folder or an ``s3://bucket/prefix`` reached through boto3. Keys are
relative POSIX paths. Every write is atomic: a local write goes to a temporary file in
the same folder and is renamed into place; an S3 PUT of one object is atomic by itself.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


class LocalStore:
    """A folder on the local file system."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def uri(self, key: str = "") -> str:
        return str(self.root / key) if key else str(self.root)

    def path(self, key: str) -> Path:
        return self.root / key

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        base = self.root / prefix
        if not base.exists():
            return []
        out = []
        for p in sorted(base.rglob("*")):
            if p.is_file() and not p.name.startswith(".tmp-"):
                st = p.stat()
                out.append(ObjectInfo(p.relative_to(self.root).as_posix(), st.st_size,
                                      datetime.fromtimestamp(st.st_mtime, UTC)))
        return out

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def read_bytes(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def download(self, key: str, dest: Path) -> Path:
        shutil.copyfile(self.root / key, dest)
        return dest

    @contextmanager
    def local_copy(self, key: str, workdir: Path | None = None) -> Iterator[Path]:
        """The object as a local file: the file itself, nothing is copied."""
        yield self.path(key)

    def _write_atomic(self, key: str, write: Callable[[str], object]) -> str:
        """Write through a temporary file in the target folder, then rename into place."""
        dest = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
        os.close(fd)
        try:
            write(tmp)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return self.uri(key)

    def put_file(self, src: Path, key: str) -> str:
        return self._write_atomic(key, lambda tmp: shutil.copyfile(src, tmp))

    def put_bytes(self, data: bytes, key: str) -> str:
        return self._write_atomic(key, lambda tmp: Path(tmp).write_bytes(data))

    def move(self, src_key: str, dst_key: str) -> None:
        dest = self.root / dst_key
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.root / src_key, dest)

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        target = self.root / prefix
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


class S3Store:
    """A bucket prefix on S3 or an S3-compatible server, through boto3."""

    def __init__(self, uri: str, endpoint_url: str | None = None) -> None:
        if not uri.startswith("s3://"):
            raise ValueError(f"not an s3:// URI: {uri!r}")
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        if not bucket:
            raise ValueError(f"S3 URI {uri!r} names no bucket")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url

    def __repr__(self) -> str:
        return f"S3Store({self.uri()!r})"

    @cached_property
    def client(self) -> Any:
        import boto3  # credentials come from the environment or the AWS config, never code

        return boto3.client("s3", endpoint_url=self.endpoint_url)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str = "") -> str:
        full = self._key(key) if key else self.prefix
        return f"s3://{self.bucket}/{full}" if full else f"s3://{self.bucket}"

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        if prefix and not prefix.endswith("/"):
            prefix += "/"  # a prefix is a folder, as in LocalStore
        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            for obj in page.get("Contents", []):
                out.append(ObjectInfo(obj["Key"][strip:], obj["Size"], obj["LastModified"]))
        return sorted(out, key=lambda o: o.key)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def read_bytes(self, key: str) -> bytes:
        data: bytes = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        return data

    def download(self, key: str, dest: Path) -> Path:
        self.client.download_file(self.bucket, self._key(key), str(dest))
        return dest

    @contextmanager
    def local_copy(self, key: str, workdir: Path | None = None) -> Iterator[Path]:
        """The object as a local file: downloaded into a temporary folder, removed afterwards."""
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            yield self.download(key, Path(tmp) / Path(key).name)

    def put_file(self, src: Path, key: str) -> str:
        self.client.upload_file(str(src), self.bucket, self._key(key))
        return self.uri(key)

    def put_bytes(self, data: bytes, key: str) -> str:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        return self.uri(key)

    def move(self, src_key: str, dst_key: str) -> None:
        self.client.copy_object(Bucket=self.bucket, Key=self._key(dst_key),
                                CopySource={"Bucket": self.bucket, "Key": self._key(src_key)})
        self.client.delete_object(Bucket=self.bucket, Key=self._key(src_key))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def delete_prefix(self, prefix: str) -> None:
        for obj in self.list(prefix):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(obj.key))


Store = LocalStore | S3Store


def open_store(uri: str, s3_endpoint_url: str | None = None) -> Store:
    """Open a store for a local path or an ``s3://`` URI."""
    if uri.startswith("s3://"):
        return S3Store(uri, s3_endpoint_url)
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"unsupported store URI {uri!r}: use a local path or s3://bucket/prefix")
    return LocalStore(uri.removeprefix("file://"))
