"""Small value conversions every stage needs: UTC instants, safe names, plain JSON."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, overload

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@overload
def utc(value: datetime) -> datetime: ...
@overload
def utc(value: None) -> None: ...
def utc(value: datetime | None) -> datetime | None:
    """``value`` as an aware UTC datetime; naive values (SQLite drops the offset) are UTC already."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def safe_name(text: str, limit: int = 120) -> str:
    """``text`` usable as one file name or key segment: runs of other characters become ``_``."""
    return _UNSAFE.sub("_", text).lstrip(".")[:limit] or "_"


def jsonable(value: Any) -> Any:
    """Plain JSON types: NaN and inf to None, numpy scalars and arrays to Python, dates to ISO text."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalars and arrays, pandas timestamps are dates above
        return jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    try:
        number = float(value)  # Decimal and friends
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None
