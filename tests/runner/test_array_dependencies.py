"""Arrays and dependencies together, with real containers (SQLite and PostgreSQL): fan-out then
fan-in (a job that depends on an array reads its children's outputs), an array that waits for
a job and gets its output as every child's input, and an array whose dependency fails."""

from __future__ import annotations

import itertools
from typing import Any

from ..conftest import TEST_IMAGE, LiveServer

JOBS = "/v1/projects/default/jobs"
QUEUES = "/v1/projects/default/queues"
# Each shard writes its index times ten, plus what it was handed, as its output.
SHARD = (
    'echo "{\\"value\\": $((ORCH_ARRAY_INDEX * 10)), \\"got\\": $(cat "$ORCH_INPUT")}" '
    '> "$ORCH_OUTPUT"'
)
# Sums the shards' values from its input, ``{"<array id>": [{"value": ...}, ...]}``.
REDUCE = (
    'tr "," "\\n" < "$ORCH_INPUT" | grep -o "\\"value\\": [0-9]*" | grep -o "[0-9]*$" '
    '| { s=0; while read n; do s=$((s + n)); done; echo "{\\"sum\\": $s}"; } > "$ORCH_OUTPUT"'
)


def register(server: LiveServer) -> None:
    for name, script in (("shard", SHARD), ("reduce", REDUCE)):
        server.register({"name": name, "image": TEST_IMAGE, "command": ["sh", "-c", script]})
    server.register(
        {"name": "fails", "image": TEST_IMAGE, "command": ["sh", "-c", "exit 4"]},
    )
    server.register(
        {
            "name": "seed",
            "image": TEST_IMAGE,
            "command": ["sh", "-c", 'echo \'{"seed": 7}\' > "$ORCH_OUTPUT"'],
        }
    )


def children(server: LiveServer, parent: str) -> list[dict[str, Any]]:
    response = server.http.get(f"{JOBS}/{parent}/children", params={"fields": "input,output"})
    assert response.status_code == 200, response.text
    return sorted(response.json()["items"], key=lambda child: child["array_index"])


def test_fan_out_then_fan_in_reads_every_childs_output(server: LiveServer) -> None:
    register(server)
    shards = server.submit(definition="shard", array={"size": 4})
    total = server.submit(
        definition="reduce", depends_on=[{"job": shards["id"]}], input={"from": [shards["id"]]}
    )
    done = server.wait_job(total["id"])
    assert done["status"] == "succeeded", done
    # The array's output is its children's, by index; the reducer read them all.
    parent = server.job(shards["id"])
    assert [item["value"] for item in parent["output"]] == [0, 10, 20, 30]
    assert done["input"] == {shards["id"]: parent["output"]}
    assert done["output"] == {"sum": 60}


def test_an_array_waits_for_its_dependency_and_each_child_gets_its_output(
    server: LiveServer,
) -> None:
    register(server)
    server.http.post(QUEUES, json={"name": "held", "paused": True})
    seed = server.submit(definition="seed", queue="held")["id"]
    shards = server.submit(
        definition="shard", array={"size": 3}, depends_on=[{"job": seed}], input={"from": [seed]}
    )
    assert shards["status"] == "pending"
    assert shards["children"]["pending"] == 3
    assert all(child["status"] == "pending" for child in children(server, shards["id"]))

    server.http.patch(f"{QUEUES}/held", json={"paused": False})
    done = server.wait_job(shards["id"])
    assert done["status"] == "succeeded", done
    got = children(server, shards["id"])
    assert [child["output"] for child in got] == [
        {"value": 10 * n, "got": {seed: {"seed": 7}}} for n in range(3)
    ]
    released = [e for e in server.events(got[0]["id"]) if e["type"] == "queued"]
    assert [e["detail"] for e in released] == [{"released_by": shards["id"]}]


def test_an_array_whose_dependency_fails_fails_with_every_child(server: LiveServer) -> None:
    register(server)
    server.http.post(QUEUES, json={"name": "held", "paused": True})
    doomed = server.submit(definition="fails", queue="held")["id"]
    shards = server.submit(definition="shard", array={"size": 3}, depends_on=[{"job": doomed}])
    # A job waiting on one child is settled with it.
    child = children(server, shards["id"])[1]["id"]
    after_child = server.submit(definition="seed", depends_on=[{"job": child}])

    server.http.patch(f"{QUEUES}/held", json={"paused": False})
    failed = server.wait_job(after_child["id"])
    parent = server.job(shards["id"])
    assert (parent["status"], parent["reason"]) == ("failed", "dependency_failed")
    assert parent["children"]["failed"] == 3
    for each in children(server, shards["id"]):
        assert (each["status"], each["reason"]) == ("failed", "dependency_failed")
        assert each["exit_code"] is None
    assert (failed["status"], failed["reason"]) == ("failed", "dependency_failed")
    # The parent's one webhook-worthy end is recorded once.
    ends = [e for e in server.events(shards["id"]) if e["type"] == "failed"]
    assert len(ends) == 1


def times(server: LiveServer, job: dict[str, Any]) -> tuple[str, str]:
    shown = server.job(job["id"])
    return shown["start_time"], shown["finish_time"]


def test_n_to_n_runs_child_i_after_child_i_and_fails_only_its_pair(server: LiveServer) -> None:
    register(server)
    # Child 1 of the first array fails; the others succeed.
    server.register(
        {
            "name": "odd-one",
            "image": TEST_IMAGE,
            "command": [
                "sh",
                "-c",
                'sleep 0.$((3 - ORCH_ARRAY_INDEX)); [ "$ORCH_ARRAY_INDEX" != 1 ]',
            ],
        }
    )
    first = server.submit(definition="odd-one", array={"size": 3})
    second = server.submit(
        definition="shard", array={"size": 3}, depends_on=[{"job": first["id"], "type": "N_TO_N"}]
    )
    (shown,) = second["depends_on"]
    assert {k: shown[k] for k in ("job", "type", "on")} == {
        "job": first["id"],
        "type": "N_TO_N",
        "on": "succeeded",
    }
    done = server.wait_job(second["id"])
    assert done["status"] == "failed"
    befores, afters = children(server, first["id"]), children(server, second["id"])
    assert [c["status"] for c in befores] == ["succeeded", "failed", "succeeded"]
    assert [(c["status"], c["reason"]) for c in afters] == [
        ("succeeded", None),
        ("failed", "dependency_failed"),
        ("succeeded", None),
    ]
    for before, after in zip(befores, afters, strict=True):
        assert server.job(after["id"])["depends_on"][0]["job"] == before["id"]
        if after["status"] == "succeeded":
            assert times(server, after)[0] >= times(server, before)[1]


def test_sequential_runs_children_one_after_another(server: LiveServer) -> None:
    register(server)
    server.register(
        {
            "name": "stops-at-2",
            "image": TEST_IMAGE,
            "command": ["sh", "-c", '[ "$ORCH_ARRAY_INDEX" != 2 ]'],
        }
    )
    chain = server.submit(
        definition="shard", array={"size": 3}, depends_on=[{"type": "SEQUENTIAL"}]
    )
    assert chain["depends_on"][0]["type"] == "SEQUENTIAL"
    assert chain["children"]["pending"] == 2
    assert server.wait_job(chain["id"])["status"] == "succeeded"
    ran = children(server, chain["id"])
    for before, after in itertools.pairwise(ran):
        assert times(server, after)[0] >= times(server, before)[1]

    # A failure stops the chain: the children after it fail with dependency_failed.
    stops = server.submit(
        definition="stops-at-2", array={"size": 4}, depends_on=[{"type": "SEQUENTIAL"}]
    )
    assert server.wait_job(stops["id"])["status"] == "failed"
    assert [(c["status"], c["reason"]) for c in children(server, stops["id"])] == [
        ("succeeded", None),
        ("succeeded", None),
        ("failed", "exit_code"),
        ("failed", "dependency_failed"),
    ]


def test_child_to_child_forms_are_checked(server: LiveServer) -> None:
    register(server)
    three = server.submit(definition="shard", array={"size": 3})["id"]
    plain = server.submit(definition="seed")["id"]

    def refused(**body: Any) -> dict[str, Any]:
        response = server.http.post(JOBS, json={"definition": "shard", **body})
        assert response.status_code in (400, 422), response.text
        return dict(response.json())

    wrong_size = refused(array={"size": 2}, depends_on=[{"job": three, "type": "N_TO_N"}])
    assert wrong_size["field"] == "depends_on.0.type" and "2 children" in wrong_size["message"]
    assert (
        refused(array={"size": 3}, depends_on=[{"job": plain, "type": "N_TO_N"}])["field"]
        == "depends_on.0.type"
    )
    assert refused(depends_on=[{"job": three, "type": "N_TO_N"}])["field"] == "depends_on.0.type"
    assert (
        "names no job"
        in refused(array={"size": 3}, depends_on=[{"job": three, "type": "SEQUENTIAL"}])["message"]
    )
    assert "required" in refused(array={"size": 3}, depends_on=[{"on": "finished"}])["message"]
