"""The console's session: the token in a cookie, resolved to its actor exactly as the API
resolves a bearer token, and the CSRF check of every form it posts.

The session cookie holds the token itself (HttpOnly, so no script reads it; SameSite=Strict, so
no other site's page sends it; Secure when the request came over HTTPS): the server keeps no
session state, and revoking the token ends the session. Forms are protected twice: by
SameSite=Strict, and by a double-submit value (a random ``orch_csrf`` cookie that every form
repeats in a hidden field; another site can neither read the cookie nor set the field).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated
from urllib.parse import parse_qsl, quote

from fastapi import Depends, Request, Response

from orchestrator.api.deps import ServicesDep, token_actor
from orchestrator.errors import Forbidden
from orchestrator.services.audit import Actor

SESSION_COOKIE = "orch_session"
CSRF_COOKIE = "orch_csrf"
CSRF_FIELD = "csrf"
# The console's paths: the cookies are sent to nothing else.
PREFIX = "/ui"


class SignInRequired(Exception):
    """The request has no valid session; the console answers with the sign-in page."""

    def __init__(self, then: str) -> None:
        super().__init__("sign in first")
        self.then = then


def signin_url(then: str) -> str:
    """The sign-in page, coming back to ``then`` after."""
    return f"{PREFIX}/signin?then={quote(then, safe='/')}"


async def console_actor(request: Request, services: ServicesDep) -> Actor:
    """The actor of the session's token (as ``deps.get_actor`` resolves a bearer token), or
    ``SignInRequired`` when there is none or it is no longer valid."""
    token = request.cookies.get(SESSION_COOKIE, "").strip()
    actor = await token_actor(services, token) if token else None
    if actor is None:
        raise SignInRequired(request.url.path)
    return actor


ConsoleActorDep = Annotated[Actor, Depends(console_actor)]


def csrf_value(request: Request) -> str:
    """The request's CSRF value: its cookie's, or a new one (``remember_csrf`` sets it)."""
    value = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "new_csrf", None)
    if not value:
        value = secrets.token_urlsafe(32)
        request.state.new_csrf = value
    return str(value)


def remember_csrf(request: Request, response: Response) -> None:
    """Set the CSRF cookie on ``response`` if this request made a new value."""
    value = getattr(request.state, "new_csrf", None)
    if value:
        _set(request, response, CSRF_COOKIE, value)


def _set(request: Request, response: Response, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def start_session(request: Request, response: Response, token: str) -> None:
    """Keep ``token`` in the session cookie, with a fresh CSRF value."""
    _set(request, response, SESSION_COOKIE, token)
    _set(request, response, CSRF_COOKIE, secrets.token_urlsafe(32))


def end_session(response: Response) -> None:
    """Forget the session and its CSRF value."""
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path=PREFIX)


async def checked_form(request: Request) -> dict[str, str]:
    """The posted form's fields, once its CSRF field matches the CSRF cookie (403 if not). Its
    size is bounded as every request body is (``ORCH_MAX_BODY_BYTES``)."""
    body = await request.body()
    fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    sent = fields.get(CSRF_FIELD, "")
    expected = request.cookies.get(CSRF_COOKIE, "")
    if not sent or not expected or not hmac.compare_digest(sent, expected):
        raise Forbidden(
            "the form's CSRF value is missing or does not match: reload the page and try again",
            field=CSRF_FIELD,
        )
    return fields


FormDep = Annotated[dict[str, str], Depends(checked_form)]
