"""Webhook signing secrets (Standard Webhooks): a project's, and a drop-in API's own key, each
made on first use and stored encrypted, and their rotation; and the signature. No secret goes
to a log, an event or an error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

import sqlalchemy as sa
from sqlmodel import Session

from orchestrator.errors import NotFound
from orchestrator.services import audit
from orchestrator.services.audit import Actor
from orchestrator.storage.models import ApiSecret, Project, utcnow
from orchestrator.storage.secret_box import SecretBox

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


# --- the project's signing secret ------------------------------------------------------------


def _new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _project(session: Session, project: str, *, lock: bool = False) -> Project:
    # FOR NO KEY UPDATE on PostgreSQL: inserts that reference the project (its FK takes a key
    # share lock) are not held up by a secret being made or rotated.
    row = session.get(
        Project,
        project,
        with_for_update={"key_share": True} if lock else None,
        populate_existing=lock,
    )
    if row is None:
        raise NotFound(f"project '{project}' not found", field="project")
    return row


def _store_new_secret(session: Session, box: SecretBox, row: Project) -> str:
    secret = _new_secret()
    row.webhook_secret_ciphertext = box.encrypt({"secret": secret})
    session.add(row)
    return secret


def project_secret(session: Session, box: SecretBox, project: str) -> str:
    """The project's signing secret (``whsec_...``), made and stored encrypted on first use.

    Call it in a write transaction: making the secret locks the project row, so two first uses
    agree on one secret.
    """
    row = _project(session, project)
    if row.webhook_secret_ciphertext is None:
        row = _project(session, project, lock=True)
        if row.webhook_secret_ciphertext is None:
            return _store_new_secret(session, box, row)
    return box.decrypt(row.webhook_secret_ciphertext)["secret"]


def reveal_project_secret(session: Session, box: SecretBox, project: str, actor: Actor) -> str:
    """``project_secret`` shown to ``actor``, which the audit trail records."""
    secret = project_secret(session, box, project)
    audit.record(session, actor, "webhook_secret_read", f"project/{project}", project)
    return secret


def rotate_secret(session: Session, box: SecretBox, project: str, actor: Actor) -> str:
    """Replace the project's signing secret; deliveries sent from now on are signed with it."""
    secret = _store_new_secret(session, box, _project(session, project, lock=True))
    audit.record(session, actor, "webhook_secret_rotated", f"project/{project}", project)
    return secret


def _new_api_secret() -> str:
    # SaladCloud's form: the base64 key alone (svix takes it with or without ``whsec_``).
    return base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def api_secret(session: Session, box: SecretBox, name: str) -> str:
    """A drop-in API's signing secret (``salad``: the organisation's webhook secret key), made
    and stored encrypted on first use. Two first uses at once agree: the loser's insert fails
    on the primary key inside a savepoint and it reads the winner's."""
    row = session.get(ApiSecret, name)
    if row is None:
        try:
            with session.begin_nested():
                row = ApiSecret(
                    name=name, secret_ciphertext=box.encrypt({"secret": _new_api_secret()})
                )
                session.add(row)
        except sa.exc.IntegrityError:
            row = session.get(ApiSecret, name, populate_existing=True)
            assert row is not None
    return str(box.decrypt(row.secret_ciphertext)["secret"])


def reveal_api_secret(session: Session, box: SecretBox, name: str, actor: Actor) -> str:
    """``api_secret`` shown to ``actor``, which the audit trail records."""
    secret = api_secret(session, box, name)
    audit.record(session, actor, f"{name}_webhook_key_read", f"{name}/webhook-secret-key", None)
    return secret


def rotate_api_secret(session: Session, box: SecretBox, name: str, actor: Actor) -> str:
    """Replace a drop-in API's signing secret; deliveries sent from now on are signed with it."""
    audit.record(session, actor, f"{name}_webhook_key_rotated", f"{name}/webhook-secret-key", None)
    secret = _new_api_secret()
    row = session.get(ApiSecret, name, with_for_update=True, populate_existing=True)
    if row is None:
        row = ApiSecret(name=name, secret_ciphertext="")
    row.secret_ciphertext = box.encrypt({"secret": secret})
    row.update_time = utcnow()
    session.add(row)
    return secret


def sign(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``
    under the secret's key (the base64 text after ``whsec_``)."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()
