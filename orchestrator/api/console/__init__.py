"""The web console under ``/ui``: server-rendered pages over the same services and the same
authorization as the API (a token, kept in a cookie), with htmx for the parts that stay live.

``install(app)`` adds its routes, its static files, ``/`` (a redirect here) and its error pages.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.api.console import catalog, jobs, queues, schedule_pages
from orchestrator.api.console.pages import STATIC, error_page, render, see_other
from orchestrator.api.console.session import (
    PREFIX,
    FormDep,
    SignInRequired,
    end_session,
    signin_url,
    start_session,
)
from orchestrator.api.deps import ServicesDep
from orchestrator.api.errors import status_for, validation_message
from orchestrator.errors import OrchestratorError

router = APIRouter(prefix=PREFIX, include_in_schema=False)
Handler = Callable[[Request, Exception], Response | Awaitable[Response]]


def _local(then: str) -> str:
    """``then`` if it is a console path on this server, else the jobs page (no open redirect)."""
    parts = urlsplit(then)
    if parts.scheme or parts.netloc or not parts.path.startswith(PREFIX + "/"):
        return f"{PREFIX}/jobs"
    return parts.path


@router.get("/", response_class=HTMLResponse)
def home() -> Response:
    """The console opens on the jobs page."""
    return RedirectResponse(f"{PREFIX}/jobs", status_code=303)


@router.get("/signin", response_class=HTMLResponse)
def signin_page(
    request: Request, then: Annotated[str, Query(max_length=2000)] = f"{PREFIX}/jobs"
) -> Response:
    """The sign-in form: a token, as the API takes it."""
    return render(request, "signin.html", {"then": _local(then), "error": None})


@router.post("/signin")
def signin(request: Request, services: ServicesDep, form: FormDep) -> Response:
    """Check the token as the API would; keep it in the session cookie, or say it is not valid."""
    token = form.get("token", "").strip()
    then = _local(form.get("then", ""))
    if not token or services.verified_tokens.actor(token) is None:
        context = {"then": then, "error": "That token is not valid (unknown or revoked)."}
        return render(request, "signin.html", context, status_code=401)
    response = see_other(then)
    start_session(request, response, token)
    return response


@router.post("/signout")
def signout(form: FormDep) -> Response:
    """Forget the session."""
    response = see_other(f"{PREFIX}/signin")
    end_session(response)
    return response


def install(app: FastAPI) -> None:
    """Add the console to ``app``: its pages, static files, ``/`` and its error pages (the
    API's handlers still answer every path outside ``/ui``)."""
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="console-static")
    for module_router in (
        router,
        jobs.router,
        queues.router,
        catalog.router,
        schedule_pages.router,
    ):
        app.include_router(module_router)

    @app.get("/", include_in_schema=False)
    def root() -> Response:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    async def sign_in_first(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        url = signin_url(exc.then)
        if request.headers.get("HX-Request"):
            # A fragment's poll: htmx loads the sign-in page as a whole page.
            return Response(status_code=204, headers={"HX-Redirect": url})
        return RedirectResponse(url, status_code=303)

    app.add_exception_handler(SignInRequired, sign_in_first)
    _page_errors(app)


def _in_console(request: Request) -> bool:
    return request.url.path == PREFIX or request.url.path.startswith(PREFIX + "/")


async def _delegate(handler: Handler, request: Request, exc: Exception) -> Response:
    """The answer of the handler the console's replaced (the API's, for paths outside /ui)."""
    answer = handler(request, exc)
    return await answer if inspect.isawaitable(answer) else answer


def _page_errors(app: FastAPI) -> None:
    """Under ``/ui``, domain errors, bad queries and unknown paths are pages; elsewhere the
    API's own handlers answer as before."""
    domain = app.exception_handlers[OrchestratorError]
    validation = app.exception_handlers[RequestValidationError]
    http = app.exception_handlers[StarletteHTTPException]

    async def on_domain(request: Request, exc: Exception) -> Response:
        if not _in_console(request) or not isinstance(exc, OrchestratorError):
            return await _delegate(domain, request, exc)
        return error_page(request, status_for(exc), exc.message)

    async def on_validation(request: Request, exc: Exception) -> Response:
        if not _in_console(request) or not isinstance(exc, RequestValidationError):
            return await _delegate(validation, request, exc)
        return error_page(request, 400, validation_message(exc)[0])

    async def on_http(request: Request, exc: Exception) -> Response:
        if (
            not _in_console(request)
            or not isinstance(exc, StarletteHTTPException)
            or exc.status_code != 404
        ):
            return await _delegate(http, request, exc)
        return error_page(request, 404, f"There is no page at {request.url.path}.")

    app.add_exception_handler(OrchestratorError, on_domain)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
