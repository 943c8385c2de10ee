"""The client commands against a live server: definitions, submit (and --follow exit codes),
jobs, queues, --json output, secret safety and the errors a user sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import Result
from typer.testing import CliRunner

from orchestrator.cli import app

from ..conftest import TEST_IMAGE, LiveServer, free_port, wait_for

SHIPPED = Path(__file__).resolve().parents[2] / "definitions"
CANARY = "canary-Qw3rT9-value"


def client_env(target: LiveServer | str) -> dict[str, str]:
    """The CLI's environment for a server: its URL, and its data dir, where the CLI finds the
    admin token (a bare URL gets no token)."""
    if isinstance(target, str):
        return {"ORCH_URL": target, "ORCH_DATA_DIR": "/nonexistent"}
    return {"ORCH_URL": target.url, "ORCH_DATA_DIR": str(target.settings.data_dir)}


def cli(target: LiveServer | str, *args: str, **env: str | None) -> Result:
    """Run the CLI in-process against a server, with extra environment variables."""
    return CliRunner().invoke(
        app, list(args), env={**client_env(target), **env}, catch_exceptions=False
    )


def run(target: LiveServer | str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m orchestrator`` as a real process: real exit codes, real streams."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **client_env(target)},
        timeout=120,
    )


def ok(result: Result) -> str:
    """The stdout of a command that must succeed."""
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def as_json(result: Result) -> Any:
    return json.loads(ok(result))


def apply(server: LiveServer, *names: str) -> None:
    """Register shipped definitions through the CLI."""
    ok(cli(server, "definitions", "apply", *(str(SHIPPED / f"{n}.yaml") for n in names)))


def sh(name: str, script: str) -> dict[str, Any]:
    return {"name": name, "image": TEST_IMAGE, "command": ["sh", "-c", script]}


def test_apply_shipped_definitions_then_reapply_unchanged(
    server: LiveServer, tmp_path: Path
) -> None:
    files = sorted(p for p in SHIPPED.iterdir() if p.suffix in (".yaml", ".yml"))
    shipped = {"hello", "word-count", "use-secret", "flaky"}
    assert shipped <= {p.stem for p in files}

    lines = ok(cli(server, "definitions", "apply", str(SHIPPED))).splitlines()
    assert len(lines) == len(files)
    assert {f"{name}: version 1 (new)" for name in shipped} <= set(lines)

    again = as_json(cli(server, "definitions", "apply", str(SHIPPED), "--json"))
    assert len(again) == len(files)
    assert all(d["created"] is False and d["version"] == 1 for d in again)
    lines = ok(cli(server, "definitions", "apply", str(SHIPPED / "hello.yaml"))).splitlines()
    assert lines == ["hello: version 1 (unchanged)"]

    changed = tmp_path / "hello.yml"
    changed.write_text((SHIPPED / "hello.yaml").read_text() + "labels: {edited: 'yes'}\n")
    out = ok(cli(server, "definitions", "apply", str(changed)))
    assert out == "hello: version 2 (new)\n"

    table = ok(cli(server, "definitions", "ls")).splitlines()
    assert table[0].split() == ["NAME", "VERSION", "IMAGE", "DESCRIPTION"]
    assert ["hello", "2", TEST_IMAGE] in [row.split()[:3] for row in table]
    listed = as_json(cli(server, "definitions", "ls", "--json"))["items"]
    assert shipped <= {d["name"] for d in listed}
    assert server.http.get("/v1/projects/default/definitions/hello").json()["version"] == 2


def test_apply_with_an_invalid_file_names_it_and_registers_nothing(
    server: LiveServer, tmp_path: Path
) -> None:
    (tmp_path / "a-good.yaml").write_text(f"name: good\nimage: {TEST_IMAGE}\n")
    bad = tmp_path / "b-bad.yaml"
    bad.write_text(f"name: bad\nimage: {TEST_IMAGE}\ncommand: [echo]\ntimout: 1m\n")

    result = cli(server, "definitions", "apply", str(tmp_path))

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == f"error: {bad}:4: timout: unknown field\n"
    assert server.http.get("/v1/projects/default/definitions").json()["items"] == []


def test_apply_names_the_file_the_server_refused(server: LiveServer, tmp_path: Path) -> None:
    risky = tmp_path / "risky.yaml"
    risky.write_text(f"name: risky\nimage: {TEST_IMAGE}\nprivileged: true\n")

    result = cli(server, "definitions", "apply", str(risky))

    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {risky}: privileged: privileged mode is not allowed")
    assert "ORCH_POLICY_ALLOW_PRIVILEGED" in result.stderr


def test_apply_registers_every_file_or_none(
    make_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = make_server(policy_allowed_images=["docker.io/library/busybox:"], max_parameters=2)
    (tmp_path / "a-first.yaml").write_text(f"name: first\nimage: {TEST_IMAGE}\n")
    (tmp_path / "c-third.yaml").write_text(f"name: third\nimage: {TEST_IMAGE}\ncommand: [ls]\n")
    second = tmp_path / "b-second.yaml"

    def names() -> list[str]:
        items = server.http.get("/v1/projects/default/definitions").json()["items"]
        return [d["name"] for d in items]

    for spec, error in (
        # Found here, before any request.
        (f"image: {TEST_IMAGE}\ntimeout: soon\n", f"{second}:3: timeout: "),
        # Refused by the server: its container policy, its limits.
        (f"image: {TEST_IMAGE}\nprivileged: true\n", f"{second}: privileged: privileged mode"),
        ("image: registry.example.com/tool:1\n", f"{second}: image: 'registry.example.com/tool:1'"),
        (f"image: {TEST_IMAGE}\nparameters: {{a: 1, b: 2, c: 3}}\n", f"{second}: parameters: 3"),
    ):
        second.write_text(f"name: second\n{spec}")
        result = cli(server, "definitions", "apply", str(tmp_path))
        assert result.exit_code == 1
        assert result.stdout == ""
        assert result.stderr.startswith(f"error: {error}"), result.stderr
        assert result.stderr.count("\n") == 1
        assert names() == []

    second.write_text(f"name: second\nimage: {TEST_IMAGE}\n")
    lines = ok(cli(server, "definitions", "apply", str(tmp_path))).splitlines()
    assert lines == [f"{n}: version 1 (new)" for n in ("first", "second", "third")]
    assert names() == ["first", "second", "third"]
    again = as_json(cli(server, "definitions", "apply", str(tmp_path), "--json"))
    assert [(d["name"], d["version"], d["created"]) for d in again] == [
        (n, 1, False) for n in ("first", "second", "third")
    ]
    lines = ok(cli(server, "definitions", "apply", str(tmp_path))).splitlines()
    assert lines == [f"{n}: version 1 (unchanged)" for n in ("first", "second", "third")]


def test_submit_follow_prints_the_logs_and_exits_zero(server: LiveServer) -> None:
    apply(server, "hello")

    done = run(server, "submit", "hello", "-p", "who=cli", "--follow")

    assert done.returncode == 0, done.stderr
    assert done.stdout == "Hello, cli!\n"
    job_id, status = done.stderr.split()
    assert status in ("queued", "starting", "running")
    job = server.job(job_id)
    assert job["status"] == "succeeded"
    assert job["parameters"] == {"who": "cli"}


def test_follow_exits_with_the_exit_code_of_a_failing_job(server: LiveServer) -> None:
    server.register(sh("exit-seven", "echo before; exit 7"))

    done = run(server, "submit", "exit-seven", "--follow")
    assert done.returncode == 7
    assert done.stdout == "before\n"
    assert "error: the container exited with code 7" in done.stderr.splitlines()

    # --json --follow: stdout is the finished job, the logs went to stderr.
    done = run(server, "submit", "exit-seven", "--follow", "--json")
    assert done.returncode == 7
    job = json.loads(done.stdout)
    assert (job["status"], job["exit_code"]) == ("failed", 7)
    assert "before" in done.stderr


def test_input_from_a_file_reaches_the_output(server: LiveServer, tmp_path: Path) -> None:
    apply(server, "word-count")
    source = tmp_path / "input.json"
    source.write_text(json.dumps({"text": "one two three"}))

    result = cli(server, "submit", "word-count", "--input", f"@{source}", "-f", "--json")

    job = as_json(result)
    assert job["status"] == "succeeded"
    assert job["input"] == {"text": "one two three"}
    assert job["output"] == {"words": 3, "chars": 13}
    assert "counted 3 words" in result.stderr

    inline = as_json(cli(server, "submit", "word-count", "--input", "{}", "--json"))
    assert inline["input"] == {}
    for bad, reason in (("{text", "not valid JSON"), (f"@{tmp_path}/none.json", "cannot read")):
        result = cli(server, "submit", "word-count", "--input", bad)
        assert result.exit_code == 2
        assert reason in result.stderr
    assert len(server.http.get("/v1/projects/default/jobs").json()["items"]) == 2


def test_a_secret_value_is_never_printed(server: LiveServer) -> None:
    apply(server, "use-secret")
    secret = {"API_TOKEN": CANARY}

    followed = cli(server, "submit", "use-secret", "--secret", "API_TOKEN", "--follow", **secret)
    assert ok(followed) == "calling https://api.example.com with token ***\nok\n"
    job_id = followed.stderr.split()[0]
    as_script = cli(
        server, "submit", "use-secret", "--secret", "API_TOKEN", "-f", "--json", **secret
    )
    assert as_json(as_script)["secret_env"] == {"API_TOKEN": "***"}
    outputs = [followed, as_script]
    for command in ("get", "logs", "events"):
        for extra in ((), ("--json",)):
            outputs.append(cli(server, "jobs", command, job_id, *extra))
    outputs.append(cli(server, "jobs", "ls", "--json"))
    # A malformed --secret is refused without echoing it.
    outputs.append(cli(server, "submit", "use-secret", "--secret", CANARY))

    assert [r.exit_code for r in outputs] == [0] * (len(outputs) - 1) + [2]
    shown = {
        line.split(":", 1)[0]: line.split(":", 1)[1].strip()
        for line in outputs[2].stdout.splitlines()
    }
    assert shown["secret_env"] == '{"API_TOKEN":"***"}'
    assert "token ***" in outputs[4].stdout
    for result in outputs:
        assert CANARY not in result.stdout + result.stderr


def test_jobs_ls_get_cancel_logs_events(server: LiveServer) -> None:
    server.register(sh("slow", "trap 'exit 143' TERM; echo started; sleep 60 & wait $!"))
    follower = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "submit", "slow", "--name", "cli-slow", "-f"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **client_env(server)},
    )
    try:
        assert follower.stderr is not None
        job_id = follower.stderr.readline().split()[0]
        server.wait_job(job_id, {"running"})
        wait_for(lambda: server.logs(job_id) == "started\n")

        rows = [line.split() for line in ok(cli(server, "jobs", "ls")).splitlines()]
        assert rows[0][:3] == ["ID", "NAME", "DEFINITION"]
        assert rows[1][:7] == [job_id, "cli-slow", "slow:1", "default", "running", "1", "-"]
        running = as_json(cli(server, "jobs", "ls", "--status", "running", "--json"))
        assert [j["id"] for j in running["items"]] == [job_id]
        assert as_json(cli(server, "jobs", "ls", "--queue", "other", "--json"))["items"] == []
        assert cli(server, "jobs", "ls", "--status", "bogus").exit_code == 2
        fields = ok(cli(server, "jobs", "get", job_id)).splitlines()
        assert fields[0].split() == ["id:", job_id]
        assert ["status:", "running"] in [line.split() for line in fields]

        cancelled = ok(cli(server, "jobs", "cancel", job_id))
        assert cancelled == f"{job_id} cancel requested (status: running)\n"
        stdout, _ = follower.communicate(timeout=60)
    finally:
        follower.kill()
        follower.wait()
    assert follower.returncode == 130
    assert stdout == "started\n"

    assert ok(cli(server, "jobs", "logs", job_id)) == "started\n"
    assert as_json(cli(server, "jobs", "logs", job_id, "-f", "--json"))["logs"] == "started\n"
    types = [row.split()[1] for row in ok(cli(server, "jobs", "events", job_id)).splitlines()]
    assert types[0] == "TYPE"
    assert types[-2:] == ["cancel_requested", "cancelled"]
    shown = [line.split() for line in ok(cli(server, "jobs", "get", job_id)).splitlines()]
    assert ["reason:", "cancelled"] in shown
    again = cli(server, "jobs", "cancel", job_id)
    assert again.exit_code == 1
    assert again.stderr == f"error: job {job_id} is already cancelled\n"
    missing = cli(server, "jobs", "get", "no-such-job")
    assert missing.exit_code == 1
    assert missing.stderr == "error: job 'no-such-job' not found in project 'default'\n"


def test_queues_create_ls_pause_resume_delete(server: LiveServer) -> None:
    created = ok(
        cli(server, "queues", "create", "batch", "--priority", "5", "--max-concurrency", "2")
    ).splitlines()
    header = ["NAME", "PRIORITY", "MAX_CONCURRENCY", "PAUSED", "WAITING", "RUNNING"]
    assert created[0].split() == header
    assert created[1].split() == ["batch", "5", "2", "no", "0", "0"]
    held = as_json(
        cli(
            server,
            "queues",
            "create",
            "held",
            "--paused",
            "--display-name",
            "On hold",
            "--json",
        )
    )
    assert (held["paused"], held["display_name"]) == (True, "On hold")

    def row(name: str) -> list[str]:
        table = ok(cli(server, "queues", "ls")).splitlines()
        return next(line.split() for line in table if line.split()[0] == name)

    assert row("default") == ["default", "0", "-", "no", "0", "0"]
    assert ok(cli(server, "queues", "pause", "batch")).splitlines()[1].split()[3] == "yes"
    assert server.http.get("/v1/projects/default/queues/batch").json()["paused"] is True
    assert row("batch")[3] == "yes"
    resumed = as_json(cli(server, "queues", "resume", "batch", "--json"))
    assert resumed["paused"] is False

    duplicate = cli(server, "queues", "create", "batch")
    assert duplicate.exit_code == 1
    assert duplicate.stderr.startswith("error: ") and duplicate.stderr.count("\n") == 1
    assert ok(cli(server, "queues", "delete", "batch")) == "deleted queue batch\n"
    names = [q["name"] for q in as_json(cli(server, "queues", "ls", "--json"))["items"]]
    assert sorted(names) == ["default", "held"]
    gone = cli(server, "queues", "delete", "batch", "--project", "default")
    assert gone.exit_code == 1
    assert "not found" in gone.stderr
    other = cli(server, "queues", "ls", "--project", "elsewhere")
    assert (other.exit_code, other.stderr) == (1, "error: project 'elsewhere' not found\n")


def test_an_unreachable_server_is_one_line_and_exit_1() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = run(url, "jobs", "ls")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert url in done.stderr and "ORCH_URL" in done.stderr
    for args in (("definitions", "ls"), ("submit", "hello", "-f"), ("queues", "ls", "--json")):
        result = cli(url, *args)
        assert result.exit_code == 1
        assert result.stderr == done.stderr


def test_usage_errors_exit_2_before_any_request() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: a request would exit 1
    for args, message in (
        (("submit", "hello", "-p", "who"), "'who' is not KEY=VALUE"),
        (("submit", "hello", "--env", "=x"), "'=x' is not KEY=VALUE"),
        (("submit", "hello", "--timeout", "3x"), "not a duration"),
        (("jobs", "ls", "--limit", "0"), "--limit"),
        (("definitions", "apply", "/no/such/dir"), "does not exist"),
    ):
        result = cli(url, *args)
        assert result.exit_code == 2, args
        assert message in result.stderr, result.stderr
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
