"""The FlightDeck views in the Airflow UI: an Airflow 3 plugin, behind Airflow's auth manager.

Registers the FlightDeck FastAPI app (:mod:`flightdeck.apps.ui.web`) under ``/flightdeck`` of
the API server and a "FlightDeck" entry in the UI's navigation (an external view, shown in
the UI's frame). Every route depends on Airflow's ``get_user``: the JWT that the auth manager
sets on login (the ``_token`` cookie, or an ``Authorization: Bearer`` header). Browsers
without one are sent to the auth manager's login page, API clients get 401.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/flightdeck"


def login_url(next_url: str) -> str:
    """The auth manager's login page, coming back to ``next_url``."""
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager().get_url_login(next_url=next_url)


def create_ui_app() -> Any:
    """The FlightDeck app with Airflow's user check on every route."""
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi import Depends
    from flightdeck.apps.ui.web import create_app

    return create_app(dependencies=[Depends(get_user)], login_url=login_url)


class FlightDeckUIPlugin(AirflowPlugin):
    """Adds the FlightDeck app and its navigation entry."""

    name = "flightdeck_ui"
    fastapi_apps = [{"app": create_ui_app(), "url_prefix": URL_PREFIX, "name": "FlightDeck"}]
    external_views = [{"name": "FlightDeck", "href": f"{URL_PREFIX}/", "destination": "nav",
                       "url_route": "flightdeck", "category": None}]
