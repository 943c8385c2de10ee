"""Rendering the console's pages: the templates, the headers every page carries, and the
error pages (a refusal under ``/ui`` is a page, not the API's JSON)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from orchestrator import __version__
from orchestrator.api.console.session import CSRF_FIELD, csrf_value, remember_csrf
from orchestrator.rules.roles import Role
from orchestrator.services.audit import Actor

HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")
STATIC = HERE / "static"

# Scripts and styles from the console's own files only: nothing inline, nothing from elsewhere,
# and no other site may frame a page.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _when(value: datetime | str | None) -> str:
    """A time as the pages show it: UTC, to the second."""
    if value is None:
        return "-"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


TEMPLATES.env.filters["when"] = _when
TEMPLATES.env.filters["pretty"] = _pretty


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    actor: Actor | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """The page ``template`` with ``context``, the signed-in ``actor`` (what the layout shows
    and whether write buttons appear) and the CSRF value its forms carry."""
    full = {
        "actor": actor,
        "can_write": actor is not None and actor.role is not Role.READ,
        "csrf_field": CSRF_FIELD,
        "csrf": csrf_value(request),
        "version": __version__,
        **context,
    }
    response = TEMPLATES.TemplateResponse(
        request, template, full, status_code=status_code, headers=HEADERS
    )
    remember_csrf(request, response)
    return response


def see_other(url: str) -> Response:
    """Where a form's POST goes next (303: the browser GETs it)."""
    return RedirectResponse(url, status_code=303, headers=HEADERS)


def error_page(request: Request, status: int, message: str, actor: Actor | None = None) -> Response:
    """The page of a refusal: its status and its message (which never holds a secret)."""
    titles = {400: "Bad request", 403: "Not allowed", 404: "Not found", 409: "Conflict"}
    context = {"status": status, "title": titles.get(status, "Error"), "message": message}
    return render(request, "error.html", context, actor=actor, status_code=status)
