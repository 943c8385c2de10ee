"""Webhook signing secrets (Standard Webhooks): a project's, and a drop-in API's own key, each
made on first use and stored encrypted; their rotation, after which the replaced secret signs
too for a grace period; and the signatures. The sender signs every delivery through
``signing_secrets``. No secret goes to a log, an event or an error, and the replaced one is
never returned to an API caller.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col

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
    """Replace the project's signing secret. Deliveries sent from now on are signed with the
    new one and, for the grace period, with the one it replaced too (``signing_secrets``).
    Only one replaced secret is kept: rotating again within the grace drops the older one."""
    row = _project(session, project, lock=True)
    row.previous_webhook_secret_ciphertext = row.webhook_secret_ciphertext
    row.webhook_secret_rotate_time = utcnow()
    secret = _store_new_secret(session, box, row)
    audit.record(session, actor, "webhook_secret_rotated", f"project/{project}", project)
    return secret


def _new_api_secret() -> str:
    # SaladCloud's form: the base64 key alone (svix takes it with or without ``whsec_``).
    return base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _api_row(session: Session, box: SecretBox, name: str) -> ApiSecret:
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
    return row


def api_secret(session: Session, box: SecretBox, name: str) -> str:
    """A drop-in API's signing secret (``salad``: the organisation's webhook secret key), made
    and stored encrypted on first use. Two first uses at once agree: the loser's insert fails
    on the primary key inside a savepoint and it reads the winner's."""
    return str(box.decrypt(_api_row(session, box, name).secret_ciphertext)["secret"])


def reveal_api_secret(session: Session, box: SecretBox, name: str, actor: Actor) -> str:
    """``api_secret`` shown to ``actor``, which the audit trail records."""
    secret = api_secret(session, box, name)
    audit.record(session, actor, f"{name}_webhook_key_read", f"{name}/webhook-secret-key", None)
    return secret


def rotate_api_secret(session: Session, box: SecretBox, name: str, actor: Actor) -> str:
    """Replace a drop-in API's signing secret, as ``rotate_secret`` does a project's: the one
    it replaced signs too for the grace period."""
    audit.record(session, actor, f"{name}_webhook_key_rotated", f"{name}/webhook-secret-key", None)
    secret = _new_api_secret()
    row = session.get(ApiSecret, name, with_for_update=True, populate_existing=True)
    if row is None:
        row = ApiSecret(name=name, secret_ciphertext="")
    else:
        row.previous_secret_ciphertext = row.secret_ciphertext
    row.secret_ciphertext = box.encrypt({"secret": secret})
    row.update_time = utcnow()
    session.add(row)
    return secret


# --- signing ---------------------------------------------------------------------------------


def _grace_end(previous: str | None, rotated: datetime | None, grace: float) -> datetime | None:
    """When the replaced secret stops signing; None when there is none to sign with."""
    if previous is None or rotated is None:
        return None
    return rotated + timedelta(seconds=grace)


def signing_secrets(
    session: Session,
    box: SecretBox,
    project: str,
    signing_key: str | None,
    grace: float,
    now: datetime | None = None,
) -> tuple[str, ...]:
    """The secrets that sign a delivery sent ``now``, the current one first: those of its key
    (the drop-in API's that ``signing_key`` names, else ``project``'s), with the secret the
    key's last rotation replaced while fewer than ``grace`` seconds have passed since. Past
    that, the replaced secret is forgotten: its ciphertext is emptied.

    The one rule for every signature: first sends, retries and redeliveries, of every API.
    Call it in a write transaction.
    """
    rotated: datetime | None
    if signing_key is not None:
        api = _api_row(session, box, signing_key)
        current = str(box.decrypt(api.secret_ciphertext)["secret"])
        previous, rotated = api.previous_secret_ciphertext, api.update_time
    else:
        current = project_secret(session, box, project)
        row = _project(session, project)
        previous, rotated = row.previous_webhook_secret_ciphertext, row.webhook_secret_rotate_time
    end = _grace_end(previous, rotated, grace)
    if previous is None or end is None:  # nothing replaced, or forgotten already
        return (current,)
    if (now or utcnow()) < end:
        return current, str(box.decrypt(previous)["secret"])
    _forget_previous(session, project, signing_key, previous)
    return (current,)


def _forget_previous(
    session: Session, project: str, signing_key: str | None, previous: str
) -> None:
    # Only while it is still the one read: a rotation since then has put another in its place.
    forget: sa.Update
    if signing_key is not None:
        forget = sa.update(ApiSecret).where(
            col(ApiSecret.name) == signing_key,
            col(ApiSecret.previous_secret_ciphertext) == previous,
        )
        forget = forget.values(previous_secret_ciphertext=None)
    else:
        forget = sa.update(Project).where(
            col(Project.name) == project,
            col(Project.previous_webhook_secret_ciphertext) == previous,
        )
        forget = forget.values(previous_webhook_secret_ciphertext=None)
    session.execute(forget, execution_options={"synchronize_session": False})


def previous_secret_until(
    session: Session, project: str, grace: float, now: datetime | None = None
) -> datetime | None:
    """Until when the project's deliveries are also signed with the secret its last rotation
    replaced; None when they are signed with the current secret alone."""
    row = _project(session, project)
    end = _grace_end(row.previous_webhook_secret_ciphertext, row.webhook_secret_rotate_time, grace)
    return end if end is not None and (now or utcnow()) < end else None


def sign(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """One ``v1,`` signature: base64 HMAC-SHA256 of ``id.timestamp.body`` under the secret's
    key (the base64 text after ``whsec_``)."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(keys: Sequence[str], message_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` value: a signature under each secret of ``keys`` (as
    ``signing_secrets`` gives them), space-separated; Standard Webhooks receivers accept the
    message when any one verifies."""
    return " ".join(sign(secret, message_id, timestamp, body) for secret in keys)
