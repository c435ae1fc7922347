"""Replay: cut a full historical source into the deliveries production would see.

For each local day of the spec's event time, the features source gets one file with that
day's rows (``flights_2013-01-05.csv``) and, when the spec has a labels source, a second
file with the outcomes of the same day (``outcomes_2013-01-05.csv``), delivered after it.
"""

from __future__ import annotations

import importlib.metadata
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import cast
from zoneinfo import ZoneInfo

import pandas as pd

from flightdeck.core.spec import DatasetSpec
from flightdeck.core.storage import Store


class ReplayError(ValueError):
    """The spec has no replay section, or its source cannot be read."""


def package_file(package: str, relative: str) -> Path:
    """Locate a data file shipped inside an installed distribution (without importing it)."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ReplayError(f"package {package!r} is not installed; add it to requirements.txt") from None
    path = Path(str(dist.locate_file(relative)))
    if not path.exists():
        raise ReplayError(f"{relative!r} not found in package {package!r} (looked at {path})")
    return path


def load_replay_source(spec: DatasetSpec) -> pd.DataFrame:
    """The whole replay source as delivered text (no type conversion), plus ``_local_date``."""
    if spec.replay is None:
        raise ReplayError(f"spec {spec.name!r} has no replay section")
    path = package_file(spec.replay.package, spec.replay.file)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    if spec.event_time not in frame.columns:
        raise ReplayError(f"{path.name}: replay source lacks the event_time column {spec.event_time!r}")
    ts = pd.to_datetime(frame[spec.event_time], utc=True, format="ISO8601")
    frame["_local_date"] = ts.dt.tz_convert(ZoneInfo(spec.timezone)).dt.date
    return frame


@dataclass(frozen=True)
class Delivery:
    day: date
    source: str
    file_name: str
    rows: int


def delivery_name(pattern: str, day: date) -> str:
    return pattern.replace("*", day.isoformat())


def cut_deliveries(spec: DatasetSpec, frame: pd.DataFrame, start: date, end: date) -> list[tuple[Delivery, bytes]]:
    """Cut ``frame`` into per-day CSV deliveries for every source, features before labels."""
    if start > end:
        raise ReplayError(f"start {start} is after end {end}")
    out: list[tuple[Delivery, bytes]] = []
    by_day = {d: g for d, g in ((cast(date, k), g) for k, g in frame.groupby("_local_date")) if start <= d <= end}
    ordered = sorted(spec.sources.items(), key=lambda kv: kv[1].role != "features")
    day = start
    while day <= end:
        rows = by_day.get(day)
        if rows is not None:
            for name, source in ordered:
                missing = [c for c in source.columns if c not in rows.columns]
                if missing:
                    raise ReplayError(f"replay source lacks columns {missing} of source {name!r}")
                buf = io.StringIO()
                rows[list(source.columns)].to_csv(buf, index=False, sep=source.delimiter)
                payload = buf.getvalue().encode(source.encoding)
                out.append((Delivery(day, name, delivery_name(source.pattern, day), len(rows)), payload))
        day += timedelta(days=1)
    return out


def replay(spec: DatasetSpec, landing: Store, start: date, end: date, *, pace_seconds: float = 0.0,
           on_delivery: Callable[[Delivery], None] | None = None) -> list[Delivery]:
    """Drop the deliveries of ``start``..``end`` into ``landing/<spec>/``, one day at a time.

    Labels of day D are dropped after the features of day D, as they would arrive the
    day after. Files are written atomically, so a sensor never sees half a file.
    """
    frame = load_replay_source(spec)
    done = []
    last_day: date | None = None
    for delivery, payload in cut_deliveries(spec, frame, start, end):
        if pace_seconds and last_day is not None and delivery.day != last_day:
            time.sleep(pace_seconds)
        landing.put_bytes(payload, f"{spec.name}/{delivery.file_name}")
        done.append(delivery)
        last_day = delivery.day
        if on_delivery:
            on_delivery(delivery)
    return done
