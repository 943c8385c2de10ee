"""The CLI covers the API, against a live server (SQLite and PostgreSQL): every flag of
``submit`` reaches the job, secret values are read where ``ps`` and the shell's history do not
show them (a variable, a file, a hidden prompt on a real terminal), ``jobs ls`` pages,
``queues update``, ``projects``, ``definitions get|versions``, and ``--json`` parses."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import subprocess
import sys
import termios
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import Result
from typer.testing import CliRunner

from orchestrator.cli import app

from ..conftest import TEST_IMAGE, LiveServer
from ..receiver import Receiver
from .test_cli import CANARY, apply, as_json, cli, client_env, ok, sh

FILE_CANARY = "canary-Fi1e9-value"
OTHER_CANARY = "canary-Ot4er7-value"


def usage_error(result: Result) -> str:
    """The one line of a usage error (exit 2)."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    return result.stderr


def test_every_submit_flag_reaches_the_job(
    server: LiveServer, receiver: Receiver, tmp_path: Path
) -> None:
    server.register(
        {
            **sh("flags", 'echo "$GREETING $API_TOKEN $DB_PASS $FROM_FILE"'),
            "secrets": ["API_TOKEN", "DB_PASS", "FROM_FILE"],
        }
    )
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(FILE_CANARY + "\n")
    args = (
        "submit",
        "flags",
        "--name",
        "cli-flags",
        "--env",
        "GREETING=hi",
        "--secret",
        "API_TOKEN",
        "--secret",
        "DB_PASS=env:OTHER_VAR",
        "--secret",
        f"FROM_FILE=@{secret_file}",
        "--metadata",
        "team=ml",
        "--metadata",
        "retries:=3",
        "-m",
        'tags:=["a", "b"]',
        "--webhook",
        f"{receiver.url}/done",
        "--priority",
        "7",
        "--timeout",
        "1m30s",
        "--follow",
        "--json",
    )

    result = cli(server, *args, API_TOKEN=CANARY, OTHER_VAR=OTHER_CANARY)

    job = as_json(result)
    assert job["status"] == "succeeded"
    assert job["name"] == "cli-flags"
    assert job["env"] == {"GREETING": "hi"}
    assert job["secret_env"] == {"API_TOKEN": "***", "DB_PASS": "***", "FROM_FILE": "***"}
    assert job["metadata"] == {"team": "ml", "retries": 3, "tags": ["a", "b"]}
    assert job["webhook"] == f"{receiver.url}/done"
    assert (job["priority"], job["timeout"]) == (7, 90.0)
    # Each secret arrived whole (the file's without its newline): each is masked in the log.
    assert result.stderr == "hi *** *** ***\n"
    assert server.logs(job["id"]) == "hi *** *** ***\n"
    (delivery,) = receiver.wait_for_requests(1)
    assert (delivery.method, delivery.path) == ("POST", "/done")
    assert json.loads(delivery.body)["id"] == job["id"]
    shown = result.stdout + result.stderr + cli(server, "jobs", "get", job["id"]).stdout
    for canary in (CANARY, OTHER_CANARY, FILE_CANARY):
        assert canary not in shown


def test_retry_and_attempts_make_the_jobs_own_retry_policy(
    server: LiveServer, tmp_path: Path
) -> None:
    server.register(sh("third-time", '[ "$ORCH_ATTEMPT" -ge 3 ] && exit 0; exit 1'))
    policy = tmp_path / "retry.json"
    policy.write_text('{"attempts": 2, "backoff": "100ms"}')

    # --attempts over the file's attempts: a third attempt succeeds.
    job = as_json(
        cli(server, "submit", "third-time", "--retry", f"@{policy}", "--attempts", "3", "--json")
    )
    done = server.wait_job(job["id"])
    assert (done["status"], done["attempt"], done["max_attempts"]) == ("succeeded", 3, 3)
    assert done["retry"]["backoff"]["delay"] == 0.1
    # Inline, a rule failing exit 1 at once.
    rule = '{"attempts": 3, "on": [{"exit_codes": [1], "action": "fail"}]}'
    fast = server.wait_job(
        as_json(cli(server, "submit", "third-time", "--retry", rule, "--json"))["id"]
    )
    assert (fast["status"], fast["attempt"]) == ("failed", 1)
    # Without --json, the job shows the policy it followed as one line.
    shown = cli(server, "jobs", "get", fast["id"]).stdout
    assert "\nretry: " in shown and '"on":[{"exit_codes":[1],"action":"fail"}]' in shown

    assert "'--retry'" in usage_error(cli(server, "submit", "third-time", "--retry", "[3]"))
    assert "not valid JSON" in usage_error(cli(server, "submit", "third-time", "--retry", "{"))
    # The server names the field of a policy it refuses.
    refused = cli(server, "submit", "third-time", "--attempts", "0")
    assert refused.exit_code != 0 and "retry.attempts" in refused.stderr


def test_a_secret_value_on_the_command_line_is_refused_unechoed(server: LiveServer) -> None:
    apply(server, "use-secret")
    for value, reason in (
        (f"API_TOKEN={CANARY}", "a secret value is not taken from the command line"),
        (CANARY, "is not KEY, KEY=@FILE or KEY=env:NAME"),
        ("API_TOKEN=env:NO_SUCH_VAR", "'NO_SUCH_VAR' is not set"),
        # No $API_TOKEN, and the test runner's stdin is no terminal to ask on.
        ("API_TOKEN", "which is not set, and there is no terminal to ask on"),
        # The same for a value given alone by mistake: the message does not name it.
        ("s3cr3tValue", "which is not set, and there is no terminal to ask on"),
    ):
        line = usage_error(cli(server, "submit", "use-secret", "--secret", value))
        assert reason in line
        assert CANARY not in line and "s3cr3tValue" not in line
    assert server.http.get("/v1/projects/default/jobs").json()["items"] == []


def test_a_secret_typed_at_the_prompt_is_hidden(server: LiveServer) -> None:
    apply(server, "use-secret")
    controller, terminal = pty.openpty()
    # The CLI as a real process whose controlling terminal is the pty, as in a shell.
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "submit", "use-secret", "--secret", "API_TOKEN"],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, **client_env(server)},
        start_new_session=True,
        preexec_fn=_take_terminal,
    )
    os.close(terminal)
    seen = b""

    def read_until(wanted: bytes) -> None:
        nonlocal seen
        while wanted not in seen:
            ready, _, _ = select.select([controller], [], [], 60)
            assert ready, f"no {wanted!r} from the CLI; it wrote {seen!r}"
            try:
                chunk = os.read(controller, 1024)
            except OSError:  # the CLI ended: the pty is closed
                chunk = b""
            assert chunk, f"the CLI ended without {wanted!r}; it wrote {seen!r}"
            seen += chunk

    try:
        # The space after the colon is getpass's prompt, written once echo is off (typed
        # earlier, the value would be echoed, then flushed).
        read_until(b"value of secret API_TOKEN: ")
        os.write(controller, CANARY.encode() + b"\n")
        read_until(b" queued")
        assert process.wait(60) == 0
    finally:
        process.kill()
        process.wait()
        os.close(controller)
    job_id = seen.decode().split()[-2]
    assert CANARY.encode() not in seen  # not echoed as typed, not printed
    job = server.wait_job(job_id)
    assert (job["status"], job["secret_env"]) == ("succeeded", {"API_TOKEN": "***"})
    assert server.logs(job_id) == "calling https://api.example.com with token ***\nok\n"


def _take_terminal() -> None:
    """In the CLI's process (a new session): make its stdin, the pty, its controlling
    terminal, as a shell would."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def test_schedule_at_a_time_or_from_now(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(runner_enabled=False)
    apply(server, "hello")

    at = as_json(cli(server, "submit", "hello", "--schedule-at", "2099-01-02T03:04:05Z", "--json"))
    assert (at["status"], at["schedule_at"]) == ("scheduled", "2099-01-02T03:04:05Z")
    before = datetime.now(UTC)
    later = as_json(cli(server, "submit", "hello", "--schedule-at", "+2h", "--json"))
    after = datetime.now(UTC)
    assert later["status"] == "scheduled"
    moment = datetime.fromisoformat(later["schedule_at"])
    assert before + timedelta(hours=2) <= moment + timedelta(seconds=1)
    assert moment <= after + timedelta(hours=2, seconds=1)
    line = ok(cli(server, "submit", "hello", "--schedule-at", "+10m"))
    assert line.split()[1] == "scheduled"


def test_jobs_ls_pages_and_filters(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(runner_enabled=False)
    apply(server, "hello")
    ok(cli(server, "queues", "create", "other"))
    ids = [server.submit(definition="hello")["id"] for _ in range(7)]
    other = server.submit(definition="hello", queue="other")["id"]
    newest_first = [other, *reversed(ids)]

    first = as_json(cli(server, "jobs", "ls", "--limit", "3", "--json"))
    assert [j["id"] for j in first["items"]] == newest_first[:3]
    assert first["next_cursor"]
    second = as_json(
        cli(server, "jobs", "ls", "--limit", "3", "--cursor", first["next_cursor"], "--json")
    )
    assert [j["id"] for j in second["items"]] == newest_first[3:6]

    every = as_json(cli(server, "jobs", "ls", "--all", "--limit", "3", "--json"))
    assert [j["id"] for j in every["items"]] == newest_first
    assert every["next_cursor"] is None
    rest = as_json(cli(server, "jobs", "ls", "--all", "--cursor", first["next_cursor"], "--json"))
    assert [j["id"] for j in rest["items"]] == newest_first[3:]
    in_default = as_json(cli(server, "jobs", "ls", "--all", "--queue", "default", "--json"))
    assert [j["id"] for j in in_default["items"]] == list(reversed(ids))
    queued = as_json(cli(server, "jobs", "ls", "--all", "--status", "queued", "--json"))
    assert len(queued["items"]) == 8
    none = as_json(cli(server, "jobs", "ls", "--all", "--status", "running", "--json"))
    assert none == {"items": [], "next_cursor": None}

    page = cli(server, "jobs", "ls", "--limit", "3")
    assert len(ok(page).splitlines()) == 4
    assert page.stderr == f"(more jobs: --cursor {first['next_cursor']}, or --all)\n"
    whole = cli(server, "jobs", "ls", "--all", "--limit", "2")
    assert len(ok(whole).splitlines()) == 9
    assert whole.stderr == ""
    bad = cli(server, "jobs", "ls", "--cursor", "not-a-cursor")
    assert bad.exit_code == 1 and bad.stderr.count("\n") == 1


def test_queues_update(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(runner_enabled=False)
    apply(server, "hello")
    ok(cli(server, "queues", "create", "batch", "--description", "nightly work"))

    def stored() -> dict[str, Any]:
        return dict(server.http.get("/v1/projects/default/queues/batch").json())

    assert stored()["description"] == "nightly work"
    changed = as_json(
        cli(
            server,
            "queues",
            "update",
            "batch",
            "--priority",
            "9",
            "--max-concurrency",
            "3",
            "--display-name",
            "Batch",
            "--description",
            "all work",
            "--default-definition",
            "hello",
            "--json",
        )
    )
    assert changed == stored()
    expected = (9, 3, "Batch", "all work", "hello")
    fields = ("priority", "max_concurrency", "display_name", "description", "default_definition")
    assert tuple(stored()[f] for f in fields) == expected

    table = ok(cli(server, "queues", "update", "batch", "--no-max-concurrency")).splitlines()
    assert table[1].split()[:3] == ["batch", "9", "-"]
    ok(cli(server, "queues", "update", "batch", "--no-default-definition"))
    assert (stored()["max_concurrency"], stored()["default_definition"]) == (None, None)
    assert stored()["priority"] == 9  # fields not given stay

    both = cli(
        server, "queues", "update", "batch", "--max-concurrency", "2", "--no-max-concurrency"
    )
    assert "not both" in usage_error(both)
    assert "give at least one field" in usage_error(cli(server, "queues", "update", "batch"))
    missing = cli(server, "queues", "update", "nope", "--priority", "1")
    assert (missing.exit_code, missing.stderr.count("\n")) == (1, 1)
    assert "not found" in missing.stderr
    unknown = cli(server, "queues", "update", "batch", "--default-definition", "nope")
    assert unknown.exit_code == 1 and "default_definition" in unknown.stderr


def test_projects_ls_and_create(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(runner_enabled=False)

    made = as_json(cli(server, "projects", "create", "team-a", "--description", "Team A", "--json"))
    assert (made["name"], made["description"]) == ("team-a", "Team A")
    table = ok(cli(server, "projects", "create", "team-b")).splitlines()
    assert table[0].split() == ["NAME", "RETENTION", "CREATED", "DESCRIPTION"]
    assert table[1].split()[:2] == ["team-b", "server"]
    listed = as_json(cli(server, "projects", "ls", "--json"))
    assert {"default", "team-a", "team-b"} <= {p["name"] for p in listed["items"]}
    names = [line.split()[0] for line in ok(cli(server, "projects", "ls")).splitlines()[1:]]
    assert {"default", "team-a", "team-b"} <= set(names)
    # The new project is usable at once: its default queue, a job in it.
    queues = as_json(cli(server, "queues", "ls", "--project", "team-a", "--json"))["items"]
    assert [q["name"] for q in queues] == ["default"]

    again = cli(server, "projects", "create", "team-a")
    assert again.exit_code == 1 and again.stderr.count("\n") == 1
    bad = cli(server, "projects", "create", "Team_A")
    assert bad.exit_code == 1 and "name" in bad.stderr
    # A project token sees its project only and may not create one.
    token = server.http.post(
        "/v1/tokens", json={"name": "t", "role": "write", "project": "team-a"}
    ).json()["token"]
    seen = as_json(cli(server, "projects", "ls", "--json", ORCH_TOKEN=token))
    assert [p["name"] for p in seen["items"]] == ["team-a"]
    refused = cli(server, "projects", "create", "team-c", ORCH_TOKEN=token)
    assert refused.exit_code == 1 and refused.stderr.count("\n") == 1


def test_definitions_get_and_versions(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(runner_enabled=False)
    server.register({"name": "tool", "image": TEST_IMAGE, "command": ["echo", "one"]})
    server.register(
        {"name": "tool", "image": TEST_IMAGE, "command": ["echo", "two"], "description": "v2"}
    )

    latest = as_json(cli(server, "definitions", "get", "tool", "--json"))
    assert (latest["version"], latest["spec"]["command"]) == (2, ["echo", "two"])
    first = as_json(cli(server, "definitions", "get", "tool:1", "--json"))
    assert (first["version"], first["spec"]["command"]) == (1, ["echo", "one"])
    shown = ok(cli(server, "definitions", "get", "tool:1")).splitlines()
    assert ["reference:", "tool:1"] in [line.split() for line in shown]
    spec = shown[shown.index("spec:") + 1 :]
    assert f"  image: {TEST_IMAGE}" in spec and "  - one" in spec

    versions = as_json(cli(server, "definitions", "versions", "tool", "--json"))
    assert [v["version"] for v in versions["items"]] == [1, 2]
    table = ok(cli(server, "definitions", "versions", "tool")).splitlines()
    assert [row.split()[:2] for row in table] == [
        ["VERSION", "IMAGE"],
        ["1", TEST_IMAGE],
        ["2", TEST_IMAGE],
    ]
    assert table[2].endswith(" v2")

    missing = cli(server, "definitions", "get", "tool:3")
    assert missing.exit_code == 1 and "not found" in missing.stderr
    assert cli(server, "definitions", "versions", "nope").exit_code == 1
    assert "must be a number" in usage_error(cli(server, "definitions", "get", "tool:x"))


def test_database_commands_print_json(
    make_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = make_server(runner_enabled=False)
    env = {
        "ORCH_DATABASE_URL": server.settings.resolved_database_url(),
        "ORCH_DATA_DIR": str(server.settings.data_dir),
        "ORCH_SECRET_KEY": None,  # the key file of the data dir
    }
    head = as_json(cli(server, "db", "current", "--json", **env))["revision"]
    assert head and head == ok(cli(server, "db", "current", **env)).strip()
    upgraded = as_json(cli(server, "db", "upgrade", "--json", **env))
    assert (upgraded["before"], upgraded["after"], upgraded["applied"]) == (head, head, [])
    counted = as_json(cli(server, "gc", "--dry-run", "--json", **env))
    assert counted["dry_run"] is True
    assert (counted["jobs"], counted["schedule_runs"]) == (0, 0)
    assert as_json(cli(server, "gc", "--json", **env))["dry_run"] is False
    if env["ORCH_DATABASE_URL"].startswith("sqlite"):
        target = tmp_path / "copy.db"
        copied = as_json(cli(server, "db", "backup", str(target), "--json", **env))
        assert copied["target"] == str(target) and copied["size"] == target.stat().st_size
        assert copied["key_source"] == str(server.settings.data_dir / "secret-key")


def test_rotate_key_prints_json(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(runner_enabled=False)
    apply(server, "use-secret")
    server.submit(definition="use-secret", secret_env={"API_TOKEN": CANARY})
    env = {
        "ORCH_DATA_DIR": str(server.settings.data_dir),
        "ORCH_DATABASE_URL": server.settings.resolved_database_url(),
        "ORCH_SECRET_KEY": None,  # the key file of the data dir
    }

    def rotate(*args: str) -> Result:
        command = ["secrets", "rotate-key", *args, "--json"]
        return CliRunner().invoke(app, command, env=env, catch_exceptions=False)

    rotated = rotate()
    document = json.loads(ok(rotated))
    assert document["key_file"] == str(server.settings.data_dir / "secret-key")
    assert (document["prune"], document["retired_keys"]) == (False, 1)
    columns = {c["column"]: c for c in document["columns"]}
    secret_env = columns["jobs.secret_env_ciphertext"]
    assert (secret_env["retired"], secret_env["unreadable"]) == (1, 0)
    assert "wrote a new primary key" in rotated.stderr  # the lines for people, apart
    pruned = rotate("--prune")
    assert json.loads(ok(pruned)) | {"key_file": None} == {
        "prune": True,
        "key_file": None,
        "dropped_keys": 1,
    }
    assert CANARY not in rotated.stdout + rotated.stderr + pruned.stdout + pruned.stderr


def test_submit_dry_run_shows_the_container_and_stores_nothing(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(runner_enabled=False)
    apply(server, "hello")

    plan = as_json(cli(server, "submit", "hello", "-p", "who=dry", "--dry-run", "--json"))
    assert plan["container"]["command"] == ["echo", "Hello, dry!"]
    assert plan["queue"] == "default"
    shown = ok(cli(server, "submit", "hello", "-p", "who=dry", "--dry-run"))
    assert shown.startswith("would wait in queue default; nothing was stored\n")
    assert "command: ['echo', 'Hello, dry!']" in shown
    assert server.http.get("/v1/projects/default/jobs").json()["items"] == []
    # What a real submit refuses, the dry run refuses the same way.
    refused = cli(server, "submit", "hello", "-p", "nope=1", "--dry-run")
    assert refused.exit_code == 1 and "nope" in refused.stderr
    both = cli(server, "submit", "hello", "--dry-run", "--follow")
    assert "--dry-run" in usage_error(both)


def test_jobs_ls_filters_by_definition_name_and_creation_time(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(runner_enabled=False)
    apply(server, "hello")
    server.register(sh("other", "true"))
    named = server.submit(definition="hello", name="the-one")
    plain = server.submit(definition="hello")
    other = server.submit(definition="other")

    def listed(*flags: str) -> list[str]:
        page = as_json(cli(server, "jobs", "ls", "--all", *flags, "--json"))
        return [job["id"] for job in page["items"]]

    assert listed("--definition", "hello") == [plain["id"], named["id"]]
    assert listed("--definition", "other") == [other["id"]]
    assert listed("--name", "the-one") == [named["id"]]
    assert listed("--created-after", plain["create_time"]) == [other["id"], plain["id"]]
    assert listed("--created-before", plain["create_time"]) == [named["id"]]
    bad = cli(server, "jobs", "ls", "--created-after", "yesterday")
    assert bad.exit_code == 1 and "created_after" in bad.stderr
