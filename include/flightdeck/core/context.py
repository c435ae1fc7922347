"""The run context every stage runner takes: the spec, the settings, the run's identity and its stores."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from flightdeck.core import warehouse
from flightdeck.core.settings import Settings
from flightdeck.core.spec import DatasetSpec
from flightdeck.core.storage import Store, open_store


@dataclass
class StageContext:
    """What every runner needs: the spec, the settings and the identity of the run."""

    spec: DatasetSpec
    settings: Settings
    run_id: str = "manual"
    dag_id: str = "flightdeck"
    pii_key: str | None = field(default=None, repr=False)
    workdir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))

    @cached_property
    def engine(self) -> Any:
        """The warehouse (migrated on first use in this process)."""
        return warehouse.connect(self.settings.warehouse_url)

    @cached_property
    def lake(self) -> Store:
        return open_store(self.settings.lake_uri, self.settings.s3_endpoint_url)

    @cached_property
    def landing(self) -> Store:
        return open_store(self.settings.landing_uri, self.settings.s3_endpoint_url)

    @property
    def name(self) -> str:
        return self.spec.name
