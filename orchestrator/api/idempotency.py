"""The ``Idempotency-Key`` header of the create routes (native jobs and schedules, and the
SaladCloud, Daestro and Quedup job creation): ``create_once`` runs a route's create in one
transaction with its key and answer, or answers again what the key's first request was answered
(``services.idempotency`` keeps them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Header, Request, Response
from pydantic import BaseModel
from sqlmodel import Session

from orchestrator.errors import DatabaseUnavailable, IdempotencyKeyReused, OrchestratorError
from orchestrator.process import Services
from orchestrator.rules.idempotency import HEADER, MAX_KEY_CHARS, parse_key, request_material
from orchestrator.services import idempotency
from orchestrator.services.idempotency import Answer, Scope
from orchestrator.storage.models import utcnow

# Stripe's header on an answer given again, so a client can tell it from a new one.
REPLAYED = "Idempotent-Replayed"


async def idempotency_key(
    request: Request,
    # Declared for the OpenAPI document; the values are read from the request below, all of
    # them, so that a header sent twice is refused rather than one of them taken.
    _declared: Annotated[
        str | None,
        Header(
            alias=HEADER,
            description="Send the request again with the same key (1 to "
            f"{MAX_KEY_CHARS} printable ASCII characters, e.g. a UUID; bare or quoted) to "
            "get its first answer again, with `Idempotent-Replayed: true`, and create "
            "nothing more; kept ORCH_IDEMPOTENCY_TTL (24 h), per project and endpoint. The "
            "same key with another body is a 422.",
        ),
    ] = None,
) -> str | None:
    """The request's idempotency key, if it sent one; 400 naming the header when it is empty,
    too long, not printable ASCII or sent twice."""
    return parse_key(request.headers.getlist(HEADER))


IdempotencyKeyDep = Annotated[str | None, Depends(idempotency_key)]


def answer_of(
    status_code: int,
    model: BaseModel,
    *,
    exclude_unset: bool = False,
    location: str | None = None,
) -> Answer:
    """``model`` answered as its route's ``response_model`` renders it (the same JSON)."""
    content = model.model_dump(mode="json", by_alias=True, exclude_unset=exclude_unset)
    body = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Answer(status_code, body.encode(), {"Location": location} if location else {})


class _AnsweredBefore(Exception):
    """Raised inside a create's transaction to roll it back: the key's first request was this
    one, and ``answer`` is what it got."""

    def __init__(self, answer: Answer) -> None:
        super().__init__("answered before")
        self.answer = answer


def create_once(
    services: Services,
    request: Request,
    key: str | None,
    scope: Scope,
    body: BaseModel,
    create: Callable[[Session], Answer],
) -> Response:
    """Run ``create`` (which makes what the route creates and says what to answer) in one
    transaction; with a key, keep the answer with it in that transaction, or, when the key's
    first request was this one, roll the create back and answer as the first was answered.

    ``body`` and the path make the request's fingerprint. Nothing is sent before the commit.
    """
    if key is None:
        with services.db.transaction() as session:
            answer = create(session)
        return _response(answer, replayed=False)
    # The path as the server got it: ``request.url`` would build a whole URL for it.
    material = request_material(request.scope["path"], body.model_dump(mode="json"))
    fingerprints = services.box.digests(material)
    ttl, now = services.settings.idempotency_ttl, utcnow()
    try:
        with services.db.transaction() as session:
            answer = create(session)
            first = idempotency.keep(session, scope, key, fingerprints, answer, ttl=ttl, now=now)
            if first is not None:
                raise _AnsweredBefore(first)
    except _AnsweredBefore as before:
        return _response(before.answer, replayed=True)
    except (DatabaseUnavailable, IdempotencyKeyReused):
        raise
    except OrchestratorError:
        # Sent again while its first sending was under way, a request can be refused because of
        # what that one made (a job name now taken): the first's answer is its answer.
        with services.db.read() as session:
            first = idempotency.kept(session, scope, key, fingerprints, ttl=ttl, now=now)
        if first is None:
            raise
        return _response(first, replayed=True)
    return _response(answer, replayed=False)


def _response(answer: Answer, *, replayed: bool) -> Response:
    headers = {**answer.headers, REPLAYED: "true"} if replayed else answer.headers
    return Response(
        answer.body, status_code=answer.status_code, headers=headers, media_type="application/json"
    )
