"""Put the wall clock of every Python process of the end-to-end demo where the test wants it.

On ``PYTHONPATH`` only in the end-to-end test. With ``FLIGHTDECK_FAKE_CLOCK_OFFSET`` (seconds)
set, every interpreter that starts (the demo, ``airflow standalone`` and each of its
components, every task process) travels that far ahead at start-up and keeps ticking in real
time, so all of them agree on the faked time. Monotonic clocks stay real: sleeps and timeouts
behave. (libfaketime cannot do this for Python 3.11: its ``clock_nanosleep`` makes
``time.sleep`` fail with EINVAL.)

The scheduler also asks the database for the time (``run_after <= now()``,
``next_dagrun_create_after <= now()``), which SQLite answers from the real clock; so on
SQLite ``now()`` is compiled to a function that every connection answers with the faked
time, in the format SQLAlchemy stores datetimes in.
"""

import os

_offset = os.environ.get("FLIGHTDECK_FAKE_CLOCK_OFFSET")
if _offset:
    import sqlite3
    import time
    from datetime import UTC, datetime

    import time_machine
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.compiler import compiles
    from sqlalchemy.sql import functions

    time_machine.travel(time.time() + float(_offset), tick=True).start()

    def _fake_now() -> str:
        return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")

    @compiles(functions.now, "sqlite")
    def _now_on_sqlite(element, compiler, **kw):  # type: ignore[no-untyped-def]
        return "fd_fake_now()"

    @event.listens_for(Engine, "connect")
    def _register_fake_now(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        # sqlite3, or SQLAlchemy's adapter of aiosqlite (which has the same method)
        if isinstance(dbapi_conn, sqlite3.Connection) or "sqlite" in type(dbapi_conn).__module__:
            dbapi_conn.create_function("fd_fake_now", 0, _fake_now)
