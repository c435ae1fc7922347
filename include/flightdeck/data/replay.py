"""Replay: cut a full historical source into the deliveries production would see.

For each period of the features source's ``batch_grain`` (a local day by default), the
features source gets one file with that period's rows (``flights_2013-01-05.csv``, or
``penguins_2007_11.csv`` for a month) and, when the spec has a labels source, a second
file with the outcomes of the same period (``outcomes_2013-01-05.csv``), delivered after it.
Columns are written under their delivered headers.
"""

from __future__ import annotations

import importlib.metadata
import io
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import cast
from zoneinfo import ZoneInfo

import pandas as pd

from flightdeck.core.periods import next_period_start, period_from_groups, period_start
from flightdeck.core.spec import DatasetSpec, SourceSpec
from flightdeck.core.storage import Store

NAME_FORMATS = {"day": ("%Y-%m-%d", "%Y%m%d", "%Y_%m_%d"),
                "month": ("%Y_%m", "%Y-%m", "%Y%m", "%Y-%m-%d"),
                "week": ("%G-W%V", "%G_W%V", "%G_%V", "%G-%V", "%GW%V", "%Y-%m-%d"),
                "none": ("%Y-%m-%d",)}


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
    header = spec.features_source.header_of(spec.event_time)
    if header not in frame.columns:
        raise ReplayError(f"{path.name}: replay source lacks the event_time column {header!r}")
    ts = pd.to_datetime(frame[header], utc=True, format="ISO8601")
    frame["_local_date"] = ts.dt.tz_convert(ZoneInfo(spec.timezone)).dt.date
    return frame


@dataclass(frozen=True)
class Delivery:
    day: date
    source: str
    file_name: str
    rows: int


def delivery_name(pattern: str, day: date, source: SourceSpec | None = None) -> str:
    """The file name of the delivery of the period starting ``day``, readable by the source's batch-date regex."""
    if source is None or source.batch_date is None:
        return pattern.replace("*", day.isoformat())
    for fmt in NAME_FORMATS[source.batch_grain]:
        name = pattern.replace("*", day.strftime(fmt))
        match = re.search(source.batch_date, name)
        try:
            if match and period_from_groups(match.groupdict(), source.batch_grain) == day:
                return name
        except ValueError:
            continue
    raise ReplayError(f"cannot name a delivery of {day} that matches batch_date {source.batch_date!r}")


def cut_deliveries(spec: DatasetSpec, frame: pd.DataFrame, start: date, end: date) -> list[tuple[Delivery, bytes]]:
    """Cut ``frame`` into per-period CSV deliveries for every source, features before labels.

    The period is the features source's ``batch_grain`` (``none`` cuts by day); a period is
    delivered when it overlaps ``start``..``end``.
    """
    if start > end:
        raise ReplayError(f"start {start} is after end {end}")
    grain = spec.features_source.batch_grain
    out: list[tuple[Delivery, bytes]] = []
    periods = frame["_local_date"].map(lambda d: period_start(d, grain))
    by_period = {d: g for d, g in ((cast(date, k), g) for k, g in frame.groupby(periods))}
    ordered = sorted(spec.sources.items(), key=lambda kv: kv[1].role != "features")
    day = period_start(start, grain)
    while day <= end:
        rows = by_period.get(day)
        if rows is not None:
            for name, source in ordered:
                headers = list(source.headers)
                missing = [c for c in headers if c not in rows.columns]
                if missing:
                    raise ReplayError(f"replay source lacks columns {missing} of source {name!r}")
                buf = io.StringIO()
                rows[headers].to_csv(buf, index=False, sep=source.delimiter)
                payload = buf.getvalue().encode(source.encoding)
                out.append((Delivery(day, name, delivery_name(source.pattern, day, source), len(rows)), payload))
        day = next_period_start(day, "day" if grain == "none" else grain)
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
