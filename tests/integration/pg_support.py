"""PostgreSQL for the tests: the server from ``FLIGHTDECK_TEST_POSTGRES_URL`` and a private schema per use."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from flightdeck.core import warehouse


def postgres_url() -> str:
    """The test server's URL; skips without one, and fails under CI (PostgreSQL tests must run there)."""
    url = os.environ.get("FLIGHTDECK_TEST_POSTGRES_URL")
    if not url:
        reason = "FLIGHTDECK_TEST_POSTGRES_URL is not set (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}, and CI is set: PostgreSQL tests must run in CI")
        pytest.skip(reason)
    return url


@contextmanager
def private_schema(url: str, prefix: str) -> Iterator[str]:
    """A URL whose connections use a new schema ``<prefix>_<random>``, dropped with its tables afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    scoped = sa.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    scoped_url = scoped.render_as_string(hide_password=False)
    try:
        yield scoped_url
    finally:
        warehouse.connect(scoped_url).dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
