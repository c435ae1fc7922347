"""The FlightDeck views on a real PostgreSQL warehouse (the queries are SQLAlchemy Core; this holds them to it).

Needs ``FLIGHTDECK_TEST_POSTGRES_URL`` (e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/test``).
Without it the test is skipped, except under CI (``CI`` set), where it fails. It works in a
schema of its own, dropped at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from flightdeck.apps.ui import pages, sample, views
from flightdeck.core import warehouse
from flightdeck.core.settings import Settings
from flightdeck.core.spec import load_spec
from pg_support import postgres_url, private_schema

pytestmark = pytest.mark.postgres
HOSTILE = "<script>alert(1)</script>'); DROP TABLE fd_catalog; --"


@pytest.fixture
def pg_url() -> Iterator[str]:
    with private_schema(postgres_url(), "fd_ui") as url:
        yield url


def test_every_view_on_postgresql(pg_url: str, tmp_path: Path):
    settings = Settings.from_env({"FLIGHTDECK_HOME": str(tmp_path / "fd"), "FLIGHTDECK_WAREHOUSE_URL": pg_url})
    spec = load_spec(settings.specs_dir / "flights.yaml")
    history = sample.fill_history(settings, spec, date(2013, 1, 1), 40, rows_per_day=100, text=HOSTILE)
    specs = views.spec_names(settings)

    models = views.models_view(settings, "flights")
    assert models.aliases["champion"] == history.champion and models.card and len(models.card["tests"]) == 28
    assert models.gates and models.history
    data = views.data_view(settings, "flights")
    assert data.batch_total == 40 * len(spec.sources) and data.quarantine and data.dataset_versions
    found = views.predictions_view(settings, "flights", {k: str(v) for k, v in history.key.items()})
    assert found.found and found.found[0]["model_version"] == history.champion and len(found.riskiest) == 20
    monitoring = views.monitoring_view(settings, "flights")
    assert len(monitoring.decay["rolling"]) == 40 and monitoring.drift and monitoring.events
    for page in (pages.render_models(models, specs), pages.render_data(data, specs),
                 pages.render_predictions(found, specs), pages.render_monitoring(monitoring, specs)):
        assert "<script>" not in page
    engine = warehouse.connect(pg_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM fd_catalog")).scalar_one() == 40 * len(spec.sources)
