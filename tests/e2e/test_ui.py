"""The FlightDeck views in the Airflow UI, tested as a person would: headless Chromium logs in and browses.

After the session's demo run (``conftest.demo_run``), Airflow is started on the demo's home the
way ``make up`` starts it (``airflow standalone`` with the project's dags and plugins folders).
Chromium opens a FlightDeck page, is sent to Airflow's login, signs in with the generated
admin password, and opens every FlightDeck page: the champion version and its ML Test Score,
a looked-up prediction, the decay chart, and the FlightDeck entry inside Airflow's own UI.
Screenshots go to ``docs/ui/`` (the README and docs/ui.md show them).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from cdp import Browser, chromium_path
from e2e_support import REPO, DemoRun, free_port
from flightdeck.apps.demo import stop

pytestmark = pytest.mark.slow

SHOTS = REPO / "docs" / "ui"


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5)  # noqa: S310 - loopback
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # up, and asking for a user
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def airflow_up(demo_run: DemoRun) -> Iterator[str]:
    """``airflow standalone`` on the demo's home (as ``make up``); its base URL."""
    assert demo_run.returncode == 0, demo_run.output[-4000:]
    port = free_port()
    env = {**demo_run.fake_env, "AIRFLOW__API__PORT": str(port),
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
           "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
           "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())}
    log = demo_run.home / "logs" / "standalone-ui.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("airflow")), "standalone"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + 180
        while not _answers(f"{base}/flightdeck/api/specs"):
            assert proc.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(2)
        yield base
    finally:
        stop(proc)  # the demo's: by process group, SIGKILL for what outlives the leader


@pytest.fixture(scope="module")
def browser(airflow_up: str, demo_run: DemoRun) -> Iterator[Browser]:
    """Chromium, signed in to Airflow as admin (through the login page a FlightDeck page sends it to)."""
    if chromium_path() is None:
        pytest.fail("chromium is not installed: `make browser` (which `make test` runs) installs it")
    password = json.loads((demo_run.home / "airflow" / "simple_auth_manager_passwords.json.generated")
                          .read_text())["admin"]
    with Browser(width=1400, height=1000) as b:
        b.goto(f"{airflow_up}/flightdeck/flights/models")
        assert "/auth/login" in b.url, b.url  # unauthenticated: sent to Airflow's login
        b.type_into("input[name=username]", "admin")
        b.type_into("input[name=password]", password)
        b.mark_page()
        b.click("button[type=submit]")
        b.wait_for_new_page("the page after login")
        assert b.url.startswith(f"{airflow_up}/flightdeck/flights/models"), b.url
        yield b


def _champion(demo_run: DemoRun) -> str:
    engine = sa.create_engine(f"sqlite:///{demo_run.home / 'warehouse.db'}")
    with engine.connect() as conn:
        version = conn.execute(sa.text("SELECT model_version FROM fd_promotions WHERE action = 'promote' "
                                       "ORDER BY decided_at DESC LIMIT 1")).scalar_one()
        key = conn.execute(sa.text("SELECT carrier, flight, origin, score FROM flights_predictions "
                                   "WHERE partition_date = '2013-02-01' ORDER BY score DESC LIMIT 1")).one()
    engine.dispose()
    return str(version), key


def test_every_flightdeck_page_shows_what_a_model_owner_needs(browser: Browser, airflow_up: str, demo_run: DemoRun):
    version, (carrier, flight, origin, score) = _champion(demo_run)
    base = f"{airflow_up}/flightdeck/flights"

    browser.wait_for("!!document.querySelector('#alias-champion')", "the models page")
    assert browser.text("#alias-champion") == f"v{version}"
    score_text = browser.text("#ml-test-score")
    assert score_text and float(score_text) >= 0
    assert browser.js("document.querySelectorAll('table.score-card tr[id^=test-]').length") == 28
    assert browser.js("document.querySelectorAll('#gates tr').length") > 1
    assert "promote" in browser.text("#history")
    browser.screenshot(SHOTS / "models.png")
    browser.screenshot(SHOTS / "models-top.png", full_page=False)

    browser.goto(f"{base}/data")
    assert int(browser.text("#batch-total")) > 0
    assert browser.js("document.querySelectorAll('#catalog tr').length") > 1
    assert browser.js("document.querySelectorAll('#dataset-versions tr').length") > 1
    browser.screenshot(SHOTS / "data.png")

    browser.goto(f"{base}/predictions")
    browser.type_into("#key-carrier", str(carrier))
    browser.type_into("#key-flight", str(flight))
    browser.type_into("#key-origin", str(origin))
    browser.mark_page()
    browser.click("#lookup-button")
    browser.wait_for_new_page("the lookup result")
    found = browser.text("#lookup-result")
    assert f"{score:.4f}" in found and f"v{version}" in found, found
    assert browser.js("document.querySelectorAll('#riskiest tr').length") > 1
    assert "published" in browser.text("#scoring-runs")
    browser.screenshot(SHOTS / "predictions.png")

    browser.goto(f"{base}/monitoring")
    assert browser.js("!!document.querySelector('svg#decay-chart circle')"), "no realised quality drawn"
    assert browser.js("document.querySelectorAll('svg#decay-chart .event-promote').length") >= 1
    assert browser.js("!!document.querySelector('svg#drift-chart rect')")
    assert "deployment frequency" in browser.text("#delivery-metrics")
    browser.screenshot(SHOTS / "monitoring.png")


def test_the_views_sit_in_airflows_own_navigation(browser: Browser, airflow_up: str):
    browser.goto(f"{airflow_up}/")
    browser.wait_for("[...document.querySelectorAll('a,button')].some(e => e.innerText.trim() === 'FlightDeck')",
                     "the FlightDeck entry in Airflow's navigation", timeout=60)
    browser.goto(f"{airflow_up}/plugin/flightdeck")
    browser.wait_for("[...document.querySelectorAll('iframe')].some(f => f.src.endsWith('/flightdeck/'))",
                     "the FlightDeck frame", timeout=60)
    time.sleep(2)  # let the frame paint
    browser.screenshot(SHOTS / "airflow-nav.png", full_page=False)


def test_a_signed_out_browser_is_sent_to_the_login(airflow_up: str):
    with Browser() as fresh:
        for page in ("models", "data", "predictions", "monitoring"):
            fresh.goto(f"{airflow_up}/flightdeck/flights/{page}")
            assert "/auth/login" in fresh.url, (page, fresh.url)


def test_the_json_api_takes_a_token_from_the_auth_manager(airflow_up: str, demo_run: DemoRun):
    password = json.loads((demo_run.home / "airflow" / "simple_auth_manager_passwords.json.generated")
                          .read_text())["admin"]
    login = urllib.request.Request(f"{airflow_up}/auth/token", method="POST",
                                   headers={"content-type": "application/json"},
                                   data=json.dumps({"username": "admin", "password": password}).encode())
    with urllib.request.urlopen(login, timeout=30) as resp:  # noqa: S310 - loopback
        token = json.load(resp)["access_token"]
    ask = urllib.request.Request(f"{airflow_up}/flightdeck/api/flights/summary",
                                 headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(ask, timeout=60) as resp:  # noqa: S310 - loopback
        summary = json.load(resp)
    assert summary["aliases"]["champion"] == _champion(demo_run)[0]
    assert summary["ml_test_score"] is not None
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"{airflow_up}/flightdeck/api/flights/summary", timeout=30)  # noqa: S310
    assert denied.value.code == 401
