"""The FlightDeck web app (FastAPI): the pages and a small JSON API, read-only.

:func:`create_app` takes the authentication as app-level dependencies, so no route can be
added without it: the Airflow plugin passes Airflow's own user dependency (the JWT of the
auth manager). A request that fails it gets 401 (JSON) or, from a browser asking for HTML,
a redirect to the login page. The interactive API docs are off (they would bypass the
dependencies). Every response forbids scripts and framing by other sites.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.params import Depends
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from flightdeck.core.settings import Settings

PAGES = ("models", "data", "predictions", "monitoring")
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'self'; base-uri 'none'")


def _base(request: Request) -> str:
    """The prefix the app is mounted at (``/flightdeck`` in Airflow), for links."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _wants_html(request: Request) -> bool:
    """A browser asking for a page (the JSON API always answers 401 instead)."""
    path = request.url.path.removeprefix(_base(request))
    return "text/html" in request.headers.get("accept", "") and not path.startswith("/api/")


def create_app(settings: Callable[[], Settings] = Settings.from_env, dependencies: Sequence[Depends] = (),
               login_url: Callable[[str], str] | None = None) -> FastAPI:
    """The app; mount it (Airflow: ``fastapi_apps``) or serve it.

    Args:
        settings: gives the settings for a request (read from the environment by default).
        dependencies: run before every route, e.g. ``[Depends(airflow_user)]``.
        login_url: next URL -> the login page; unauthenticated browsers are sent there.
    """
    app = FastAPI(title="FlightDeck", dependencies=list(dependencies), docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (401, 403) and login_url is not None and _wants_html(request):
            return RedirectResponse(login_url(str(request.url)), status_code=303)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.middleware("http")
    async def _headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    _page_routes(app, settings)
    _report_routes(app, settings)
    _api_routes(app, settings)
    return app


def _page(request: Request, settings: Settings, spec: str, render: Callable[[list[str], str], str]) -> HTMLResponse:
    """Render a page, or a 404 page for an unknown spec."""
    from flightdeck.apps.ui import pages, views

    specs = views.spec_names(settings)
    if spec not in specs:
        return HTMLResponse(pages.render_error("Unknown spec", f"There is no spec {spec!r}.", specs, _base(request)),
                            status_code=404)
    return HTMLResponse(render(specs, _base(request)))


def _page_routes(app: FastAPI, settings: Callable[[], Settings]) -> None:
    from flightdeck.apps.ui import pages, views

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request) -> HTMLResponse:
        s = settings()
        return HTMLResponse(pages.render_index(views.summaries(s), views.spec_names(s), _base(request)))

    @app.get("/{spec}/models", response_class=HTMLResponse)
    def models(request: Request, spec: str) -> HTMLResponse:
        s = settings()
        return _page(request, s, spec, lambda specs, base: pages.render_models(views.models_view(s, spec), specs, base))

    @app.get("/{spec}/data", response_class=HTMLResponse)
    def data(request: Request, spec: str) -> HTMLResponse:
        s = settings()
        return _page(request, s, spec, lambda specs, base: pages.render_data(views.data_view(s, spec), specs, base))

    @app.get("/{spec}/predictions", response_class=HTMLResponse)
    def predictions_page(request: Request, spec: str, partition: str | None = None) -> HTMLResponse:
        s = settings()
        key = {k.removeprefix("key."): v for k, v in request.query_params.items() if k.startswith("key.")}
        return _page(request, s, spec, lambda specs, base: pages.render_predictions(
            views.predictions_view(s, spec, key, partition or None), specs, base))

    @app.get("/{spec}/monitoring", response_class=HTMLResponse)
    def monitoring(request: Request, spec: str) -> HTMLResponse:
        s = settings()
        return _page(request, s, spec,
                     lambda specs, base: pages.render_monitoring(views.monitoring_view(s, spec), specs, base))


def _lake_html(settings: Settings, key: str | None) -> HTMLResponse:
    from flightdeck.apps.ui import views

    if key is None:
        raise HTTPException(404, "no such report")
    try:
        return HTMLResponse(views.read_lake(settings, key))
    except (FileNotFoundError, OSError) as exc:
        raise HTTPException(404, "the report is not in the lake") from exc


def _report_routes(app: FastAPI, settings: Callable[[], Settings]) -> None:
    from flightdeck.apps.ui import views

    @app.get("/{spec}/reports/gate/{version}", response_class=HTMLResponse)
    def gate_report(spec: str, version: str, run: str | None = None) -> HTMLResponse:
        """The self-contained gate report of a version (its newest, or that of gate run ``run``)."""
        s = settings()
        try:
            sp = views.open_spec(s, spec)
        except views.UnknownSpec as exc:
            raise HTTPException(404, str(exc)) from exc
        engine = views.engine_of(s)
        uri = (views.report_uri_of_run(engine, sp.registered_model_name, version, run) if run
               else views.report_uri(engine, sp.registered_model_name, version))
        return _lake_html(s, views.lake_key(s, uri))

    @app.get("/{spec}/reports/batch/{batch_id}/{kind}", response_class=HTMLResponse)
    def batch_report(spec: str, batch_id: str, kind: str) -> HTMLResponse:
        """A batch's profile or validation report."""
        s = settings()
        if spec not in views.spec_names(s):
            raise HTTPException(404, f"no spec {spec!r}")
        return _lake_html(s, views.batch_report_key(s, spec, batch_id, kind))

    @app.get("/{spec}/charts/decay.svg")
    def decay_svg(spec: str) -> Response:
        from flightdeck.apps.ui import charts

        try:
            view = views.monitoring_view(settings(), spec)
        except views.UnknownSpec as exc:
            raise HTTPException(404, str(exc)) from exc
        svg = charts.decay_chart(view.decay, view.events, view.metric, view.reference)
        return Response(str(svg), media_type="image/svg+xml")


def _api_routes(app: FastAPI, settings: Callable[[], Settings]) -> None:
    from flightdeck.apps.ui import views

    @app.get("/api/specs")
    def api_specs() -> dict[str, list[str]]:
        return {"specs": views.spec_names(settings())}

    @app.get("/api/{spec}/summary")
    def api_summary(spec: str) -> dict[str, Any]:
        try:
            return views.summary(settings(), spec)
        except views.UnknownSpec as exc:
            raise HTTPException(404, str(exc)) from exc

    @app.get("/api/{spec}/predictions")
    def api_predictions(request: Request, spec: str, partition: str | None = None) -> JSONResponse:
        """The lookup as JSON: ``?key.carrier=UA&key.flight=1545`` and/or ``?partition=YYYY-MM-DD``."""
        from flightdeck.serving import predictions

        s = settings()
        try:
            sp = views.open_spec(s, spec)
            key = {k.removeprefix("key."): v for k, v in request.query_params.items() if k.startswith("key.")}
            rows = predictions.lookup(views.engine_of(s), sp, key, partition or None, limit=100)
        except views.UnknownSpec as exc:
            raise HTTPException(404, str(exc)) from exc
        except predictions.PredictionLookupError as exc:
            raise HTTPException(400, str(exc)) from exc
        return JSONResponse({"rows": [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()}
                                      for r in rows]})
