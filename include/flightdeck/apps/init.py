"""``flightdeck init``: create and migrate every store once, by one process, before any DAG runs.

The stores are the Airflow metadata DB (``airflow db migrate``, run as a subprocess so the
stage library never imports Airflow, then ``airflow dags reserialize``, so ``airflow dags
list`` shows every spec's DAGs at once instead of "No data found" until a DAG processor has
parsed them), the warehouse (its tables, every spec's predictions
table and view, and the columns an earlier schema lacks), and the MLflow tracking/registry
store (created or migrated, and one experiment per spec). ``make demo``, ``make up``, the
test session and the compose file's init service all run it. Running it again changes
nothing; a broken MLflow store is reported naming the store, and ``repair`` fixes the one
breakage we know (an interrupted migration's leftover tables).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from flightdeck.core import registry, warehouse
from flightdeck.core.settings import Settings
from flightdeck.core.spec import discover_specs
from flightdeck.serving import predictions


@dataclass
class InitReport:
    """What ``init_stores`` did, one line per store."""

    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)


def airflow_executable() -> str:
    """The ``airflow`` command installed beside this Python (the project's virtualenv)."""
    return str(Path(sys.executable).with_name("airflow"))


def _airflow(*args: str) -> None:
    done = subprocess.run([airflow_executable(), *args], capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"'airflow {' '.join(args)}' failed (exit {done.returncode}):\n{tail}")


def migrate_airflow() -> str:
    """Run ``airflow db migrate`` once (Airflow reads its own ``AIRFLOW__*`` settings)."""
    _airflow("db", "migrate")
    return "airflow metadata DB migrated"


def serialize_dags() -> str:
    """Run ``airflow dags reserialize``: the DAGs of every spec are in the metadata DB (listed) right away."""
    _airflow("dags", "reserialize")
    return "airflow DAGs serialized (airflow dags list shows them)"


def init_stores(settings: Settings, *, airflow: bool = True, repair: bool = False) -> InitReport:
    """Create and migrate the Airflow metadata DB, the warehouse and the MLflow store.

    Args:
        settings: where the stores are.
        airflow: also run ``airflow db migrate`` (the test session initialises its own DB).
        repair: first drop the tables an interrupted MLflow migration left behind.

    Raises:
        RegistryError: the MLflow store is broken (and ``repair`` was not asked) or unreachable.
    """
    report = InitReport()
    if airflow:
        report.add(migrate_airflow())
        report.add(serialize_dags())
    engine = warehouse.connect(settings.warehouse_url)
    added = warehouse.migrate(engine)
    specs = discover_specs(settings.specs_dir)
    tables = [predictions.ensure_tables(engine, spec).name for spec in specs]
    report.add(f"warehouse {engine.url.render_as_string(hide_password=True)}: {len(warehouse.metadata.tables)} "
               f"tables, predictions tables {tables}" + (f", added {added}" if added else ""))
    uri = settings.mlflow_tracking_uri
    if repair:
        dropped = registry.repair_store(uri)
        report.add(f"MLflow store repaired: dropped {dropped}" if dropped else "MLflow store: nothing to repair")
    registry.init_store(uri)
    experiments = [registry.ensure_experiment(uri, spec.name, settings.home / "mlartifacts") for spec in specs]
    report.add(f"MLflow store {registry.safe_uri(uri)}: migrated, experiments {experiments}")
    return report
