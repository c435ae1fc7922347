"""Ingestion stages: read a delivery, type its columns and sort rows into accepted and
quarantined, with a reason code for every rule a row breaks.

Everything here is vectorised over pandas chunks; a file is read ``chunk_rows`` at a
time so memory does not grow with the file.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import cast
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flightdeck.core.errors import Rejected
from flightdeck.core.periods import next_period_start, period_from_groups, period_start
from flightdeck.core.schema import ARROW_TYPES
from flightdeck.core.spec import ColumnSpec, DatasetSpec, SourceSpec, parse_duration

NON_FINITE_LITERALS = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}
TRUE_LITERALS = {"true", "t", "yes", "y", "1"}
FALSE_LITERALS = {"false", "f", "no", "n", "0"}


class DeliveryError(Rejected, ValueError):
    """A delivered file cannot be read as its source declares; names the file and what was expected."""

    def __init__(self, file_name: str, message: str) -> None:
        super().__init__(f"{file_name}: {message}")
        self.file_name = file_name


class QualityGateError(Rejected, ValueError):
    """A batch broke a hard data-quality rule (quarantine share, hard expectations)."""


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def match_source(spec: DatasetSpec, file_name: str) -> str | None:
    """Return the name of the source whose pattern matches ``file_name``, if any."""
    for name, source in spec.sources.items():
        if fnmatch.fnmatchcase(file_name, source.pattern):
            return name
    return None


def batch_date_of(source: SourceSpec, file_name: str, received_at: datetime | None = None,
                  tz: str = "UTC") -> date | None:
    """The first day of the period a delivery covers, read from its file name.

    ``batch_grain: none`` has no date in the name: the batch is keyed by the local day the
    file was received (``received_at`` in ``tz``), so ingestion order defines the batches.
    ``None`` when the source declares no batch date (or, for ``none``, no receipt time is given).
    """
    if source.batch_grain == "none":
        if received_at is None:
            return None
        when = received_at if received_at.tzinfo is not None else received_at.replace(tzinfo=ZoneInfo("UTC"))
        return when.astimezone(ZoneInfo(tz)).date()
    if source.batch_date is None:
        return None
    match = re.search(source.batch_date, file_name)
    if not match:
        raise DeliveryError(file_name, f"file name does not carry a date matching {source.batch_date!r}")
    try:
        return period_from_groups(match.groupdict(), source.batch_grain)
    except ValueError as exc:
        raise DeliveryError(file_name, f"{match.group(0)!r} in the file name is not a valid "
                                       f"{source.batch_grain} batch date: {exc}") from None


def arrow_schema(source: SourceSpec, pii_dropped: bool = True) -> pa.Schema:
    """Arrow schema of a source's accepted rows (PII columns marked ``drop`` removed)."""
    fields = [pa.field(n, ARROW_TYPES[c.type]) for n, c in source.columns.items()
              if not (pii_dropped and c.pii == "drop")]
    return pa.schema([*fields, pa.field("_batch_id", pa.string()), pa.field("_row_number", pa.int64())])


def _check_header(file_name: str, header: list[str], source: SourceSpec) -> list[str]:
    """The delivered headers to read, in declaration order (a column's ``header`` or its name)."""
    expected = list(source.headers)
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise DeliveryError(file_name, f"duplicate column names in header: {dupes}")
    missing = [c for c in expected if c not in header]
    if len(header) == 1 and len(expected) > 1:
        hint = ""
        for sep in (";", "\t", "|", ","):
            if sep != source.delimiter and sep in header[0]:
                hint = f" (it looks delimited by {sep!r}; expected {source.delimiter!r})"
        raise DeliveryError(file_name, f"header has one column {header[0][:80]!r}{hint}; "
                                       f"expected columns {expected}")
    if missing:
        raise DeliveryError(file_name, f"missing required column(s) {missing}; expected {expected}")
    extra = [c for c in header if c not in source.headers]
    if extra and source.extra_columns == "reject":
        raise DeliveryError(file_name, f"unknown extra column(s) {extra}; expected exactly {expected} "
                                       "(set extra_columns: ignore in the spec to accept them)")
    return expected


def read_delivery(path: Path, source: SourceSpec, file_name: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Yield the file's rows as string-typed chunks (CSV) or typed chunks (Parquet).

    Raises:
        DeliveryError: empty file, header only, undecodable text, wrong delimiter,
            missing or unexpected columns, truncated or corrupt content.
    """
    if path.stat().st_size == 0:
        raise DeliveryError(file_name, f"empty file (0 bytes); expected a header with columns {list(source.headers)}")
    if source.format == "parquet":
        yield from _read_parquet(path, source, file_name, chunk_rows)
        return
    try:
        header = list(pd.read_csv(path, nrows=0, sep=source.delimiter, encoding=source.encoding).columns)
    except UnicodeDecodeError as exc:
        raise DeliveryError(file_name, f"cannot decode as {source.encoding} at byte {exc.start}: "
                                       "wrong encoding?") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DeliveryError(file_name, f"unreadable CSV header: {exc}") from None
    columns = _check_header(file_name, header, source)
    rows = 0
    try:
        # no usecols: with it pandas silently drops surplus fields of a malformed row
        reader = pd.read_csv(path, sep=source.delimiter, encoding=source.encoding, dtype=str,
                             keep_default_na=False, na_filter=False,
                             chunksize=chunk_rows, on_bad_lines="error")
        for chunk in reader:
            rows += len(chunk)
            yield chunk[columns].rename(columns=source.headers)
    except UnicodeDecodeError:
        raise DeliveryError(file_name, f"cannot decode as {source.encoding} near data row {rows + 1}: "
                                       "wrong encoding?") from None
    except pd.errors.ParserError as exc:
        raise DeliveryError(file_name, f"malformed or truncated CSV after data row {rows}: {exc}") from None
    if rows == 0:
        raise DeliveryError(file_name, "header only, no data rows; expected at least one row")


def _read_parquet(path: Path, source: SourceSpec, file_name: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DeliveryError(file_name, f"not a readable Parquet file (truncated or corrupt?): {exc}") from None
    columns = _check_header(file_name, pf.schema_arrow.names, source)
    if pf.metadata.num_rows == 0:
        raise DeliveryError(file_name, "Parquet file has a schema but no rows; expected at least one row")
    try:
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=columns):
            yield batch.to_pandas().rename(columns=source.headers)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DeliveryError(file_name, f"corrupt Parquet data: {exc}") from None


def pseudonymise(values: pd.Series, key: str) -> pd.Series:
    """Keyed hash (HMAC-SHA256) of each non-missing value: stable, joinable, not reversible."""
    codes, uniques = pd.factorize(values)  # missing values get code -1; each distinct value is hashed once
    secret = key.encode()
    hashed = np.array([*("p_" + hmac.new(secret, str(u).encode(), hashlib.sha256).hexdigest()[:24]
                         for u in uniques), None], dtype=object)
    return pd.Series(hashed[codes], index=values.index, name=values.name, dtype="object")


@dataclass
class ParsedChunk:
    accepted: pd.DataFrame
    issues: pd.DataFrame  # row_number, reason, column_name, value
    quarantined: pd.DataFrame  # raw rows (PII treated) with row_number and entity_key


@dataclass
class RowRules:
    """The per-batch context for row rules: window, clock, and keys already seen."""

    batch_id: str
    batch_date: date | None
    received_at: datetime
    grain: str = "day"
    seen_keys: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))

    def seen(self, hashes: np.ndarray) -> np.ndarray:
        """Which key hashes were accepted in earlier chunks (sorted-array lookup, vectorised)."""
        if self.seen_keys.size == 0:
            return np.zeros(hashes.size, dtype=bool)
        order = np.argsort(hashes, kind="stable")  # sorted needles walk the haystack in order: cache-friendly
        needles = hashes[order]
        pos = np.minimum(np.searchsorted(self.seen_keys, needles), self.seen_keys.size - 1)
        seen = np.empty(hashes.size, dtype=bool)
        seen[order] = self.seen_keys[pos] == needles
        return seen

    def remember(self, hashes: np.ndarray) -> None:
        """Add accepted (hence new and unique) key hashes; a stable sort merges the two sorted runs in O(n)."""
        fresh = np.sort(hashes.astype(np.uint64))
        self.seen_keys = np.sort(np.concatenate([self.seen_keys, fresh]), kind="stable")


def batch_rules(source: SourceSpec, batch: dict[str, object]) -> RowRules:
    """The row rules of a cataloged batch: its period (by the source's grain) and receipt time.

    An undated source (``batch_grain: none``) keeps the batch date recorded when the file was
    claimed; the others read it from the file name again.
    """
    file_name, recorded = str(batch["file_name"]), batch.get("batch_date")
    if source.batch_grain == "none" or source.batch_date is None:
        batch_date = date.fromisoformat(str(recorded)) if recorded else None
    else:
        batch_date = batch_date_of(source, file_name)
    received = cast(datetime, batch["received_at"])
    return RowRules(batch_id=str(batch["batch_id"]), batch_date=batch_date, received_at=received,
                    grain=source.batch_grain)


def _as_text(raw: pd.Series) -> pd.Series:
    if raw.dtype == object or pd.api.types.is_string_dtype(raw):
        return raw.astype("object")
    return raw.astype("object").where(raw.notna(), None).map(lambda v: None if v is None else str(v))


def _is_text(raw: pd.Series) -> bool:
    return raw.dtype == object or pd.api.types.is_string_dtype(raw)


def _arrow_strings(raw: pd.Series, col: ColumnSpec) -> pa.ChunkedArray | None:
    """The Arrow strings behind a pandas ``str`` column (pyarrow storage), else ``None``."""
    if not (isinstance(raw.dtype, pd.StringDtype) and raw.dtype.storage == "pyarrow"):
        return None
    if col.allowed is not None and not all(isinstance(v, str) for v in col.allowed):
        return None
    strings = pa.chunked_array(pa.array(raw))
    return strings if pa.types.is_string(strings.type) or pa.types.is_large_string(strings.type) else None


def _parse_arrow_text(raw: pd.Series, strings: pa.ChunkedArray, col: ColumnSpec,
                      na_values: tuple[str, ...]) -> tuple[pd.Series, dict[str, pd.Series]]:
    """A category or string column read as Arrow strings: checked with Arrow compute, never
    converted to Python objects. Same masks and values as the object path (missing as NA)."""
    na = pa.array(list(na_values), type=strings.type)
    missing_np = pc.or_(pc.is_null(strings), pc.is_in(strings, value_set=na)).to_numpy()
    missing = pd.Series(missing_np, index=raw.index)
    masks: dict[str, pd.Series] = {}
    if col.allowed is not None and col.on_unseen == "quarantine":
        known = pc.is_in(strings, value_set=pa.array(list(col.allowed), type=strings.type)).to_numpy()
        masks["unseen_category"] = pd.Series(~missing_np & ~known, index=raw.index)
    masks["missing_value"] = missing if col.required else pd.Series(False, index=raw.index)
    return raw.where(~missing), masks


def parse_column(raw: pd.Series, col: ColumnSpec, na_values: tuple[str, ...]) -> tuple[pd.Series, dict[str, pd.Series]]:
    """Type one column; return the typed values and boolean masks of broken rules.

    Text input (CSV) is parsed; typed input (Parquet) is checked without a detour
    through text, so no value is converted one by one.
    """
    if col.type in ("category", "string") and (strings := _arrow_strings(raw, col)) is not None:
        return _parse_arrow_text(raw, strings, col, na_values)
    if _is_text(raw):
        text = raw.astype("object")
        missing = text.isna() | text.isin(na_values)
    else:
        text = raw  # only used where it is text
        missing = raw.isna()
    present = ~missing
    masks: dict[str, pd.Series] = {}
    typed: pd.Series
    if col.type in ("int", "float"):
        if pd.api.types.is_numeric_dtype(raw):
            parsed = raw.astype("float64")
            literal_nf = pd.Series(False, index=raw.index)
        else:
            lowered = text.where(present, "").str.strip().str.lower()
            literal_nf = present & lowered.isin(NON_FINITE_LITERALS)
            parsed = pd.to_numeric(text.where(present & ~literal_nf), errors="coerce").astype("float64")
        non_finite = present & (literal_nf | np.isinf(parsed.fillna(0)))
        unparseable = present & ~non_finite & parsed.isna()
        if col.type == "int":
            fractional = present & parsed.notna() & ~non_finite & (np.floor(parsed) != parsed)
            unparseable = unparseable | fractional
        ok = present & ~non_finite & ~unparseable
        out_of_range = pd.Series(False, index=raw.index)
        if col.min is not None:
            out_of_range |= ok & (parsed < col.min)
        if col.max is not None:
            out_of_range |= ok & (parsed > col.max)
        masks.update(non_finite=non_finite, unparseable=unparseable, out_of_range=out_of_range)
        clean = parsed.where(ok)
        typed = clean.round().astype("Int64") if col.type == "int" else clean
    elif col.type == "timestamp":
        if pd.api.types.is_datetime64_any_dtype(raw):
            typed = raw.dt.tz_localize("UTC") if raw.dt.tz is None else raw.dt.tz_convert("UTC")
        else:
            typed = pd.to_datetime(text.where(present), utc=True, errors="coerce", format="ISO8601")
        masks["unparseable"] = present & typed.isna()
        typed = typed.astype("datetime64[us, UTC]")
    elif col.type == "bool":
        lowered = _as_text(raw).where(present, "").astype(str).str.strip().str.lower()
        is_true, is_false = lowered.isin(TRUE_LITERALS), lowered.isin(FALSE_LITERALS)
        masks["unparseable"] = present & ~is_true & ~is_false
        typed = pd.Series(pd.NA, index=raw.index, dtype="boolean")
        typed[is_true] = True
        typed[is_false] = False
    else:  # category, string
        text = _as_text(raw)
        typed = text.where(present, None)
        if col.allowed is not None:
            unseen = present & ~text.isin(col.allowed)
            if col.on_unseen == "quarantine":
                masks["unseen_category"] = unseen
    masks["missing_value"] = missing if col.required else pd.Series(False, index=raw.index)
    return typed, masks


def parse_rows(chunk: pd.DataFrame, spec: DatasetSpec, source: SourceSpec, rules: RowRules,
               first_row_number: int, pii_key: str) -> ParsedChunk:
    """Type a chunk and split it into accepted rows and quarantined rows with reasons."""
    chunk = chunk.reset_index(drop=True)
    row_numbers = pd.RangeIndex(first_row_number, first_row_number + len(chunk))
    typed: dict[str, pd.Series] = {}
    issue_frames: list[pd.DataFrame] = []

    def add(mask: pd.Series, reason: str, column: str) -> None:
        if mask.any():
            idx = np.flatnonzero(mask.to_numpy(dtype=bool))
            values = _as_text(chunk[column].iloc[idx]) if column in chunk else pd.Series([None] * len(idx))
            issue_frames.append(pd.DataFrame({"row_idx": idx, "reason": reason, "column_name": column,
                                              "value": values.to_numpy()}))

    for name, col in source.columns.items():
        values, masks = parse_column(chunk[name], col, source.na_values)
        typed[name] = values
        for reason, mask in masks.items():
            if reason == "missing_value" and name in spec.entity_key:
                reason = "missing_key"
            add(mask, reason, name)

    known = spec.target.known_values
    if known is not None and spec.target.column in source.columns:
        target = typed[spec.target.column]
        add(target.notna() & ~target.astype("object").isin(known), "unknown_target", spec.target.column)

    key_cols = [k for k in spec.entity_key if k in source.columns]
    key_ok = pd.concat([typed[k].notna() for k in key_cols], axis=1).all(axis=1)
    # compare typed values, so 475 and 0475 are the same flight
    hashes = pd.util.hash_pandas_object(pd.DataFrame({k: typed[k] for k in key_cols}), index=False)
    dup = key_ok & (hashes.duplicated() | pd.Series(rules.seen(hashes.to_numpy()), index=hashes.index))
    add(dup, "duplicate_key", ",".join(key_cols))
    rules.remember(hashes[key_ok & ~dup].to_numpy())

    if spec.event_time in typed:
        ts = typed[spec.event_time]
        if rules.batch_date is not None and rules.grain != "none":
            # the event's local day must fall in the batch's period [start, next start)
            start = period_start(rules.batch_date, rules.grain)
            end = next_period_start(start, rules.grain)
            local_date = ts.dt.tz_convert(ZoneInfo(spec.timezone)).dt.date
            add(ts.notna() & ((local_date < start) | (local_date >= end)), "outside_window", spec.event_time)
        received = pd.Timestamp(rules.received_at)
        received = received.tz_localize("UTC") if received.tzinfo is None else received.tz_convert("UTC")
        horizon = received + parse_duration(spec.quality.max_event_lead)
        add(ts.notna() & (ts > horizon), "in_future", spec.event_time)

    issues = pd.concat(issue_frames, ignore_index=True) if issue_frames else pd.DataFrame(
        {"row_idx": pd.Series(dtype="int64"), "reason": pd.Series(dtype=object),
         "column_name": pd.Series(dtype=object), "value": pd.Series(dtype=object)})
    bad = np.zeros(len(chunk), dtype=bool)
    bad[issues["row_idx"].to_numpy(dtype=np.int64)] = True

    accepted = pd.DataFrame(typed)[~bad]
    for name, col in source.columns.items():
        if col.pii == "pseudonymise":
            accepted[name] = pseudonymise(accepted[name], pii_key)
        elif col.pii == "drop":
            accepted = accepted.drop(columns=name)
    accepted["_batch_id"] = rules.batch_id
    accepted["_row_number"] = np.asarray(row_numbers)[~bad]

    raw_bad = chunk[bad].copy()
    for name, col in source.columns.items():
        if col.pii == "pseudonymise":
            raw_bad[name] = pseudonymise(raw_bad[name].where(~raw_bad[name].isin(source.na_values)), pii_key)
        elif col.pii == "drop":
            raw_bad = raw_bad.drop(columns=name)
    bad_keys = pd.DataFrame({k: _as_text(chunk[k][bad]) for k in key_cols}).fillna("").astype(str)
    entity_keys = (bad_keys.agg("|".join, axis=1).to_numpy() if key_cols and bad.any()
                   else np.array([None] * int(bad.sum()), dtype=object))
    quarantined = pd.DataFrame({
        "row_idx": np.flatnonzero(bad),
        "row_number": np.asarray(row_numbers)[bad],
        "entity_key": entity_keys,
        "payload": [json.dumps(r, default=str) for r in raw_bad.to_dict(orient="records")],
    })
    issues["row_number"] = np.asarray(row_numbers)[issues["row_idx"].to_numpy(dtype=np.int64)]
    if any(c.pii for c in source.columns.values()):
        pii_cols = {n for n, c in source.columns.items() if c.pii}
        mask = issues["column_name"].isin(pii_cols)
        issues.loc[mask, "value"] = "<pii>"
    return ParsedChunk(accepted=accepted.reset_index(drop=True), issues=issues, quarantined=quarantined)


def quarantine_records(parsed: ParsedChunk, spec_name: str, batch_id: str, run_id: str,
                       at: datetime) -> list[dict[str, object]]:
    """Warehouse rows for the quarantined rows of a chunk: one per (row, reason, column)."""
    if parsed.issues.empty:
        return []
    merged = parsed.issues.merge(parsed.quarantined[["row_idx", "entity_key", "payload"]], on="row_idx")
    merged = merged.drop_duplicates(["row_number", "reason", "column_name"])
    merged["value"] = merged["value"].map(lambda v: None if v is None else str(v)[:500])
    return [
        {"spec_name": spec_name, "batch_id": batch_id, "row_number": int(r["row_number"]), "reason": r["reason"],
         "column_name": r["column_name"], "entity_key": r["entity_key"], "value": r["value"],
         "payload": r["payload"], "run_id": run_id, "quarantined_at": at}
        for r in merged.to_dict("records")
    ]


def write_chunks_parquet(chunks: Iterator[pd.DataFrame], schema: pa.Schema, dest: Path) -> int:
    """Write data-frame chunks into one Parquet file with a fixed schema; return rows written."""
    rows = 0
    with pq.ParquetWriter(dest, schema, compression="zstd") as writer:
        for frame in chunks:
            writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
            rows += len(frame)
        if rows == 0:
            writer.write_table(schema.empty_table())
    return rows


def local_day_bounds(day: date, tz: str) -> tuple[datetime, datetime]:
    """UTC start and end of a local calendar day."""
    zone = ZoneInfo(tz)
    start = datetime.combine(day, datetime.min.time(), zone)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), zone)
    return start, end
