"""``submit --depends-on`` and ``jobs get`` against a live server (SQLite and PostgreSQL): the
README's chain, run with the shipped definitions."""

from __future__ import annotations

import json

from orchestrator.cli.depends_on import depends_on_option

from ..conftest import LiveServer
from .test_cli import apply, as_json, cli, ok


def test_the_readme_chain_runs_and_jobs_get_shows_the_dependencies(server: LiveServer) -> None:
    apply(server, "word-count", "show-input", "hello")
    text = '{"text": "the quick brown fox"}'
    count = as_json(cli(server, "submit", "word-count", "--input", text, "--json"))["id"]
    shown = as_json(
        cli(
            server,
            "submit",
            "show-input",
            "--depends-on",
            count,
            "--input",
            json.dumps({"from": [count]}),
            "--json",
        )
    )["id"]
    followed = cli(
        server,
        "submit",
        "hello",
        "-p",
        "who=chain",
        "--depends-on",
        f"{shown}:finished",
        "--follow",
    )
    assert "Hello, chain!" in ok(followed)

    job = as_json(cli(server, "jobs", "get", shown, "--json"))
    assert job["output"] == job["input"] == {count: {"words": 4, "chars": 19}}
    assert job["depends_on"] == [
        {"job": count, "type": None, "on": "succeeded", "status": "succeeded"}
    ]
    assert job["dependents"] == 1
    printed = dict(
        line.split(":", 1) for line in ok(cli(server, "jobs", "get", shown)).splitlines()
    )
    assert printed["depends_on"].strip() == f"{count} (succeeded: succeeded)"
    assert printed["dependents"].strip() == "1"


def test_depends_on_takes_known_words_off_the_end_of_an_id() -> None:
    assert depends_on_option(
        [
            "a1",
            "b2:finished",
            "p:3",
            "p:4:succeeded",
            "q:N_TO_N:finished",
            "SEQUENTIAL",
            "SEQUENTIAL:finished",
        ]
    ) == [
        {"job": "a1"},
        {"job": "b2", "on": "finished"},
        {"job": "p:3"},
        {"job": "p:4", "on": "succeeded"},
        {"job": "q", "type": "N_TO_N", "on": "finished"},
        {"type": "SEQUENTIAL"},
        {"type": "SEQUENTIAL", "on": "finished"},
    ]


def test_the_readme_fan_out_and_fan_in_adds_up_every_shard(server: LiveServer) -> None:
    apply(server, "square", "sum-squares")
    shards = as_json(cli(server, "submit", "square", "--array", "5", "--json"))["id"]
    followed = cli(
        server,
        "submit",
        "sum-squares",
        "--depends-on",
        shards,
        "--input",
        json.dumps({"from": [shards]}),
        "--follow",
    )
    assert "5 shards, sum 30" in ok(followed)
    array = as_json(cli(server, "jobs", "get", shards, "--json"))
    assert array["output"] == [{"n": n, "square": n * n} for n in range(5)]
    assert array["dependents"] == 1
