"""The one preamble of every FlightDeck DAG: its id, owner, tags, start date, retries and spec name."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG
from flightdeck.core.settings import Settings
from flightdeck.core.spec import DatasetSpec, discover_specs

# Early enough that a historical logical date (say 2013-03-01 for the flights replay) runs:
# `airflow dags test <dag> <date>` before a DAG's start_date runs no task at all and still
# reports success. catchup is off, so an early start date schedules no backfill.
START_DATE = pendulum.datetime(2000, 1, 1, tz="UTC")


def start_date_of(spec: DatasetSpec) -> pendulum.DateTime:
    """The DAGs' start date: :data:`START_DATE`, or the spec's ``start_date`` if that is earlier.

    A later ``start_date`` of the spec is enforced by the data DAG's sensor instead, which
    skips a run of an earlier logical date saying so, rather than Airflow running nothing.
    """
    if spec.start_date is None:
        return START_DATE
    day = pendulum.Date.fromisoformat(spec.start_date)
    return min(START_DATE, pendulum.datetime(day.year, day.month, day.day, tz=spec.timezone))


def flightdeck_specs() -> list[DatasetSpec]:
    """Every spec of ``FLIGHTDECK_SPECS_DIR``: one DAG per spec and stage (parsing reads only YAML)."""
    return discover_specs(Settings.from_env().specs_dir)


def spec_dag(spec: DatasetSpec, stage: str, *, description: str, doc_md: str, schedule: Any,
             tag: str | None = None, retries: int = 1, retry_delay: timedelta = timedelta(minutes=2),
             params: dict[str, Any] | None = None, **default_args: Any) -> DAG:
    """The DAG ``<spec>_<stage>``, registered with the DagBag when its ``with`` block ends (``auto_register``).

    One run at a time, no catch-up, an early start date (:func:`start_date_of`); every task
    gets the spec's owner, ``retries`` and the ``spec_name`` its operator needs.
    """
    return DAG(
        dag_id=f"{spec.name}_{stage}",
        description=f"{spec.title}: {description}",
        doc_md=doc_md,
        schedule=schedule,
        start_date=start_date_of(spec),
        catchup=False,
        max_active_runs=1,
        tags=["flightdeck", spec.name, tag or stage],
        params=params or {},
        default_args={"owner": spec.owner, "retries": retries, "retry_delay": retry_delay,
                      "spec_name": spec.name, **default_args},
        auto_register=True,
    )
