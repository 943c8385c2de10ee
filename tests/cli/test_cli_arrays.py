"""``orchestrator submit --array N`` against a live server (SQLite and PostgreSQL): the array
runs, ``jobs ls`` shows the parent with its children's counts (not the children), ``jobs get``
shows them too, and a size out of range is refused naming ``array.size``."""

from __future__ import annotations

from ..conftest import LiveServer
from .test_cli import as_json, cli, ok, sh


def test_submit_array_then_list_and_get_show_the_childrens_counts(server: LiveServer) -> None:
    server.register(sh("shard", 'echo "shard $ORCH_ARRAY_INDEX"'))
    job = as_json(cli(server, "submit", "shard", "--array", "3", "--json"))
    assert job["array_size"] == 3
    done = server.wait_job(job["id"])
    assert done["status"] == "succeeded"
    listed = ok(cli(server, "jobs", "ls")).splitlines()
    assert listed[0].split()[-1] == "CHILDREN"
    # One row: the parent, with its counts; its children are not listed one by one.
    assert len(listed) == 2
    assert listed[1].startswith(job["id"])
    assert listed[1].endswith("3: 3 succeeded")
    shown = ok(cli(server, "jobs", "get", job["id"]))
    assert "children:" in shown and "3: 3 succeeded" in shown
    assert "array_size:" in shown


def test_submit_array_out_of_range_names_array_size(server: LiveServer) -> None:
    server.register(sh("shard", "true"))
    result = cli(server, "submit", "shard", "--array", "1")
    assert result.exit_code != 0
    assert "array.size" in result.stderr
