"""``jobs get`` and ``jobs attempts`` show each attempt and how it ended, against a live server
(SQLite and PostgreSQL), with the shipped ``flaky`` definition."""

from __future__ import annotations

from ..conftest import LiveServer
from .test_cli import apply, as_json, cli, ok


def test_jobs_get_and_jobs_attempts_show_each_attempts_outcome(server: LiveServer) -> None:
    apply(server, "flaky")
    job = as_json(cli(server, "submit", "flaky", "-p", "succeed_on=2", "--json"))["id"]
    ok(cli(server, "jobs", "logs", job, "--follow"))

    printed = dict(line.split(":", 1) for line in ok(cli(server, "jobs", "get", job)).splitlines())
    assert printed["attempts"].strip() == "#1 retrying (exit_code, exit 3); #2 succeeded"

    table = ok(cli(server, "jobs", "attempts", job)).splitlines()
    assert table[0].split()[:4] == ["ATTEMPT", "OUTCOME", "EXIT", "REASON"]
    assert [row.split()[:4] for row in table[1:]] == [
        ["1", "retrying", "3", "exit_code"],
        ["2", "succeeded", "0", "-"],
    ]
    listed = as_json(cli(server, "jobs", "attempts", job, "--json"))["items"]
    assert [attempt["outcome"] for attempt in listed] == ["retrying", "succeeded"]
