"""SaladCloud's Queue API, drop-in: the official ``salad-cloud-sdk``, unmodified, against a live
server (only its base URL changed), on SQLite and PostgreSQL; webhooks verified with ``svix``;
responses validated against SaladCloud's published OpenAPI document (``specs/``)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import docker
import httpx
import jsonschema_rs
import pytest
import standardwebhooks.webhooks
import yaml
from salad_cloud_sdk import SaladCloudSdk
from salad_cloud_sdk.models import QueueJobPrototype, QueuePatch, QueuePrototype
from svix.webhooks import Webhook

from orchestrator.services.salad import shown_command
from orchestrator.storage.models import ApiSecret, utcnow
from tests.conftest import TEST_IMAGE, LiveServer, admin_token, wait_for
from tests.receiver import Receiver
from tests.workers import READY_PATH, WORKER_PATH, WORKER_PORT, worker_image  # noqa: F401

ORG = "acme-corp"
PROJECT = "default"
PROBLEM = "application/problem+json"
# SaladCloud's published OpenAPI document, as it was given (MIT licence).
SALAD_SPEC = Path(__file__).parent / "specs" / "salad-cloud-openapi-0.9.0-alpha.17.yaml"


@functools.cache
def _validator(schema: str) -> jsonschema_rs.Validator:
    components = yaml.safe_load(SALAD_SPEC.read_text())["components"]
    root = {"$ref": f"#/components/schemas/{schema}", "components": components}
    return jsonschema_rs.Draft202012Validator(root, validate_formats=True)


def assert_salad_valid(instance: Any, schema: str) -> None:
    """``instance`` validates against the schema SaladCloud's document names ``schema``."""
    errors = [
        f"{'/'.join(map(str, error.instance_path))}: {error.message}"
        for error in _validator(schema).iter_errors(instance)
    ]
    assert errors == [], errors


# Run to completion: the output is the input's "n" doubled, written to $ORCH_OUTPUT.
DOUBLER = {
    "name": "doubler",
    "image": TEST_IMAGE,
    "command": [
        "sh",
        "-c",
        'n=$(sed -n "s/.*\\"n\\": *\\([0-9]*\\).*/\\1/p" "$ORCH_INPUT"); '
        'echo "{\\"doubled\\": $((n * 2))}" > "$ORCH_OUTPUT"',
    ],
}


def plain(value: Any) -> Any:
    """An SDK enum's value (the SDK returns some as enums, some as strings)."""
    return getattr(value, "value", value)


def sdk_for(server: LiveServer) -> SaladCloudSdk:
    """The official SDK, pointed at the server: the one line a SaladCloud user changes."""
    return SaladCloudSdk(
        api_key=admin_token(server.settings), base_url=f"{server.url}/api/public", timeout=30_000
    )


def set_default(server: LiveServer, queue: str, definition: str | None) -> None:
    """Give the queue its default definition through the native API."""
    response = server.http.patch(
        f"/v1/projects/default/queues/{queue}", json={"default_definition": definition}
    )
    assert response.status_code == 200, response.text


def wait_salad_job(sdk: SaladCloudSdk, queue: str, job_id: str, timeout: float = 90.0) -> Any:
    """Wait until the job is finished (as the SDK sees it); the SDK's job."""

    def done() -> Any:
        job = sdk.queues.get_queue_job(ORG, PROJECT, queue, job_id)
        return job if plain(job.status) in ("succeeded", "failed", "cancelled") else None

    return wait_for(done, timeout)


def test_every_queue_method_of_the_sdk(make_server: Callable[..., LiveServer]) -> None:
    server = make_server()
    sdk = sdk_for(server)
    server.register(DOUBLER)

    created = sdk.queues.create_queue(
        QueuePrototype(name="renders", display_name="Renders", description="frames"),
        ORG,
        PROJECT,
    )
    assert (created.name, created.display_name, created.description) == (
        "renders",
        "Renders",
        "frames",
    )
    assert created.container_groups == [] and created.current_queue_length == 0
    assert "renders" in [queue.name for queue in sdk.queues.list_queues(ORG, PROJECT).items]

    updated = sdk.queues.update_queue(
        QueuePatch(display_name="Frames", description=None), ORG, PROJECT, "renders"
    )
    assert updated.display_name == "Frames" and updated.id_ == created.id_
    assert sdk.queues.get_queue(ORG, PROJECT, "renders").display_name == "Frames"

    set_default(server, "renders", "doubler")
    job = sdk.queues.create_queue_job(
        QueueJobPrototype(input={"n": 21}, metadata={"frame": 7}), ORG, PROJECT, "renders"
    )
    assert plain(job.status) in ("pending", "running") and job.input == {"n": 21}
    finished = wait_salad_job(sdk, "renders", job.id_)
    assert plain(finished.status) == "succeeded", server.job(job.id_)
    assert finished.output == {"doubled": 42}
    assert finished.metadata == {"frame": 7}
    assert [plain(event.action) for event in finished.events] == [
        "created",
        "started",
        "succeeded",
    ]

    # A job in a paused queue waits; deleting it cancels it (202).
    paused = server.http.patch("/v1/projects/default/queues/renders", json={"paused": True})
    assert paused.status_code == 200, paused.text
    waiting = sdk.queues.create_queue_job(QueueJobPrototype(input="text"), ORG, PROJECT, "renders")
    assert sdk.queues.get_queue(ORG, PROJECT, "renders").current_queue_length == 1
    sdk.queues.delete_queue_job(ORG, PROJECT, "renders", waiting.id_)
    cancelled = sdk.queues.get_queue_job(ORG, PROJECT, "renders", waiting.id_)
    assert plain(cancelled.status) == "cancelled" and cancelled.input == "text"
    assert [plain(event.action) for event in cancelled.events] == ["created", "cancelled"]

    listed = sdk.queues.list_queue_jobs(ORG, PROJECT, "renders", page=1, page_size=1)
    assert [item.id_ for item in listed.items] == [waiting.id_]
    second = sdk.queues.list_queue_jobs(ORG, PROJECT, "renders", page=2, page_size=1)
    assert [item.id_ for item in second.items] == [job.id_]

    sdk.queues.create_queue(QueuePrototype(name="scratch"), ORG, PROJECT)
    sdk.queues.delete_queue(ORG, PROJECT, "scratch")
    assert "scratch" not in [queue.name for queue in sdk.queues.list_queues(ORG, PROJECT).items]


def test_jobs_wait_for_the_queues_default_definition(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server()
    sdk = sdk_for(server)
    server.register(DOUBLER)
    sdk.queues.create_queue(QueuePrototype(name="later"), ORG, PROJECT)
    job = sdk.queues.create_queue_job(QueueJobPrototype(input={"n": 5}), ORG, PROJECT, "later")
    assert plain(job.status) == "pending"
    assert sdk.queues.get_queue(ORG, PROJECT, "later").current_queue_length == 1
    assert plain(sdk.queues.get_queue_job(ORG, PROJECT, "later", job.id_).status) == "pending"

    set_default(server, "later", "doubler")
    native = server.job(job.id_)
    assert native["definition"] == "doubler:1" and native["status"] != "scheduled"
    finished = wait_salad_job(sdk, "later", job.id_)
    assert plain(finished.status) == "succeeded" and finished.output == {"doubled": 10}


def test_a_job_runs_in_an_http_worker(
    make_server: Callable[..., LiveServer],
    worker_image: str,  # noqa: F811
) -> None:
    server = make_server()
    sdk = sdk_for(server)
    worker = {"port": WORKER_PORT, "path": WORKER_PATH, "readiness_path": READY_PATH}
    server.register(
        {"name": "echo-worker", "image": worker_image, "worker": {**worker, "idle_timeout": 5}}
    )
    sdk.queues.create_queue(QueuePrototype(name="workers"), ORG, PROJECT)
    set_default(server, "workers", "echo-worker")

    groups = sdk.queues.get_queue(ORG, PROJECT, "workers").container_groups
    assert [(g.name, g.container.image, g.replicas) for g in groups] == [
        ("echo-worker", worker_image, 1)
    ]
    connection = groups[0].queue_connection
    assert (connection.port, connection.path, connection.queue_name) == (
        WORKER_PORT,
        WORKER_PATH,
        "workers",
    )
    assert groups[0].readiness_probe.http.path == READY_PATH

    job = sdk.queues.create_queue_job(
        QueueJobPrototype(input={"echo": "hi"}), ORG, PROJECT, "workers"
    )
    finished = wait_salad_job(sdk, "workers", job.id_, timeout=120)
    assert plain(finished.status) == "succeeded", server.job(job.id_)
    assert finished.output == {"echo": "hi"}


def test_webhooks_are_signed_with_the_organizations_key(
    make_server: Callable[..., LiveServer], receiver: Receiver
) -> None:
    server = make_server()
    sdk = sdk_for(server)
    server.register(DOUBLER)
    sdk.queues.create_queue(QueuePrototype(name="hooks"), ORG, PROJECT)
    set_default(server, "hooks", "doubler")

    first = sdk.webhook_secret_key.get_webhook_secret_key(ORG).secret_key
    assert sdk.webhook_secret_key.get_webhook_secret_key(ORG).secret_key == first
    key = sdk.webhook_secret_key.update_webhook_secret_key(ORG).secret_key
    assert key != first and sdk.webhook_secret_key.get_webhook_secret_key(ORG).secret_key == key

    job = sdk.queues.create_queue_job(
        QueueJobPrototype(input={"n": 1}, webhook=f"{receiver.url}/done"), ORG, PROJECT, "hooks"
    )
    assert (
        getattr(job, "webhook", None) is None
    )  # the published schema's bug: a job never echoes it
    (request,) = receiver.wait_for_requests(1, timeout=90)
    # As SaladCloud documents: svix verifies the body and headers with the key.
    Webhook(key).verify(request.body, request.headers)  # raises unless signed with the key
    payload = json.loads(request.body)
    shown = server.anonymous.get(
        f"{server.url}/api/public/organizations/{ORG}/projects/{PROJECT}/queues/hooks/jobs/{job.id_}",
        headers={"Salad-Api-Key": admin_token(server.settings)},
    ).json()
    assert payload == shown
    assert payload["status"] == "succeeded" and payload["output"] == {"doubled": 2}
    assert "webhook" not in payload and receiver.url not in request.body.decode()
    # Within the grace after the rotation, the key it replaced verifies too: receivers move
    # to the new one without a cutover.
    Webhook(first).verify(request.body, request.headers)
    standardwebhooks.webhooks.Webhook(first).verify(request.body, request.headers)
    standardwebhooks.webhooks.Webhook(key).verify(request.body, request.headers)

    # After the grace (moved back in the database rather than waited for), a redelivery is
    # signed with the organisation's current key alone.
    with server.services.db.transaction() as session:
        row = session.get(ApiSecret, "salad")
        assert row is not None and row.previous_secret_ciphertext is not None
        row.update_time = utcnow() - timedelta(seconds=server.settings.webhook_secret_grace + 60)
        session.add(row)
    again = server.http.post(f"/v1/projects/{PROJECT}/jobs/{job.id_}/deliveries/1/redeliver")
    assert again.status_code == 202, again.text
    resent = receiver.wait_for_requests(2, timeout=60)[1]
    assert resent.headers["webhook-id"] == request.headers["webhook-id"]
    Webhook(key).verify(resent.body, resent.headers)
    with pytest.raises(Exception, match=r"[Ss]ignature"):
        Webhook(first).verify(resent.body, resent.headers)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.webhooks.Webhook(first).verify(resent.body, resent.headers)
    with server.services.db.read() as session:
        row = session.get(ApiSecret, "salad")
        assert row is not None and row.previous_secret_ciphertext is None


def _call(server: LiveServer, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Salad-Api-Key": admin_token(server.settings), **kwargs.pop("headers", {})}
    return server.anonymous.request(
        method, f"{server.url}/api/public/organizations{path}", headers=headers, **kwargs
    )


def _problem(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return str(body["detail"])


def test_errors_are_problem_details(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(salad_organization=ORG, runner_enabled=False)
    queues = f"/{ORG}/projects/{PROJECT}/queues"
    assert _call(server, "POST", queues, json={"name": "errs"}).status_code == 201

    anonymous = server.anonymous.get(f"{server.url}/api/public/organizations{queues}")
    assert "Salad-Api-Key" in _problem(anonymous, 401)
    wrong = _call(server, "GET", queues, headers={"Salad-Api-Key": "not-a-token"})
    _problem(wrong, 401)

    assert "name" in _problem(_call(server, "POST", queues, json={"name": "Bad_Name"}), 400)
    assert "name" in _problem(_call(server, "POST", queues, json={}), 400)
    assert "errs" in _problem(_call(server, "POST", queues, json={"name": "errs"}), 409)
    assert "input" in _problem(_call(server, "POST", f"{queues}/errs/jobs", json={}), 400)
    bad_hook = {"input": 1, "webhook": "not a url"}
    assert "webhook" in _problem(_call(server, "POST", f"{queues}/errs/jobs", json=bad_hook), 400)
    too_many = {"input": 1, "metadata": {f"k{i}": i for i in range(21)}}
    assert "metadata" in _problem(_call(server, "POST", f"{queues}/errs/jobs", json=too_many), 400)
    bad_page = _call(server, "GET", f"{queues}/errs/jobs", params={"page_size": 101})
    assert "page_size" in _problem(bad_page, 400)
    json_type = {"content-type": "application/json"}
    not_json = _call(server, "POST", f"{queues}/errs/jobs", content=b"{", headers=json_type)
    _problem(not_json, 400)

    assert "nope" in _problem(_call(server, "GET", f"{queues}/nope"), 404)
    unknown_job = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
    _problem(_call(server, "GET", f"{queues}/errs/jobs/{unknown_job}"), 404)
    _problem(_call(server, "DELETE", f"{queues}/errs/jobs/{unknown_job}"), 404)
    other = _call(server, "GET", f"/other-org/projects/{PROJECT}/queues")
    assert "other-org" in _problem(other, 404)
    _problem(_call(server, "GET", f"/{ORG}/projects/nowhere/queues"), 404)

    # The SDK sees the problem's status.
    with pytest.raises(Exception) as raised:
        sdk_for(server).queues.get_queue(ORG, PROJECT, "missing")
    assert getattr(raised.value, "status", None) == 404

    # A merge patch clears a field given as null.
    patch = {"display_name": "Err queue", "description": "d"}
    merge = {"content-type": "application/merge-patch+json"}
    path = f"{queues}/errs"
    assert _call(server, "PATCH", path, content=json.dumps(patch), headers=merge).is_success
    cleared = _call(server, "PATCH", path, content='{"description": null}', headers=merge)
    assert cleared.status_code == 200 and "description" not in cleared.json()
    assert cleared.json()["display_name"] == "Err queue"


def test_a_page_over_the_list_bound_keeps_salads_shape_and_paging(
    make_server: Callable[..., LiveServer],
) -> None:
    # Salad's page holds page_size jobs, each with its input, however large: the byte bound
    # sizes the batches it is read and sent in (here one job at a time), never the page.
    server = make_server(runner_enabled=False, max_input_bytes=200_000, list_page_max_bytes=65_536)
    sdk = sdk_for(server)
    sdk.queues.create_queue(QueuePrototype(name="big"), ORG, PROJECT)
    path = f"/{ORG}/projects/{PROJECT}/queues/big/jobs"
    ids = []
    for n in range(7):
        created = _call(server, "POST", path, json={"input": {"n": n, "blob": "x" * 100_000}})
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    pages = []
    for page in (1, 2, 3, 4):
        response = _call(server, "GET", path, params={"page": page, "page_size": 3})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        pages.append(response.json()["items"])
    assert [len(items) for items in pages] == [3, 3, 1, 0]
    assert [item["id"] for items in pages for item in items] == ids[::-1]
    for item in (item for items in pages for item in items):
        assert {"id", "input", "status", "events", "create_time", "update_time"} <= set(item)
        assert set(item) <= {"id", "input", "status", "events", "create_time", "update_time",
                             "metadata", "output"}  # fmt: skip
        assert item["input"]["blob"] == "x" * 100_000 and item["status"] == "pending"
        assert [event["action"] for event in item["events"]] == ["created"]
    # The official SDK reads the streamed page as it reads any other.
    listed = sdk.queues.list_queue_jobs(ORG, PROJECT, "big", page=2, page_size=3)
    assert [item.id_ for item in listed.items] == ids[::-1][3:6]
    assert all(item.input["n"] == ids.index(item.id_) for item in listed.items)


def test_a_jobs_metadata_is_echoed_as_given(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(runner_enabled=False)
    sdk = sdk_for(server)
    sdk.queues.create_queue(QueuePrototype(name="meta"), ORG, PROJECT)
    path = f"/{ORG}/projects/{PROJECT}/queues/meta/jobs"
    given = [{}, {"frame": 7, "tags": {"a": [1]}}]
    ids = []
    for metadata in given:
        created = _call(server, "POST", path, json={"input": None, "metadata": metadata})
        assert created.status_code == 201, created.text
        assert created.json()["metadata"] == metadata
        assert_salad_valid(created.json(), "QueueJob")
        ids.append(created.json()["id"])
    # None given: an empty object, as SaladCloud's schema types it (never null, never left out).
    bare = _call(server, "POST", path, json={"input": 1})
    assert bare.status_code == 201 and bare.json()["metadata"] == {}
    for job_id, metadata in zip(ids, given, strict=True):
        shown = _call(server, "GET", f"{path}/{job_id}")
        assert shown.status_code == 200 and shown.json()["metadata"] == metadata
        assert sdk.queues.get_queue_job(ORG, PROJECT, "meta", job_id).metadata == metadata
    listed = _call(server, "GET", path)
    assert [item["metadata"] for item in listed.json()["items"]] == [{}, *given[::-1]]
    assert_salad_valid(listed.json(), "QueueJobCollection")


@pytest.mark.parametrize(
    "command",
    [
        None,
        ["run"],
        ["sh", "-c", "set -e\necho one\r\necho two"],
        ["echo", "", "x" * 5000],
        [f"arg{n}" for n in range(150)],
        ["a\u2028b"],
    ],
    ids=["none", "plain", "multi-line", "empty-and-long", "too-many", "line-separator"],
)
def test_a_workers_command_is_shown_within_saladclouds_schema(command: list[str] | None) -> None:
    shown = shown_command(command)
    assert_salad_valid({"image": "x", "command": shown, "resources": {"cpu": 1, "memory": 1024,
                        "gpu_classes": []}}, "Container")  # fmt: skip
    if command is None or command == ["run"]:
        assert shown == command
    elif command[0] == "sh":
        assert shown == ["sh", "-c", "set -e\\necho one\\r\\necho two"]
    elif command[0] == "echo":
        assert shown is not None and shown[:2] == ["echo", "''"]
        assert len(shown[2]) == 2048 and shown[2].endswith("…")
    elif command[0] == "arg0":
        assert shown == command[:100]


def _worker_counts(server: LiveServer, queue: str) -> tuple[str, dict[str, int]]:
    """The queue's one container group's status and instance counts; its JSON is validated
    against SaladCloud's schema on the way."""
    response = _call(server, "GET", f"/{ORG}/projects/{PROJECT}/queues/{queue}")
    assert response.status_code == 200, response.text
    assert_salad_valid(response.json(), "Queue")
    (group,) = response.json()["container_groups"]
    state = group["current_state"]
    return state["status"], state["instance_status_counts"]


def _counted(creating: int = 0, running: int = 0) -> dict[str, int]:
    return {
        "allocating_count": 0,
        "creating_count": creating,
        "running_count": running,
        "stopping_count": 0,
    }


def test_a_workers_container_group_counts_the_containers_that_exist(
    make_server: Callable[..., LiveServer],
    worker_image: str,  # noqa: F811
    docker_client: docker.DockerClient,
) -> None:
    # Readiness waits for a file the test writes: the worker is "creating" until then.
    server = make_server(worker_ready_timeout=300)
    sdk = sdk_for(server)
    gate = "/gate.txt"
    command = ["/bin/sh", "-c", "echo starting >&2\nexec /bin/sh /start.sh"]
    worker = {"port": WORKER_PORT, "path": WORKER_PATH, "readiness_path": gate}
    server.register({"name": "gated", "image": worker_image, "command": command, "worker": worker})
    brief = {"port": WORKER_PORT, "path": WORKER_PATH, "idle_timeout": "1s"}
    server.register({"name": "brief", "image": worker_image, "worker": brief})
    for queue in ("gated", "brief"):
        sdk.queues.create_queue(QueuePrototype(name=queue), ORG, PROJECT)
        set_default(server, queue, queue)
        assert _worker_counts(server, queue) == ("pending", _counted())

    raw = _call(server, "GET", f"/{ORG}/projects/{PROJECT}/queues/gated").json()
    (group,) = raw["container_groups"]
    # One line per element, as SaladCloud's schema wants; the probe lists the headers sent.
    assert group["container"]["command"] == [
        "/bin/sh",
        "-c",
        "echo starting >&2\\nexec /bin/sh /start.sh",
    ]
    probe = group["readiness_probe"]["http"]
    assert probe["path"] == gate
    assert probe["headers"] == [{"name": "User-Agent", "value": "orchestrator-readiness-check"}]

    # A worker that idles out: counted while it exists, gone once stopped.
    done = sdk.queues.create_queue_job(QueueJobPrototype(input={"echo": 1}), ORG, PROJECT, "brief")
    assert plain(wait_salad_job(sdk, "brief", done.id_).status) == "succeeded"
    wait_for(lambda: _worker_counts(server, "brief") == ("pending", _counted()), timeout=60)
    assert _workers(docker_client, server, "brief:1") == []

    # Starting: created, not yet ready.
    job = sdk.queues.create_queue_job(QueueJobPrototype(input={"echo": 2}), ORG, PROJECT, "gated")
    wait_for(lambda: _worker_counts(server, "gated") == ("deploying", _counted(creating=1)))
    (container,) = _workers(docker_client, server, "gated:1")
    # Ready: running, and it stays (its idle timeout is the default 5 minutes).
    assert container.exec_run(["touch", f"/www{gate}"]).exit_code == 0
    assert plain(wait_salad_job(sdk, "gated", job.id_).status) == "succeeded"
    assert _worker_counts(server, "gated") == ("running", _counted(running=1))
    counts = sdk.queues.get_queue(ORG, PROJECT, "gated").container_groups[0].current_state
    assert counts.instance_status_counts.running_count == 1
    assert _workers(docker_client, server, "gated:1") == [container]

    # The runner stops: its workers go with it, and so does the count.
    assert server.services.runner is not None
    server.services.runner.stop()
    wait_for(lambda: _worker_counts(server, "gated") == ("pending", _counted()))
    assert _workers(docker_client, server, "gated:1") == []


def _workers(client: docker.DockerClient, server: LiveServer, definition: str) -> list[Any]:
    """The server's runner's worker containers of ``definition`` (``name:version``)."""
    labels = [
        f"orchestrator.worker={definition}",
        f"orchestrator.runner={server.settings.runner_name}",
    ]
    return list(client.containers.list(all=True, filters={"label": labels}, ignore_removed=True))
