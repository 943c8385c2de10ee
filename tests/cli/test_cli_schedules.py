"""``orchestrator schedules`` against a live server: create from flags and from files, list,
show, preview, pause and resume, trigger and runs, delete; secret safety and the errors a user
sees."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

from click.testing import Result
from typer.testing import CliRunner

from orchestrator.cli import app

from ..conftest import TEST_IMAGE, LiveServer, free_port, wait_for
from ..receiver import Receiver
from .test_cli import CANARY, as_json, client_env, ok

OTHER_CANARY = "canary-Zx8vB2-other"


def cli(target: LiveServer | str, *args: str, **env: str) -> Result:
    """Run the CLI in-process against a server, with extra environment variables."""
    return CliRunner().invoke(
        app, list(args), env={**client_env(target), **env}, catch_exceptions=False
    )


def rows(text: str) -> list[dict[str, str]]:
    """A table's rows as {HEADER: cell}; columns are cut where their headers start (cells may
    hold spaces: a cron expression, an outcome)."""
    header, *lines = text.splitlines()
    labels = list(re.finditer(r"\S+(?: \S+)*", header))
    starts = [m.start() for m in labels] + [None]
    return [
        {m.group(): line[starts[i] : starts[i + 1]].strip() for i, m in enumerate(labels)}
        for line in lines
    ]


def row(server: LiveServer, name: str) -> dict[str, str]:
    listed = rows(ok(cli(server, "schedules", "ls")))
    return next(r for r in listed if r["NAME"] == name)


def register_nightly(server: LiveServer) -> None:
    server.register(
        {
            "name": "nightly",
            "image": TEST_IMAGE,
            "command": ["sh", "-c", "echo backup for Param::who with $API_TOKEN"],
            "parameters": {"who": "world"},
            "secrets": ["API_TOKEN"],
        }
    )


def test_a_job_schedule_from_flags_through_its_whole_life(server: LiveServer) -> None:
    register_nightly(server)
    outputs: list[Result] = []

    def run(*args: str) -> Result:
        result = cli(server, "schedules", *args, OTHER_TOKEN=OTHER_CANARY, SOURCE=CANARY)
        outputs.append(result)
        return result

    created = run(
        "create",
        "nightly",
        "--cron",
        "0 2 * * *",
        "--tz",
        "Europe/Paris",
        "--definition",
        "nightly",
        "--param",
        "who=cli",
        "--secret-env",
        "API_TOKEN=env:SOURCE",  # the value of $SOURCE
        "--secret-env",
        "OTHER_TOKEN",  # its value from the environment variable of its name
        "--overlap",
        "skip",
        "--missed-window",
        "5m",
    )
    (made,) = rows(ok(created))
    assert made["NAME"] == "nightly" and made["WHEN"] == "0 2 * * *"
    assert (made["TZ"], made["TARGET"], made["STATUS"]) == ("Europe/Paris", "job nightly", "active")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:00:00Z", made["NEXT RUN"])
    assert made["LAST OUTCOME"] == "-"

    shown = json.loads(ok(run("show", "nightly")))
    job = shown["target"]["job"]
    assert job["secret_env"] == {"API_TOKEN": "***", "OTHER_TOKEN": "***"}
    assert (job["definition"], job["parameters"]) == ("nightly", {"who": "cli"})
    assert (shown["overlap"], shown["missed_window"]) == ("skip", 300)
    assert json.loads(ok(run("show", "nightly", "--json"))) == shown

    preview = rows(ok(run("preview", "nightly", "--count", "3")))
    assert len(preview) == 3
    for item in preview:
        local, utc = datetime.fromisoformat(item["LOCAL"]), datetime.fromisoformat(item["UTC"])
        assert (local.hour, local.minute) == (2, 0)
        assert local.utcoffset() in (timedelta(hours=1), timedelta(hours=2))  # CET, CEST
        assert utc.utcoffset() == timedelta(0)
        assert local == utc
    assert len(as_json(run("preview", "nightly", "--json"))["items"]) == 10

    (paused,) = rows(ok(run("pause", "nightly")))
    assert (paused["STATUS"], paused["NEXT RUN"]) == ("paused", "-")
    assert row(server, "nightly")["STATUS"] == "paused"
    resumed = as_json(run("resume", "nightly", "--json"))
    assert (resumed["status"], resumed["paused"]) == ("active", False)
    assert row(server, "nightly")["STATUS"] == "active"

    (fired,) = rows(ok(run("trigger", "nightly")))
    job_id = fired["JOB"]
    assert (fired["TRIGGER"], fired["STATUS"]) == ("manual", "queued")
    assert server.wait_job(job_id)["status"] == "succeeded"
    assert server.logs(job_id) == "backup for cli with ***\n"
    listed = rows(ok(run("runs", "nightly")))
    assert list(listed[0]) == ["TIME", "TRIGGER", "STATUS", "JOB", "ATTEMPTS", "DETAIL"]
    mine = next(r for r in listed if r["JOB"] == job_id)
    assert (mine["TRIGGER"], mine["STATUS"], mine["DETAIL"]) == ("manual", "succeeded", "-")
    page = as_json(run("runs", "nightly", "--limit", "1", "--json"))
    assert [r["job_id"] for r in page["items"]] == [job_id] and page["next_cursor"]
    assert row(server, "nightly")["LAST OUTCOME"] == f"job {job_id} succeeded"
    outputs.append(cli(server, "jobs", "get", job_id, "--json"))
    assert as_json(outputs[-1])["secret_env"] == {"API_TOKEN": "***", "OTHER_TOKEN": "***"}

    assert ok(run("delete", "nightly")) == "deleted schedule nightly\n"
    assert as_json(run("ls", "--json"))["items"] == []
    for result in outputs:
        assert CANARY not in result.stdout + result.stderr
        assert OTHER_CANARY not in result.stdout + result.stderr


def test_schedules_from_files_http_and_job_listed_together(
    server: LiveServer, receiver: Receiver, tmp_path: Path
) -> None:
    register_nightly(server)
    hook = tmp_path / "hook.yaml"
    hook.write_text(
        "name: ignored-the-argument-wins\n"
        "cron: '*/15 * * * *'\n"
        "timezone: America/New_York\n"
        "target:\n"
        "  http:\n"
        f"    url: {receiver.url}/hook\n"
        "    headers: {X-Source: cli}\n"
        f"    secret_headers: {{Authorization: Bearer {CANARY}}}\n"
        "    body: {ping: true}\n"
        "    timeout: 10s\n"
        "    retry_delays: [0, 1s]\n"
        "overlap: allow\n"
    )
    made = as_json(cli(server, "schedules", "create", "hook", "-f", str(hook), "--json"))
    assert made["name"] == "hook"
    assert made["target"]["http"]["secret_headers"] == {"Authorization": "***"}
    # JSON on stdin: a one-shot far ahead, created paused.
    job_body = {
        "run_at": "2099-01-01T09:00:00Z",
        "target": {"job": {"definition": "nightly", "secret_env": {"API_TOKEN": "s3cr3t-x"}}},
        "paused": True,
    }
    stdin = CliRunner().invoke(
        app,
        ["schedules", "create", "later", "-f", "-"],
        input=json.dumps(job_body),
        env=client_env(server),
        catch_exceptions=False,
    )
    ok(stdin)

    listed = {r["NAME"]: r for r in rows(ok(cli(server, "schedules", "ls")))}
    assert set(listed) == {"hook", "later"}
    assert listed["hook"]["WHEN"] == "*/15 * * * *"
    assert listed["hook"]["TZ"] == "America/New_York"
    assert listed["hook"]["TARGET"] == f"http POST {receiver.url}/hook"
    assert listed["hook"]["STATUS"] == "active"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:00Z", listed["hook"]["NEXT RUN"])
    assert listed["later"] == {
        "NAME": "later",
        "WHEN": "at 2099-01-01T09:00:00Z",
        "TZ": "UTC",
        "TARGET": "job nightly",
        "STATUS": "paused",
        "NEXT RUN": "-",
        "LAST OUTCOME": "-",
    }
    (one_shot,) = rows(ok(cli(server, "schedules", "preview", "later", "--count", "3")))
    assert one_shot == {"LOCAL": "2099-01-01T09:00:00Z", "UTC": "2099-01-01T09:00:00Z"}

    (fired,) = rows(ok(cli(server, "schedules", "trigger", "hook")))
    assert (fired["TRIGGER"], fired["STATUS"], fired["HTTP"]) == ("manual", "pending", "-")
    (request,) = receiver.wait_for_requests(1)
    assert request.headers["authorization"] == f"Bearer {CANARY}"
    assert (request.path, request.body) == ("/hook", b'{"ping":true}')

    def finished() -> dict[str, str] | None:
        runs = rows(ok(cli(server, "schedules", "runs", "hook")))
        return runs[0] if runs[0]["STATUS"] == "succeeded" else None

    done = wait_for(finished)
    assert (done["HTTP"], done["ATTEMPTS"], done["DETAIL"]) == ("200", "1", "-")
    shown = ok(cli(server, "schedules", "show", "hook"))
    assert CANARY not in shown and '"Authorization": "***"' in shown


def test_errors_are_one_line_with_the_servers_message(server: LiveServer, tmp_path: Path) -> None:
    for command in ("show", "pause", "resume", "trigger", "runs", "preview", "delete"):
        missing = cli(server, "schedules", command, "nope")
        assert missing.exit_code == 1, command
        assert missing.stdout == ""
        assert missing.stderr == "error: schedule 'nope' not found in project 'default'\n"

    refused = cli(
        server, "schedules", "create", "bad", "--cron", "61 * * * *", "--url", "http://a.example/"
    )
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: ") and refused.stderr.count("\n") == 1
    assert "cron" in refused.stderr

    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text(
        "cron: '@daily'\ntarget: {http: {url: 'http://a.example/', method: BREW}}\n"
    )
    named = cli(server, "schedules", "create", "bad", "-f", str(bad_file))
    assert named.exit_code == 1
    assert named.stderr.startswith(f"error: {bad_file}: ") and "method" in named.stderr

    ok(cli(server, "schedules", "create", "twice", "--cron", "@daily", "--url", "http://a/"))
    again = cli(server, "schedules", "create", "twice", "--cron", "@daily", "--url", "http://a/")
    assert (again.exit_code, again.stderr) == (
        1,
        "error: a schedule named 'twice' already exists\n",
    )
    other = cli(server, "schedules", "ls", "--project", "elsewhere")
    assert (other.exit_code, other.stderr) == (1, "error: project 'elsewhere' not found\n")


def test_usage_errors_exit_2_before_any_request(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: a request would exit 1
    not_a_mapping = tmp_path / "list.yaml"
    not_a_mapping.write_text("- a\n- b\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\ncron: [\n")
    job = ("--cron", "@daily", "--definition", "d")
    for args, words in (
        (
            ("--cron", "@daily", "--definition", "d", "--url", "http://a/"),
            ["--definition", "--url"],
        ),
        (("--cron", "@daily"), ["--definition", "--url", "give a job or an HTTP target"]),
        (("--definition", "d"), ["--cron", "--at"]),
        (("--cron", "@daily", "--at", "2030-01-01T00:00:00Z", "--definition", "d"), ["--at"]),
        ((*job, "--param", "who"), ["--param", "'who' is not KEY=VALUE"]),
        ((*job, "--env", "=x"), ["--env", "'=x' is not KEY=VALUE"]),
        ((*job, "--secret-env", "NO_SUCH_VAR_SET"), ["--secret-env", "no terminal to ask on"]),
        ((*job, "--secret-env", "API_TOKEN=s3cr3t"), ["--secret-env", "not taken from the"]),
        (("--cron", "@daily", "--method", "GET"), ["--url", "required with --method"]),
        (("--cron", "@daily", "--url", "u", "--header", "X-A"), ["--header", "NAME:VALUE"]),
        (("--cron", "@daily", "--url", "u", "--retry-delays", "0,5x"), ["--retry-delays"]),
        ((*job, "--missed-window", "soon"), ["--missed-window", "not a duration"]),
        ((*job, "--overlap", "sometimes"), ["--overlap"]),
        (("-f", str(tmp_path / "none.yaml")), ["--file", "cannot read"]),
        (("-f", str(not_a_mapping)), ["--file", "a schedule must be a mapping"]),
        (("-f", str(broken)), ["--file", f"{broken}:3: invalid YAML"]),
        (("-f", str(broken), "--cron", "@daily", "--paused"), ["--file", "drop --cron, --paused"]),
    ):
        result = cli(url, "schedules", "create", "x", *args)
        assert result.exit_code == 2, (args, result.stderr)
        # Unwrap the error box and compare without white space: the box breaks lines wherever
        # the message (here a temporary path of any length) reaches its edge.
        text = "".join(re.sub(r"[│╭╮╰╯─]", " ", result.stderr).split())
        for word in words:
            assert "".join(word.split()) in text, (args, result.stderr)
    for value in (CANARY, f"API_TOKEN={CANARY}"):
        leaked = cli(url, "schedules", "create", "x", *job, "--secret-env", value)
        assert leaked.exit_code == 2 and CANARY not in leaked.stderr
    for args in (("runs", "x", "--limit", "0"), ("preview", "x", "--count", "101")):
        assert cli(url, "schedules", *args).exit_code == 2, args
