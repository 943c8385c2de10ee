"""Webhook signing secrets after a rotation, on a real database (SQLite and PostgreSQL), no
server: for the grace period a delivery is signed with the new secret and the one it replaced,
then with the new one alone and the replaced one is deleted; rotating twice keeps only the last
replaced secret; a drop-in API's key follows the same rule; the replaced secrets are stored
encrypted and re-encrypted by a key rotation. The live deliveries, verified by receivers, are
in ``tests/api/test_webhooks.py`` and ``tests/compat/test_compat_salad.py``."""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import standardwebhooks.webhooks
import svix.webhooks

from orchestrator.services import projects, webhook_secrets
from orchestrator.services.audit import SYSTEM
from orchestrator.services.salad import SALAD
from orchestrator.storage import key_rotation
from orchestrator.storage.db import Database
from orchestrator.storage.models import ApiSecret, Project
from orchestrator.storage.secret_box import SecretBox, generate_key

DAY = 86400.0
KEY = generate_key()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.upgrade_schema()
    with database.transaction() as session:
        projects.ensure_default(session)
    yield database
    database.dispose()


def signing(
    db: Database,
    box: SecretBox,
    *,
    signing_key: str | None = None,
    grace: float = DAY,
    now: datetime | None = None,
) -> tuple[str, ...]:
    with db.transaction() as session:
        return webhook_secrets.signing_secrets(session, box, "default", signing_key, grace, now)


def project_row(db: Database) -> Project:
    with db.read() as session:
        row = session.get(Project, "default")
        assert row is not None
        return row


def third_party() -> str:
    """A secret of nobody's."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def rotate(db: Database, box: SecretBox) -> str:
    with db.transaction() as session:
        return webhook_secrets.rotate_secret(session, box, "default", SYSTEM)


def test_a_rotation_signs_with_both_secrets_until_the_grace_ends(db: Database) -> None:
    box = SecretBox([KEY])
    (first,) = signing(db, box)  # made on first use
    assert signing(db, box) == (first,)
    second = rotate(db, box)
    rotated = project_row(db).webhook_secret_rotate_time
    assert rotated is not None and second != first

    # The replaced secret is stored encrypted like the current one.
    stored = project_row(db).previous_webhook_secret_ciphertext
    assert stored is not None and first not in stored
    assert box.decrypt(stored) == {"secret": first}

    assert signing(db, box, now=rotated) == (second, first)
    assert signing(db, box, now=rotated + timedelta(seconds=DAY - 1)) == (second, first)
    with db.read() as session:
        until = webhook_secrets.previous_secret_until(session, "default", DAY, rotated)
        assert until == rotated + timedelta(seconds=DAY)
        assert webhook_secrets.previous_secret_until(session, "default", DAY, until) is None

    # One header, a signature under each: receivers on either secret accept the message.
    timestamp = int(time.time())
    header = webhook_secrets.signature_header((second, first), "msg_1", timestamp, '{"a":1}')
    assert len(header.split(" ")) == 2
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": header,
    }
    for key in (first, second):
        assert standardwebhooks.webhooks.Webhook(key).verify('{"a":1}', headers) == {"a": 1}
        svix.webhooks.Webhook(key).verify('{"a":1}', headers)  # raises unless it verifies
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.webhooks.Webhook(third_party()).verify('{"a":1}', headers)

    # Once the grace is over: the new secret alone, and the replaced one is deleted for good.
    assert signing(db, box, now=rotated + timedelta(seconds=DAY)) == (second,)
    assert project_row(db).previous_webhook_secret_ciphertext is None
    assert signing(db, box, now=rotated) == (second,)


def test_rotating_twice_within_the_grace_keeps_only_the_last_replaced_secret(
    db: Database,
) -> None:
    box = SecretBox([KEY])
    (first,) = signing(db, box)
    second = rotate(db, box)
    third = rotate(db, box)
    assert signing(db, box) == (third, second)
    assert first not in signing(db, box)


def test_no_grace_hands_over_at_once(db: Database) -> None:
    box = SecretBox([KEY])
    (first,) = signing(db, box, grace=0)
    second = rotate(db, box)
    assert signing(db, box, grace=0) == (second,)
    assert project_row(db).previous_webhook_secret_ciphertext is None
    # A rotation before the project's first delivery has nothing to keep.
    with db.transaction() as session:
        projects.create(session, "fresh")
        webhook_secrets.rotate_secret(session, box, "fresh", SYSTEM)
        assert webhook_secrets.previous_secret_until(session, "fresh", DAY) is None
        assert len(webhook_secrets.signing_secrets(session, box, "fresh", None, DAY)) == 1
    assert first != second


def test_a_drop_in_apis_key_follows_the_same_rule(db: Database) -> None:
    box = SecretBox([KEY])
    (first,) = signing(db, box, signing_key=SALAD)
    with db.transaction() as session:
        assert webhook_secrets.api_secret(session, box, SALAD) == first
        second = webhook_secrets.rotate_api_secret(session, box, SALAD, SYSTEM)
    with db.read() as session:
        row = session.get(ApiSecret, SALAD)
        assert row is not None and row.previous_secret_ciphertext is not None
        assert first not in row.previous_secret_ciphertext
        rotated = row.update_time
    # The project's own secret is another matter: untouched by the API's rotation.
    assert first not in signing(db, box) and second not in signing(db, box)
    assert signing(db, box, signing_key=SALAD, now=rotated) == (second, first)
    past = rotated + timedelta(seconds=DAY + 1)
    assert signing(db, box, signing_key=SALAD, now=past) == (second,)
    with db.read() as session:
        row = session.get(ApiSecret, SALAD)
        assert row is not None and row.previous_secret_ciphertext is None
    with db.transaction() as session:
        third = webhook_secrets.rotate_api_secret(session, box, SALAD, SYSTEM)
        fourth = webhook_secrets.rotate_api_secret(session, box, SALAD, SYSTEM)
    assert signing(db, box, signing_key=SALAD) == (fourth, third)


def test_a_key_rotation_re_encrypts_the_replaced_secrets(db: Database) -> None:
    box = SecretBox([KEY])
    (first,) = signing(db, box)
    (api_first,) = signing(db, box, signing_key=SALAD)
    second = rotate(db, box)
    with db.transaction() as session:
        api_second = webhook_secrets.rotate_api_secret(session, box, SALAD, SYSTEM)

    new_key = generate_key()
    tallies = key_rotation.reencrypt(db, SecretBox([new_key, KEY]))
    by_column = {tally.column: tally.retired for tally in tallies}
    assert by_column["projects.previous_webhook_secret_ciphertext"] == 1
    assert by_column["api_secrets.previous_secret_ciphertext"] == 1
    # The old key gone, both secrets of each still sign.
    fresh = SecretBox([new_key])
    assert signing(db, fresh) == (second, first)
    assert signing(db, fresh, signing_key=SALAD) == (api_second, api_first)
