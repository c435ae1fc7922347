"""The FlightDeck UI plugin behind Airflow's auth manager: every route of the app, with and without a user.

The app is the one the plugin registers (``FlightDeckUIPlugin.fastapi_apps``), authenticated by
Airflow's own ``get_user`` against the real SimpleAuthManager; the token is one that auth manager
signs, as on login. Each route is requested with its path parameters filled from a real history.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from flightdeck.apps.ui import sample, views
from flightdeck.core.settings import Settings
from flightdeck.core.spec import load_spec

HTML = {"accept": "text/html,application/xhtml+xml"}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, sample.History]:
    home = tmp_path_factory.mktemp("ui-plugin")
    settings = Settings.from_env({"FLIGHTDECK_HOME": str(home)})
    spec = load_spec(settings.specs_dir / "flights.yaml")
    return settings, sample.fill_history(settings, spec, date(2013, 1, 1), 35, rows_per_day=50)


@pytest.fixture(scope="module")
def auth_manager(airflow_db):
    from airflow.api_fastapi.app import init_auth_manager

    return init_auth_manager()


@pytest.fixture
def client(history, auth_manager, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    from flightdeck_airflow.ui import FlightDeckUIPlugin

    settings, _ = history
    monkeypatch.setenv("FLIGHTDECK_HOME", str(settings.home))
    app = FlightDeckUIPlugin.fastapi_apps[0]["app"]
    return TestClient(app, root_path="/flightdeck", follow_redirects=False)


@pytest.fixture
def token(auth_manager) -> str:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return auth_manager.generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))


def filled_paths(app, settings: Settings, h: sample.History) -> dict[str, str]:
    """Route path -> a URL with every path parameter filled from the history."""
    batch = views.recent_batches(views.engine_of(settings), "flights", limit=1)[0]["batch_id"]
    values = {"spec": "flights", "version": h.champion, "batch_id": batch, "kind": "profile"}
    queries = {"/api/{spec}/predictions": f"?partition={h.last_day}"}
    out = {}
    for route in app.routes:
        if isinstance(route, APIRoute):
            url = route.path
            for name in route.param_convertors:
                url = url.replace("{" + name + "}", values[name])
            out[route.path] = "/flightdeck" + url + queries.get(route.path, "")
    return out


def test_the_plugin_registers_the_app_and_a_nav_entry():
    from flightdeck_airflow.ui import URL_PREFIX, FlightDeckUIPlugin

    assert FlightDeckUIPlugin.fastapi_apps[0]["url_prefix"] == URL_PREFIX == "/flightdeck"
    view = FlightDeckUIPlugin.external_views[0]
    assert view["destination"] == "nav" and view["href"] == "/flightdeck/" and view["name"] == "FlightDeck"


def test_no_route_is_served_without_a_user_and_every_route_is_with_one(client, history, token):
    settings, h = history
    app = client.app
    urls = filled_paths(app, settings, h)
    assert {"/", "/{spec}/models", "/{spec}/data", "/{spec}/predictions", "/{spec}/monitoring",
            "/api/specs", "/api/{spec}/summary", "/api/{spec}/predictions"} <= set(urls)
    # only the app's own routes: no docs, no OpenAPI schema that would skip the dependencies
    assert all(isinstance(r, APIRoute) for r in app.routes), [r.path for r in app.routes]
    for path, url in urls.items():
        api = client.get(url)
        assert api.status_code == 401, (path, api.status_code, api.text)
        browser = client.get(url, headers=HTML)
        if path.startswith("/api/"):
            assert browser.status_code == 401, path
        else:
            assert browser.status_code == 303, (path, browser.status_code)
            assert "/auth/login" in browser.headers["location"] and "next=" in browser.headers["location"]
        forged = client.get(url, headers={"authorization": "Bearer not-a-token"})
        assert forged.status_code in (401, 403), path
        cookie = client.get(url, cookies={"_token": token})
        assert cookie.status_code == 200, (path, cookie.status_code, cookie.text[:500])
        bearer = client.get(url, headers={"authorization": f"Bearer {token}"})
        assert bearer.status_code == 200, path
        assert "script-src" not in bearer.headers["content-security-policy"]  # default-src 'none': no scripts


def test_pages_show_the_champion_its_score_a_prediction_and_the_decay_chart(client, history, token):
    settings, h = history
    client.cookies.set("_token", token)
    models = client.get("/flightdeck/flights/models").text
    assert f'id="alias-champion">v{h.champion}<' in models and 'id="ml-test-score">' in models
    query = "&".join(f"key.{k}={v}" for k, v in h.key.items())
    predictions = client.get(f"/flightdeck/flights/predictions?{query}").text
    assert 'id="lookup-result"' in predictions
    assert 'id="decay-chart"' in client.get("/flightdeck/flights/monitoring").text
    summary = client.get("/flightdeck/api/flights/summary").json()
    assert summary["aliases"]["champion"] == h.champion and summary["ml_test_score"] is not None
    found = client.get(f"/flightdeck/api/flights/predictions?{query}").json()["rows"]
    assert [r["model_version"] for r in found] == [h.champion]
    assert client.get("/flightdeck/nope/models").status_code == 404
    assert client.get("/flightdeck/flights/reports/batch/x/profile").status_code == 404
    assert client.get("/flightdeck/api/flights/predictions?key.flight=abc").status_code == 400


def test_links_stay_under_the_mount_point(client, history, token):
    client.cookies.set("_token", token)
    page = client.get("/flightdeck/flights/data").text
    hrefs = [part.split('"', 1)[0] for part in page.split('href="')[1:]]
    assert hrefs and all(h.startswith("/flightdeck/") for h in hrefs), hrefs


def test_the_plugin_module_imports_no_heavy_library(tmp_path: Path):
    """Airflow loads plugins in many processes: importing ours must not pull in pandas, MLflow, GX or pyarrow."""
    import subprocess
    import sys

    code = ("import sys; import flightdeck_airflow.ui; "
            "print([m for m in ('pandas', 'mlflow', 'great_expectations', 'pyarrow', 'lightgbm', 'sklearn') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
