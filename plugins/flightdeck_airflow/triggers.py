"""Triggers that wait in the triggerer, not in a worker slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class LandingFilesTrigger(BaseTrigger):
    """Fire when files matching a spec's source patterns wait in its landing zone.

    Works the same for a local folder and an ``s3://`` prefix (boto3). Yields
    ``{"status": "found", "files": [...]}``, or ``{"status": "timeout"}`` after
    ``timeout`` seconds so that the sensor can skip the run cleanly.
    """

    def __init__(self, landing_uri: str, spec_name: str, patterns: list[str], poll_interval: float = 30.0,
                 timeout: float | None = None, s3_endpoint_url: str | None = None) -> None:
        super().__init__()
        self.landing_uri = landing_uri
        self.spec_name = spec_name
        self.patterns = list(patterns)
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.s3_endpoint_url = s3_endpoint_url

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("flightdeck_airflow.triggers.LandingFilesTrigger", {
            "landing_uri": self.landing_uri, "spec_name": self.spec_name, "patterns": self.patterns,
            "poll_interval": self.poll_interval, "timeout": self.timeout,
            "s3_endpoint_url": self.s3_endpoint_url})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from flightdeck.core.storage import open_store
        from flightdeck.data.runners import waiting_files

        store = open_store(self.landing_uri, self.s3_endpoint_url)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            files = await asyncio.to_thread(waiting_files, store, self.spec_name, self.patterns)
            if files:
                yield TriggerEvent({"status": "found", "files": files})
                return
            if deadline is not None and time.monotonic() >= deadline:
                yield TriggerEvent({"status": "timeout"})
                return
            await asyncio.sleep(self.poll_interval)
