"""Sensors on the landing zone."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, Context
from airflow.sdk.exceptions import AirflowSkipException

from flightdeck_airflow.operators import run_type_of


class LandingZoneSensor(BaseSensorOperator):
    """Wait until deliveries for a spec land in ``<landing>/<spec>/`` (local folder or S3).

    Deferrable by default: the wait happens in the triggerer. When nothing lands within
    ``timeout`` the task is skipped, and so is the rest of the run. A run triggered by hand
    (``airflow dags trigger``, ``airflow dags test``, ``dag.test()``) does not wait: with
    nothing landed it skips at once, saying where it looked. Returns the list of waiting
    file keys (small) to XCom.
    """

    template_fields: Sequence[str] = ("spec_name",)
    ui_color = "#e8f4fd"

    def __init__(self, *, spec_name: str, deferrable: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("soft_fail", True)
        super().__init__(**kwargs)
        self.spec_name = spec_name
        self.deferrable = deferrable

    def _waiting(self) -> list[str]:
        from flightdeck.core.settings import Settings
        from flightdeck.core.spec import spec_named
        from flightdeck.core.storage import open_store
        from flightdeck.data.runners import waiting_files

        settings = Settings.from_env()
        spec = spec_named(settings.specs_dir, self.spec_name)
        self._patterns = [s.pattern for s in spec.sources.values()]
        self._start_date, self._timezone = spec.start_date, spec.timezone
        self._settings = settings
        return waiting_files(open_store(settings.landing_uri, settings.s3_endpoint_url), spec.name, self._patterns)

    def poke(self, context: Context) -> bool | Any:
        return bool(self._waiting())

    def _check_start_date(self, context: Context) -> None:
        """Skip a run whose logical date is before the spec's ``start_date``, saying so."""
        import pendulum

        start, logical = self._start_date, context.get("logical_date")
        if start is None or logical is None:
            return
        day = pendulum.instance(logical).in_timezone(self._timezone).date()
        if day.isoformat() < start:
            reason = (f"logical date {day} is before spec {self.spec_name}'s start_date {start}: "
                      "nothing to ingest for it")
            self.log.info(reason)
            raise AirflowSkipException(reason)

    def execute(self, context: Context) -> Any:
        files = self._waiting()
        self._check_start_date(context)
        if files:
            self.log.info("%d deliveries waiting: %s", len(files), files[:10])
            return files
        if run_type_of(context) == "manual":
            reason = (f"nothing to ingest: no file matching {self._patterns} in "
                      f"{self._settings.landing_uri}/{self.spec_name}/ (a manual run does not wait for "
                      "deliveries; scheduled runs wait up to the sensor's timeout)")
            self.log.info(reason)
            raise AirflowSkipException(reason)
        if not self.deferrable:
            super().execute(context)
            return self._waiting()
        from flightdeck_airflow.triggers import LandingFilesTrigger

        timeout = self.timeout.total_seconds() if isinstance(self.timeout, timedelta) else self.timeout
        poll = self.poke_interval.total_seconds() if isinstance(self.poke_interval, timedelta) else self.poke_interval
        self.defer(
            trigger=LandingFilesTrigger(self._settings.landing_uri, self.spec_name, self._patterns,
                                        poll_interval=float(poll), timeout=timeout,
                                        s3_endpoint_url=self._settings.s3_endpoint_url),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> list[str]:
        if event.get("status") != "found":
            raise AirflowSkipException(f"no deliveries for {self.spec_name} landed within {self.timeout}")
        return list(event["files"])
