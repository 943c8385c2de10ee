"""Secrets at rest: the database (SQLite file, WAL, PostgreSQL dump) holds ciphertext only, for
secret values and webhook URL credentials (which the server log never shows either); the key
ring (ORCH_SECRET_KEY list or key file) and ``orchestrator secrets rotate-key`` beside a running
server; bad keys are errors that name no value."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from click.testing import Result
from sqlmodel import col, select
from typer.testing import CliRunner

from orchestrator.cli import app, log_masking
from orchestrator.config import Settings
from orchestrator.errors import OrchestratorError
from orchestrator.process import Services
from orchestrator.storage.models import Job
from orchestrator.storage.secret_box import KEY_FILE, SecretBox, generate_key, write_key_file

from ..conftest import (
    OUTBOUND_ALLOWED,
    TEST_IMAGE,
    LiveServer,
    bearer,
    free_port,
    unavailable,
    wait_for,
)
from ..receiver import Receiver

CANARY = "canary-Xr7Lm4-at-rest"
QUEUES = "/v1/projects/default/queues"

# Prints the secret (masked on the way into the database) and its digest (which shows the
# container got exactly the right value), and writes it into the output.
DIGEST = {
    "name": "digest",
    "image": TEST_IMAGE,
    "secrets": ["API_TOKEN"],
    "command": [
        "sh",
        "-c",
        'echo "token=$API_TOKEN"; echo "err=$API_TOKEN" >&2; '
        'printf %s "$API_TOKEN" | sha256sum; '
        'printf \'{"echo": "%s"}\' "$API_TOKEN" > "$ORCH_OUTPUT"',
    ],
}


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def submit_secret(server: LiveServer, value: str, queue: str = "default") -> str:
    """Submit the digest job with ``value`` as its secret; the job's id."""
    return server.submit(definition="digest", queue=queue, secret_env={"API_TOKEN": value})["id"]


def assert_ran_with(server: LiveServer, job_id: str, value: str) -> None:
    """The job succeeded and its container saw exactly ``value``."""
    assert server.wait_job(job_id)["status"] == "succeeded"
    assert digest(value) in server.logs(job_id)


def hold_queue(server: LiveServer, name: str = "held") -> None:
    response = server.http.post(QUEUES, json={"name": name, "paused": True})
    assert response.status_code == 201, response.text


def resume_queue(server: LiveServer, name: str = "held") -> None:
    response = server.http.patch(f"{QUEUES}/{name}", json={"paused": False})
    assert response.status_code == 200, response.text


def ciphertexts(server: LiveServer) -> dict[str, str]:
    """Every job's stored secret ciphertext, by job id."""
    query = select(Job.id, Job.secret_env_ciphertext).where(
        col(Job.secret_env_ciphertext).is_not(None)
    )
    with server.services.db.read() as session:
        return {job_id: text for job_id, text in session.exec(query).all() if text}


def assert_rows_decrypt(server: LiveServer, keys: list[bytes], expected: dict[str, str]) -> None:
    """Every stored ciphertext decrypts with ``keys`` alone to the job's expected value."""
    box = SecretBox(keys)
    rows = ciphertexts(server)
    assert set(rows) == set(expected)
    for job_id, ciphertext in rows.items():
        assert box.decrypt(ciphertext) == {"API_TOKEN": expected[job_id]}


def key_file_keys(path: Path) -> list[bytes]:
    return [line.encode() for line in path.read_text().split()]


def assert_private(path: Path) -> None:
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def rotate(server: LiveServer, *args: str, secret_key: str | None = None) -> Result:
    """``orchestrator secrets rotate-key`` with the server's data dir and database."""
    env = {
        "ORCH_DATA_DIR": str(server.settings.data_dir),
        "ORCH_DATABASE_URL": server.settings.resolved_database_url(),
        "ORCH_SECRET_KEY": secret_key,
    }
    return CliRunner().invoke(
        app, ["secrets", "rotate-key", *args], env=env, catch_exceptions=False
    )


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


# --- ciphertext only, everywhere -------------------------------------------------------------


def database_bytes(database_url: str) -> bytes:
    """The raw bytes of the database: the SQLite file with its WAL and shared memory, or a
    ``pg_dump`` of the PostgreSQL database."""
    url = sa.engine.make_url(database_url)
    if url.get_backend_name() == "sqlite":
        assert url.database
        files = [Path(url.database + suffix) for suffix in ("", "-wal", "-shm")]
        return b"".join(path.read_bytes() for path in files if path.exists())
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        unavailable("pg_dump")
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    dump = subprocess.run(
        [pg_dump, "--no-owner", "--dbname", dsn], capture_output=True, check=True, timeout=120
    )
    return dump.stdout


def test_database_holds_ciphertext_only(server: LiveServer) -> None:
    server.register(DIGEST)
    job_id = submit_secret(server, CANARY)
    assert_ran_with(server, job_id, CANARY)
    done = server.job(job_id)
    assert done["output"] == {"echo": "***"}
    assert "token=***" in server.logs(job_id)

    url = sa.engine.make_url(server.settings.resolved_database_url())
    if url.get_backend_name() == "sqlite":
        # While the server runs, recent writes sit in the WAL: it must be clean too.
        assert Path(f"{url.database}-wal").exists()
    raw = database_bytes(server.settings.resolved_database_url())
    assert job_id.encode() in raw  # the right database, with the job in it
    assert CANARY.encode() not in raw

    (ciphertext,) = ciphertexts(server).values()
    assert CANARY not in ciphertext
    assert server.services.box.decrypt(ciphertext) == {"API_TOKEN": CANARY}

    server.stop()  # the last connection checkpoints the WAL into the main file
    assert CANARY.encode() not in database_bytes(server.settings.resolved_database_url())


# --- webhook URL credentials: sent, never logged, never stored in the clear ------------------

HOOK_PASSWORD = "hookpw-Qz8Kd2-canary"


@contextmanager
def served(database_url: str, data_dir: Path, log: Path) -> Iterator[httpx.Client]:
    """``orchestrator serve --no-runner`` as a process, its log (stdout and stderr) in ``log``;
    a client of it with the admin token. Stopped with SIGTERM at the end."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env |= {"ORCH_DATA_DIR": str(data_dir), "ORCH_DATABASE_URL": database_url}
    env |= {"ORCH_PORT": str(port), "ORCH_POLL_INTERVAL": "1"}
    env |= {"ORCH_OUTBOUND_ALLOW_NETWORKS": OUTBOUND_ALLOWED}  # the receiver is on 127.0.0.1
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "serve", "--no-runner"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

    def up() -> bool:
        try:
            return http.get("/healthz").status_code == 200
        except httpx.TransportError:
            assert process.poll() is None, log.read_text()
            return False

    try:
        wait_for(up, timeout=60)
        http.headers.update(bearer((data_dir / "admin-token").read_text().strip()))
        yield http
    finally:
        http.close()
        process.terminate()
        process.wait(30)


def test_webhook_url_credentials_reach_the_receiver_but_not_the_log_or_the_database(
    database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    log = tmp_path / "server.log"
    hook = receiver.url.replace("://", f"://hook-user:{HOOK_PASSWORD}@")
    down = f"http://hook-user:{HOOK_PASSWORD}@127.0.0.1:{free_port()}/down"
    project = "/v1/projects/default"
    with served(database_url, tmp_path / "data", log) as http:

        def post(path: str, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
            response = http.post(f"{project}{path}", json=body)
            assert response.status_code == status, response.text
            return dict(response.json())

        post("/definitions", {"name": "ok", "image": TEST_IMAGE, "command": ["true"]})
        post("/queues", {"name": "held", "paused": True})
        job = post("/jobs", {"definition": "ok", "queue": "held", "webhook": f"{hook}/job"})
        unreachable = post("/jobs", {"definition": "ok", "queue": "held", "webhook": down})
        target = {"job": {"definition": "ok", "queue": "held", "webhook": f"{hook}/scheduled"}}
        post("/schedules", {"name": "hooked", "cron": "0 0 1 1 *", "target": target})
        ticked = post("/schedules/hooked/trigger", {}, status=202)["job_id"]
        for job_id in (job["id"], unreachable["id"], ticked):
            post(f"/jobs/{job_id}/cancel", {}, status=200)

        def tried(job_id: str) -> bool:
            found = http.get(f"{project}/jobs/{job_id}/deliveries").json()["items"]
            return bool(found) and found[0]["attempts"] >= 1

        wait_for(lambda: all(tried(job_id) for job_id in (job["id"], unreachable["id"], ticked)))
        # The receiver got the credentials as Basic authentication.
        requests = receiver.wait_for_requests(2)
        assert sorted(request.path for request in requests) == ["/job", "/scheduled"]
        for request in requests:
            sent = request.headers["authorization"].removeprefix("Basic ")
            assert base64.b64decode(sent) == f"hook-user:{HOOK_PASSWORD}".encode()
        shown = http.get(f"{project}/jobs/{job['id']}").json()["webhook"]
        assert shown == receiver.url.replace("://", "://***@") + "/job"

        raw = database_bytes(database_url)
        assert job["id"].encode() in raw  # the right database, with the job in it
        assert HOOK_PASSWORD.encode() not in raw
        url = sa.engine.make_url(database_url)
        if url.get_backend_name() == "sqlite":
            assert Path(f"{url.database}-wal").exists()  # recent writes, checked too

    assert HOOK_PASSWORD.encode() not in database_bytes(database_url)
    text = log.read_text()
    # httpx logs every request's URL at INFO: there, but without its userinfo.
    assert f"HTTP Request: POST {receiver.url}/job " in text
    assert f"HTTP Request: POST {receiver.url}/scheduled " in text
    assert HOOK_PASSWORD not in text and "hook-user" not in text


def test_the_log_masks_url_userinfo_whichever_logger_writes_it() -> None:
    url = f"https://hook-user:{HOOK_PASSWORD}@hooks.example.com/in"
    root, alone = logging.getLogger(), logging.getLogger("test.own_handler")
    into_root, into_own = io.StringIO(), io.StringIO()
    handlers = [(root, logging.StreamHandler(into_root)), (alone, logging.StreamHandler(into_own))]
    factory, levels = logging.getLogRecordFactory(), (root.level, alone.level)
    for logger, handler in handlers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    alone.propagate = False  # as uvicorn's loggers: a handler of its own, nothing to the root
    try:
        log_masking.install()
        log_masking.install()  # once is enough; twice changes nothing
        logging.getLogger("httpx").info(
            'HTTP Request: %s %s "%s %d %s"', "POST", httpx.URL(url), "HTTP/1.1", 204, "No Content"
        )
        logging.getLogger("httpcore.connection").info("connect_tcp.started url=%r", url)
        logging.getLogger("urllib3.connectionpool").warning("Retrying after %s", url)
        logging.getLogger("some.library").error(f"could not reach {url}")
        logging.getLogger("orchestrator.storage.db").info(
            "postgresql://orch:%s@db/orch", HOOK_PASSWORD
        )
        logging.getLogger("some.library").info("%d items", url)  # arguments that do not fit
        try:
            raise httpx.InvalidURL(f"bad URL {url}")
        except httpx.InvalidURL:
            alone.exception("Exception in ASGI application")
        logging.getLogger("some.library").info("plain %s and a@b", "https://h/x")
    finally:
        logging.setLogRecordFactory(factory)
        for logger, handler in handlers:
            logger.removeHandler(handler)
        root.setLevel(levels[0])
        alone.setLevel(levels[1])
        alone.propagate = True
    text = into_root.getvalue() + into_own.getvalue()
    assert HOOK_PASSWORD not in text and "hook-user" not in text
    assert 'HTTP Request: POST https://***@hooks.example.com/in "HTTP/1.1 204 No Content"' in text
    assert "postgresql://***@db/orch" in text
    assert "httpx.InvalidURL: bad URL https://***@hooks.example.com/in" in into_own.getvalue()
    assert "plain https://h/x and a@b" in text  # no userinfo: left as it was


# --- rotating the key file beside a running server -------------------------------------------


def test_rotate_key_file_while_the_server_runs(server: LiveServer) -> None:
    server.register(DIGEST)
    hold_queue(server)
    finished = submit_secret(server, "value-finished")
    assert_ran_with(server, finished, "value-finished")
    waiting = submit_secret(server, "value-waiting", queue="held")
    key_file = server.settings.data_dir / KEY_FILE
    old_keys = key_file_keys(key_file)

    output = ok(rotate(server))
    assert "jobs.secret_env_ciphertext: 2 re-encrypted, 0 already under the new key" in output
    assert "value-" not in output
    keys = key_file_keys(key_file)
    assert len(keys) == 2
    assert keys[0] not in old_keys
    assert keys[1:] == old_keys
    assert_private(key_file)

    # The running server picked up the new key: what it encrypts now needs no other.
    after = submit_secret(server, "value-after")
    expected = {finished: "value-finished", waiting: "value-waiting", after: "value-after"}
    assert_rows_decrypt(server, keys[:1], expected)
    assert_ran_with(server, after, "value-after")
    resume_queue(server)
    assert_ran_with(server, waiting, "value-waiting")

    output = ok(rotate(server, "--prune"))
    assert "dropped 1 retired key(s)" in output
    assert key_file_keys(key_file) == keys[:1]
    assert_private(key_file)
    pruned = submit_secret(server, "value-pruned")
    assert_ran_with(server, pruned, "value-pruned")
    assert_rows_decrypt(server, keys[:1], {**expected, pruned: "value-pruned"})


def test_prune_refuses_while_a_row_needs_a_retired_key(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server()
    server.register(DIGEST)
    hold_queue(server)
    key_file = server.settings.data_dir / KEY_FILE
    (old_key,) = key_file_keys(key_file)
    ok(rotate(server))

    # An API replica that still runs with the retired key writes a job a moment later.
    stale = make_server(secret_key=old_key.decode(), runner_enabled=False)
    late = submit_secret(stale, "value-late", queue="held")
    result = rotate(server, "--prune")
    assert result.exit_code == 1
    assert "1 stored ciphertext row(s) still need a retired key" in result.stderr
    assert len(key_file_keys(key_file)) == 2

    # Rotating again re-encrypts that row; then prune goes through.
    assert "1 re-encrypted" in ok(rotate(server))
    ok(rotate(server, "--prune"))
    (primary,) = key_file_keys(key_file)
    assert_rows_decrypt(server, [primary], {late: "value-late"})
    resume_queue(server)
    assert_ran_with(server, late, "value-late")


# --- ORCH_SECRET_KEY as a list -----------------------------------------------------------------


def test_secret_key_setting_with_two_keys(make_server: Callable[..., LiveServer]) -> None:
    first, second = generate_key().decode(), generate_key().decode()
    old = make_server(secret_key=second)
    old.register(DIGEST)
    hold_queue(old)
    earlier = submit_secret(old, "value-earlier", queue="held")
    old.stop()

    server = make_server(secret_key=f"{first}, {second}")
    resume_queue(server)
    assert_ran_with(server, earlier, "value-earlier")  # encrypted under the second key
    later = submit_secret(server, "value-later")
    assert_ran_with(server, later, "value-later")
    assert SecretBox([first.encode()]).decrypt(ciphertexts(server)[later])

    output = ok(rotate(server, secret_key=f"{first},{second}"))
    assert "ORCH_SECRET_KEY is set: no key generated" in output
    assert "1 re-encrypted, 1 already under the first key" in output
    expected = {earlier: "value-earlier", later: "value-later"}
    assert_rows_decrypt(server, [first.encode()], expected)
    assert not (server.settings.data_dir / KEY_FILE).exists()

    output = ok(rotate(server, "--prune", secret_key=f"{first},{second}"))
    assert "you may remove the 1 other key(s)" in output


@pytest.mark.fresh_database  # it checks that the start touched no table
def test_malformed_secret_key_is_a_startup_error_without_the_value(
    make_settings: Callable[..., Settings],
) -> None:
    bad = f"{generate_key().decode()},not-a-key-{CANARY}"
    settings = make_settings(secret_key=bad)
    with pytest.raises(OrchestratorError) as caught:
        Services.build(settings)
    message = str(caught.value)
    assert "ORCH_SECRET_KEY" in message
    assert "key 2 of 2" in message
    assert CANARY not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__

    # The real start: the server exits with that message before touching the database.
    env = {
        **os.environ,
        "ORCH_DATA_DIR": str(settings.data_dir),
        "ORCH_DATABASE_URL": settings.resolved_database_url(),
        "ORCH_PORT": str(free_port()),
        "ORCH_SECRET_KEY": bad,
    }
    started = subprocess.run(
        [sys.executable, "-m", "orchestrator", "serve", "--no-runner"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert started.returncode != 0
    assert "ORCH_SECRET_KEY: key 2 of 2 is not a valid key" in started.stderr
    assert CANARY not in started.stdout + started.stderr
    engine = sa.create_engine(settings.resolved_database_url())
    try:
        assert not sa.inspect(engine).has_table("jobs")
    finally:
        engine.dispose()


# --- the key ring itself -----------------------------------------------------------------------


def test_key_file_box_follows_the_file(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    old, new = generate_key(), generate_key()
    write_key_file(path, [old])
    assert_private(path)
    box = SecretBox(key_file=path)
    before = box.encrypt({"A": CANARY})

    write_key_file(path, [new, old])
    after = box.encrypt({"A": CANARY})
    assert SecretBox([new]).decrypt(after) == {"A": CANARY}
    assert box.decrypt(before) == {"A": CANARY}
    assert box.reencrypt(after) is None
    rotated = box.reencrypt(before)
    assert rotated is not None and SecretBox([new]).decrypt(rotated) == {"A": CANARY}

    write_key_file(path, [new])
    with pytest.raises(OrchestratorError) as caught:
        box.decrypt(before)
    assert CANARY not in str(caught.value)
    assert box.key_count == 1


def test_bad_key_file_line_is_named_without_its_text(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    path.write_text(f"{generate_key().decode()}\n\nnot-a-key-{CANARY}\n")
    with pytest.raises(OrchestratorError) as caught:
        SecretBox(key_file=path)
    assert f"{path}, line 3 is not a valid key" in str(caught.value)
    assert CANARY not in str(caught.value)


def test_a_job_no_key_opens_fails_instead_of_hanging(
    make_server: Callable[..., LiveServer],
) -> None:
    # An API server and a runner that were given different keys: the runner cannot open the
    # job's secrets, so the job fails saying so, and never stays "starting".
    api = make_server(runner_enabled=False, secret_key=generate_key().decode())
    runner = make_server(secret_key=generate_key().decode())
    api.register(DIGEST)
    job_id = submit_secret(api, CANARY)
    done = runner.wait_job(job_id)
    assert done["status"] == "failed", done
    assert "cannot be decrypted" in done["error"]
    assert done["attempt"] == 1
    assert done["container_id"] is None
    assert CANARY not in str(done)
