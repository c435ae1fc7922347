"""The MLflow model registry: the alias names, the one client factory, and the store's set-up.

Every FlightDeck process reaches MLflow through :func:`mlflow_client`. The first call in a
process for a tracking URI makes sure the store is usable:

- a database store (``sqlite:///...``, ``postgresql://...``) is created and migrated by one
  process at a time (a file lock beside a SQLite file, an advisory lock on PostgreSQL), so
  processes opening a brand-new store together never run MLflow's migrations concurrently
  (on SQLite that left ``_alembic_tmp_*`` tables behind and broke every later call);
- a store that is broken (an interrupted migration) or out of date raises
  :class:`RegistryError`, naming the store and how to recover, instead of a raw alembic
  traceback from inside a task;
- a tracking server (``http(s)://``) is asked once whether it answers.

``flightdeck init`` calls :func:`init_store` before any DAG runs; tasks then find a store
that is ready. "No such model or alias" is only ever the registry's own not-found answer
(:func:`is_not_found`); every other failure propagates as :class:`RegistryError`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from flightdeck.core import locks

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous_champion"
PROMOTED = (CHAMPION, PREVIOUS_CHAMPION)
"""Aliases the gates set: only a version carrying one of them is ever scored."""

_READY: set[str] = set()
_READY_LOCK = threading.Lock()


class RegistryError(RuntimeError):
    """The MLflow tracking/registry store cannot be used: unreachable, broken or out of date.

    The message names the store (its URI, password hidden) and says how to recover.
    """


def safe_uri(uri: str) -> str:
    """``uri`` with any password hidden, for messages and logs."""
    if "://" in uri and "@" in uri.split("://", 1)[1]:
        with contextlib.suppress(Exception):
            return sa.engine.make_url(uri).render_as_string(hide_password=True)
    return uri


def is_not_found(exc: BaseException) -> bool:
    """Whether an MLflow error is the registry's own "no such model / version / alias" answer.

    MLflow raises ``MlflowException`` for "not found" and for "server unreachable" alike; only
    the error code tells them apart. A missing model or version is ``RESOURCE_DOES_NOT_EXIST``;
    a missing alias of an existing model is ``INVALID_PARAMETER_VALUE`` with "not found" in
    the message (MLflow 3.17's SQL store and server both answer so).
    """
    code = getattr(exc, "error_code", None)
    if code == "RESOURCE_DOES_NOT_EXIST":
        return True
    return code == "INVALID_PARAMETER_VALUE" and "not found" in str(exc).lower()


def _is_database(uri: str) -> bool:
    return uri.split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql", "mysql", "mssql")


def leftover_migration_tables(uri: str) -> list[str]:
    """Temporary tables an interrupted MLflow (alembic batch) migration left in the store at ``uri``."""
    path = locks.sqlite_path(uri)
    if path is not None and not path.exists():
        return []
    engine = sa.create_engine(uri, poolclass=sa.pool.NullPool)
    try:
        return sorted(t for t in sa.inspect(engine).get_table_names() if t.startswith("_alembic_tmp_"))
    finally:
        engine.dispose()


def _broken(uri: str, why: str) -> RegistryError:
    return RegistryError(
        f"MLflow store {safe_uri(uri)} is not usable: {why}. Recover: stop Airflow, back up the store, then run "
        f"'flightdeck init --repair' (drops the leftover temporary tables and migrates the store again); for a "
        f"throw-away demo home, 'make clean' then 'make demo' starts afresh.")


def _prepare_database(uri: str, upgrade: bool) -> None:
    """Create or migrate the database store at ``uri`` under the store lock (idempotent)."""
    from mlflow.store.db import utils as db_utils

    with locks.store_lock(uri, locks.MLFLOW_STORE):
        try:
            leftovers = leftover_migration_tables(uri)
        except sa.exc.SQLAlchemyError as exc:
            cause = getattr(exc, "orig", None) or exc
            raise RegistryError(f"MLflow store {safe_uri(uri)} cannot be read as a database ({cause}); "
                                "restore it from a backup, or for a throw-away demo home run 'make clean'") from exc
        if leftovers:
            raise _broken(uri, f"an interrupted migration left the tables {leftovers} behind")
        engine = sa.create_engine(uri, poolclass=sa.pool.NullPool)
        try:
            if not db_utils._all_tables_exist(engine):
                log.info("creating the MLflow store %s", safe_uri(uri))
                db_utils._initialize_tables(engine)
            current, head = db_utils._get_schema_version(engine), db_utils._get_latest_schema_revision()
            if current != head:
                if not upgrade:
                    raise RegistryError(
                        f"MLflow store {safe_uri(uri)} has schema {current}, this MLflow needs {head}: run "
                        "'flightdeck init' (it migrates the store once, before any DAG runs)")
                log.info("migrating the MLflow store %s from %s to %s", safe_uri(uri), current, head)
                db_utils._upgrade_db(engine)
        except RegistryError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken store must name itself, whatever broke
            interrupted: list[str] = []
            with contextlib.suppress(Exception):
                interrupted = leftover_migration_tables(uri)
            if interrupted:
                raise _broken(uri, f"its migration was interrupted (left {interrupted})") from exc
            raise RegistryError(f"MLflow store {safe_uri(uri)} could not be opened or migrated: "
                                f"{type(exc).__name__}: {exc}") from exc
        finally:
            engine.dispose()


def _probe_server(uri: str) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments(max_results=1)
    except MlflowException as exc:
        raise RegistryError(f"MLflow tracking server {safe_uri(uri)} did not answer: {exc}") from exc


def init_store(uri: str, *, upgrade: bool = True) -> None:
    """Create and migrate the tracking/registry store at ``uri`` once, by one process at a time.

    Safe to call from many processes at once: one creates or migrates, the others wait and
    find it ready. ``upgrade=False`` (tasks) refuses to migrate an out-of-date store.

    Raises:
        RegistryError: the store is broken, out of date (with ``upgrade=False``) or unreachable.
    """
    if _is_database(uri):
        _prepare_database(uri, upgrade)
    elif uri.startswith(("http://", "https://")):
        _probe_server(uri)
    with _READY_LOCK:
        _READY.add(uri)


def repair_store(uri: str) -> list[str]:
    """Drop the temporary tables an interrupted migration left behind and migrate again.

    Only drops ``_alembic_tmp_<t>`` when ``<t>`` itself still exists (the temporary table is
    then a partial copy); otherwise refuses, since the copy may hold the only data.

    Returns:
        the names of the tables dropped.
    """
    if not _is_database(uri):
        raise RegistryError(f"{safe_uri(uri)} is not a database store: repair it on the tracking server")
    with locks.store_lock(uri, locks.MLFLOW_STORE):
        leftovers = leftover_migration_tables(uri)
        engine = sa.create_engine(uri, poolclass=sa.pool.NullPool)
        try:
            tables = set(sa.inspect(engine).get_table_names())
            orphaned = [t for t in leftovers if t.removeprefix("_alembic_tmp_") not in tables]
            if orphaned:
                raise RegistryError(f"MLflow store {safe_uri(uri)}: {orphaned} have no original table beside "
                                    "them and may hold its only copy; restore the store from a backup")
            q = engine.dialect.identifier_preparer.quote
            with engine.begin() as conn:
                for table in leftovers:
                    conn.exec_driver_sql(f"DROP TABLE {q(table)}")
        finally:
            engine.dispose()
    with _READY_LOCK:
        _READY.discard(uri)
    init_store(uri)
    return leftovers


def mlflow_client(tracking_uri: str) -> Any:
    """The ``MlflowClient`` for ``tracking_uri`` (also the registry URI), the store made ready first.

    Also sets the process's tracking URI (the registry URI defaults to it), so
    ``mlflow.pyfunc.load_model("models:/...")`` and fluent calls use the same store.

    Raises:
        RegistryError: the store is broken, out of date or unreachable (names the URI).
    """
    import mlflow

    if tracking_uri not in _READY:
        init_store(tracking_uri, upgrade=False)
    mlflow.set_tracking_uri(tracking_uri)  # the registry URI follows it (never set apart, so it never goes stale)
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def experiment_name(spec_name: str) -> str:
    """The MLflow experiment of a spec's training runs."""
    return f"flightdeck/{spec_name}"


def ensure_experiment(tracking_uri: str, spec_name: str, artifact_root: Path) -> str:
    """Create the spec's experiment if missing (two processes at once: one creates it); its name.

    A database store keeps artifacts under ``artifact_root`` (the embedded default, next to
    the SQLite file); a tracking server decides itself (e.g. its S3 ``--artifacts-destination``).
    """
    from mlflow.exceptions import MlflowException

    client = mlflow_client(tracking_uri)
    name = experiment_name(spec_name)
    if client.get_experiment_by_name(name) is not None:
        return name
    location = None
    if not tracking_uri.startswith(("http://", "https://", "databricks")):
        artifact_root.mkdir(parents=True, exist_ok=True)
        location = artifact_root.as_uri()
    try:
        client.create_experiment(name, artifact_location=location, tags={"flightdeck.spec": spec_name})
    except MlflowException as exc:
        if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
            raise
    return name


def alias_version(client: Any, name: str, alias: str) -> str | None:
    """The version of ``name`` that carries ``alias``; None only when the registry says there is none.

    Raises:
        RegistryError: any other failure (a server down, a broken store), naming the tracking URI.
    """
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if is_not_found(exc):
            return None
        import mlflow

        raise RegistryError(f"MLflow registry {safe_uri(mlflow.get_registry_uri())} failed to resolve "
                            f"{name}@{alias}: {exc}") from exc
