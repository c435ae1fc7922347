"""The Arrow type of each spec column type, for every file and table FlightDeck writes."""

from __future__ import annotations

import pyarrow as pa

ARROW_TYPES: dict[str, pa.DataType] = {
    "int": pa.int64(), "float": pa.float64(), "category": pa.string(), "string": pa.string(),
    "timestamp": pa.timestamp("us", tz="UTC"), "bool": pa.bool_(),
}
