"""GA4GH TES at /ga4gh/tes/v1, on a server without a runner (tasks stay queued), on SQLite and
PostgreSQL: create, get in each view, list with each filter and paging, cancel; refused tasks
(400 naming the field), auth (bearer, Basic with a token as the password, 401, 403), project
isolation (404), and the real ``py-tes`` client."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import httpx
import pytest
import tes
from sqlalchemy import event

from tests.conftest import DATABASES, LiveServer, admin_token, bearer, module_server

TES = "/ga4gh/tes/v1"


def task(**changes: Any) -> dict[str, Any]:
    """A valid task; ``changes`` replace its fields."""
    body: dict[str, Any] = {
        "name": "hello",
        "executors": [{"image": "busybox:1.36", "command": ["echo", "hello"]}],
    }
    return {**body, **changes}


@pytest.fixture(scope="module", params=DATABASES)
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    docker_client: docker.DockerClient,
) -> Iterator[LiveServer]:
    """One server per database, without a runner: every task stays queued. Each test works in
    a project of its own (``project``)."""
    root = tmp_path_factory.mktemp(f"tes-{request.param}")
    with module_server(
        request.param, root, docker_client, runner_enabled=False, list_page_max_bytes=65_536
    ) as live:
        yield live


class Tenant(httpx.Client):
    """A TES client of a project of its own (``name``), with a write token of it."""

    def __init__(self, server: LiveServer, name: str, token: str) -> None:
        super().__init__(base_url=server.url + TES, headers=bearer(token), timeout=30)
        self.name = name
        self.token = token


@pytest.fixture
def project(server: LiveServer) -> Iterator[Tenant]:
    """A new project and a client whose write token is bound to it."""
    name = f"t{uuid.uuid4().hex[:10]}"
    server.http.post("/v1/projects", json={"name": name}).raise_for_status()
    with Tenant(server, name, make_token(server, "write", name)) as client:
        yield client


def make_token(server: LiveServer, role: str, project: str | None) -> str:
    body = {"name": f"{role}-{uuid.uuid4().hex[:6]}", "role": role, "project": project}
    response = server.http.post("/v1/tokens", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def create(client: httpx.Client, body: dict[str, Any]) -> str:
    response = client.post("/tasks", json=body)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"id"}
    return str(response.json()["id"])


def listed(client: httpx.Client, **params: Any) -> list[str]:
    response = client.get("/tasks", params=params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["tasks"]]


def test_a_task_is_created_and_shown_in_each_view(project: Tenant) -> None:
    body = task(
        description="says hello",
        inputs=[{"path": "/in/a.txt", "content": "abc"}, {"path": "/in/b", "url": "http://x/b"}],
        outputs=[{"path": "/out/a", "url": "file:///tmp/out/a"}],
        resources={
            "cpu_cores": 1,
            "ram_gb": 0.5,
            "disk_gb": 3,
            "preemptible": True,
            "zones": ["z1"],
        },
        volumes=["/vol/A"],
        tags={"WORKFLOW_ID": "w1"},
    )
    task_id = create(project, body)

    minimal = project.get(f"/tasks/{task_id}").json()
    assert minimal == {"id": task_id, "state": "QUEUED"}
    assert project.get(f"/tasks/{task_id}", params={"view": "MINIMAL"}).json() == minimal

    basic = project.get(f"/tasks/{task_id}", params={"view": "BASIC"}).json()
    assert basic["state"] == "QUEUED"
    assert basic["name"] == "hello" and basic["description"] == "says hello"
    assert basic["inputs"] == [
        {"path": "/in/a.txt", "type": "FILE", "streamable": False},
        {"path": "/in/b", "url": "http://x/b", "type": "FILE", "streamable": False},
    ]
    assert basic["outputs"] == [{"path": "/out/a", "url": "file:///tmp/out/a", "type": "FILE"}]
    assert basic["resources"] == {
        "cpu_cores": 1,
        "ram_gb": 0.5,
        "disk_gb": 3.0,
        "preemptible": True,
        "zones": ["z1"],
        "backend_parameters_strict": False,
    }
    assert basic["executors"] == [
        {"image": "busybox:1.36", "command": ["echo", "hello"], "ignore_error": False}
    ]
    assert basic["volumes"] == ["/vol/A"] and basic["tags"] == {"WORKFLOW_ID": "w1"}
    assert basic["logs"] == [] and basic["creation_time"]

    full = project.get(f"/tasks/{task_id}", params={"view": "FULL"}).json()
    assert full["inputs"][0]["content"] == "abc"
    assert {k: v for k, v in full.items() if k != "inputs"} == {
        k: v for k, v in basic.items() if k != "inputs"
    }


def test_the_task_is_a_job_of_the_native_api(server: LiveServer, project: Tenant) -> None:
    task_id = create(project, task(resources={"cpu_cores": 1, "ram_gb": 0.25}))

    job = server.job(task_id, project=project.name)

    assert (job["id"], job["queue"], job["status"]) == (task_id, "tes", "queued")
    assert job["definition"] == "tes:0"


def test_the_list_filters_by_name_prefix_state_and_tags(project: Tenant) -> None:
    a = create(project, task(name="align-1", tags={"foo": "bar", "baz": "bat"}))
    b = create(project, task(name="align-2", tags={"foo": "bat"}))
    c = create(project, task(name="call-1", tags={"foo": ""}))
    d = create(project, task(name="Align-3"))
    project.post(f"/tasks/{c}:cancel").raise_for_status()

    assert listed(project) == [d, c, b, a]
    assert listed(project, name_prefix="align") == [b, a]
    assert listed(project, name_prefix="align-1") == [a]
    assert listed(project, name_prefix="nothing") == []
    assert listed(project, state="QUEUED") == [d, b, a]
    assert listed(project, state="CANCELED") == [c]
    assert listed(project, state="RUNNING") == []
    # The spec's table: an empty value matches any value of the key; pairs all match.
    assert listed(project, tag_key="foo", tag_value="bar") == [a]
    assert listed(project, tag_key="foo") == [c, b, a]
    assert listed(project, tag_key="foo", tag_value="") == [c, b, a]
    assert listed(project, tag_key=["foo", "baz"], tag_value=["bar", "bat"]) == [a]
    assert listed(project, tag_key=["foo", "baz"], tag_value=["bat", "bat"]) == []
    assert listed(project, tag_key=["foo", "baz"]) == [a]
    assert listed(project, tag_key="nope") == []
    many = project.get("/tasks", params={"tag_key": "foo", "tag_value": ["a", "b"]})
    assert many.status_code == 400 and many.json()["field"] == "tag_value"


def test_pages_follow_the_token_to_the_end(project: Tenant) -> None:
    made = [create(project, task(name=f"p{i}")) for i in range(5)]
    seen: list[str] = []
    token = None
    while True:
        params: dict[str, Any] = {"page_size": 2, "view": "BASIC"}
        if token:
            params["page_token"] = token
        body = project.get("/tasks", params=params).json()
        assert len(body["tasks"]) <= 2
        seen += [item["id"] for item in body["tasks"]]
        token = body.get("next_page_token")
        if not token:
            break
    assert seen == made[::-1]
    # The default page holds them all (256); 2047 is the most, 2048 and 0 are refused.
    assert listed(project) == made[::-1]
    assert listed(project, page_size=2047) == made[::-1]
    for size in (0, 2048, -1):
        refused = project.get("/tasks", params={"page_size": size})
        assert refused.status_code == 400 and refused.json()["field"] == "page_size"
    for token in ("nope", "MTIz"):  # not base64 of ours; base64 of "123"
        refused = project.get("/tasks", params={"page_token": token})
        assert refused.status_code == 400 and refused.json()["field"] == "page_token"


def test_cancel_of_a_queued_task_cancels_it(project: Tenant) -> None:
    task_id = create(project, task())

    response = project.post(f"/tasks/{task_id}:cancel")

    assert (response.status_code, response.json()) == (200, {})
    assert project.get(f"/tasks/{task_id}").json()["state"] == "CANCELED"
    # Again: it stays cancelled, and the answer is the same.
    assert project.post(f"/tasks/{task_id}:cancel").json() == {}
    assert project.post("/tasks/nope:cancel").status_code == 404


BAD_TASKS = [
    pytest.param({"name": "x"}, "executors", id="no-executors"),
    pytest.param(task(executors=[]), "executors", id="empty-executors"),
    pytest.param(
        task(executors=[{"image": "", "command": ["x"]}]), "executors.0.image", id="empty-image"
    ),
    pytest.param(task(executors=[{"image": "busybox"}]), "executors.0.command", id="no-command"),
    pytest.param(
        task(executors=[{"image": "busybox", "command": ["x"], "workdir": "rel"}]),
        "executors.0.workdir",
        id="relative-workdir",
    ),
    pytest.param(
        task(inputs=[{"path": "/in", "url": "s3://bucket/key"}]), "inputs.0.url", id="s3-input"
    ),
    pytest.param(
        task(inputs=[{"path": "in", "content": "x"}]), "inputs.0.path", id="relative-input"
    ),
    pytest.param(task(inputs=[{"path": "/in"}]), "inputs.0", id="input-without-source"),
    pytest.param(
        task(outputs=[{"path": "/out", "url": "gs://b/k"}]), "outputs.0.url", id="gs-output"
    ),
    pytest.param(
        task(outputs=[{"path": "/out/*.txt", "url": "file:///tmp/o"}]),
        "outputs.0",
        id="wildcard-without-prefix",
    ),
    pytest.param(
        task(resources={"backend_parameters": {"VmSize": "x"}, "backend_parameters_strict": True}),
        "resources",
        id="strict-backend-parameters",
    ),
    pytest.param(task(resources={"cpu_cores": 0}), "resources.cpu_cores", id="zero-cpus"),
    pytest.param(task(tags={"k": "v" * 256}), "tags.k", id="long-tag"),
    pytest.param(task(volumes=["rel"]), "volumes.0", id="relative-volume"),
    pytest.param(
        task(
            executors=[
                {"image": "busybox", "command": ["x"], "env": {f"V{i}": "" for i in range(101)}}
            ]
        ),
        "executors.0.env",
        id="too-many-env",
    ),
]


@pytest.mark.parametrize(("body", "field"), BAD_TASKS)
def test_a_bad_task_is_a_400_naming_the_field(
    project: Tenant, body: dict[str, Any], field: str
) -> None:
    response = project.post("/tasks", json=body)

    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert response.json()["code"] == "invalid_request"
    assert listed(project) == []


def test_the_refusals_say_why(project: Tenant) -> None:
    scheme = project.post("/tasks", json=task(inputs=[{"path": "/i", "url": "s3://b/k"}]))
    assert "supported: file, http, https" in scheme.json()["message"]
    strict = project.post(
        "/tasks",
        json=task(
            resources={"backend_parameters": {"VmSize": "x"}, "backend_parameters_strict": True}
        ),
    )
    assert "VmSize" in strict.json()["message"]
    view = project.get("/tasks", params={"view": "ALL"})
    assert view.status_code == 400 and view.json()["field"] == "view"
    state = project.get("/tasks", params={"state": "DONE"})
    assert state.status_code == 400 and state.json()["field"] == "state"


def test_unknown_backend_parameters_are_dropped_when_not_strict(project: Tenant) -> None:
    body = task(resources={"backend_parameters": {"VmSize": "x"}})
    task_id = create(project, body)

    shown = project.get(f"/tasks/{task_id}", params={"view": "BASIC"}).json()

    assert shown["resources"]["backend_parameters"] == {}


def test_auth_bearer_basic_401_403_and_revoked(server: LiveServer, project: Tenant) -> None:
    task_id = create(project, task())
    name = project.name
    url = server.url + TES
    read = make_token(server, "read", name)
    write = make_token(server, "write", name)

    assert server.anonymous.get(f"{url}/tasks").status_code == 401
    unauthorized = server.anonymous.get(f"{url}/tasks", headers=bearer("nope"))
    assert unauthorized.status_code == 401 and unauthorized.json()["field"] == "authorization"
    assert "Basic" in unauthorized.headers["www-authenticate"]
    with httpx.Client(base_url=url, auth=("anyone", read)) as basic:
        assert basic.get(f"/tasks/{task_id}").json()["state"] == "QUEUED"
        refused = basic.post("/tasks", json=task())
        assert refused.status_code == 403 and refused.json()["field"] == "token"
        assert basic.post(f"/tasks/{task_id}:cancel").status_code == 403
    with httpx.Client(base_url=url, auth=("someone", write)) as basic:
        assert basic.post("/tasks", json=task()).status_code == 200
    revoked_id = next(
        item["id"]
        for item in server.http.get("/v1/tokens").json()["items"]
        if item["prefix"] and write.startswith(item["prefix"]) and item["project"] == name
    )
    server.http.delete(f"/v1/tokens/{revoked_id}").raise_for_status()
    with httpx.Client(base_url=url, auth=("someone", write)) as basic:
        assert basic.get("/tasks").status_code == 401
    assert server.anonymous.get(f"{url}/tasks", auth=("x", "not-a-token")).status_code == 401


def test_another_project_s_task_is_a_404(server: LiveServer, project: Tenant) -> None:
    task_id = create(project, task())
    other = f"o{uuid.uuid4().hex[:10]}"
    server.http.post("/v1/projects", json={"name": other}).raise_for_status()
    with httpx.Client(
        base_url=server.url + TES, headers=bearer(make_token(server, "write", other))
    ) as elsewhere:
        for method, path in (("GET", f"/tasks/{task_id}"), ("POST", f"/tasks/{task_id}:cancel")):
            response = elsewhere.request(method, path)
            assert response.status_code == 404 and response.json()["field"] == "id"
        assert task_id not in listed(elsewhere)
    # A native job that is no task is not one through TES either.
    native = server.http.get(f"/v1/projects/{project.name}/jobs").json()
    assert [item["id"] for item in native["items"]] == [task_id]


def test_an_admin_token_uses_the_tes_project(server: LiveServer) -> None:
    with httpx.Client(
        base_url=server.url + TES, headers=bearer(admin_token(server.settings))
    ) as admin:
        task_id = create(admin, task())

    assert server.job(task_id, project="default")["queue"] == "tes"


def test_service_info(project: Tenant, server: LiveServer) -> None:
    info = project.get("/service-info").json()

    assert info["type"] == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
    assert info["name"] == "orchestrator" and info["version"]
    # The output root is the project's own folder of ORCH_TES_OUTPUT_ROOT.
    output_root = server.settings.resolved_tes_output_root().absolute() / project.name
    assert info["storage"] == [output_root.as_uri(), "http://", "https://"]
    assert info["tesResources_backend_parameters"] == []


def test_py_tes_creates_gets_lists_and_cancels(server: LiveServer, project: Tenant) -> None:
    client = tes.HTTPClient(server.url, user="py-tes", password=project.token)
    made = client.create_task(
        tes.Task(
            name="py-tes",
            executors=[tes.Executor(image="busybox:1.36", command=["echo", "hi"])],
            tags={"via": "py-tes"},
        )
    )

    assert client.get_task(made, view="MINIMAL").state == "QUEUED"
    full = client.get_task(made, view="FULL")
    assert (full.name, full.executors[0].command, full.tags) == (
        "py-tes",
        ["echo", "hi"],
        {"via": "py-tes"},
    )
    page = client.list_tasks(view="BASIC", page_size=1)
    assert [item.id for item in page.tasks] == [made]
    client.cancel_task(made)
    assert client.get_task(made, view="BASIC").state == "CANCELED"
    assert client.get_service_info().type["artifact"] == "tes"


def test_tes_routes_are_in_the_openapi_document(server: LiveServer) -> None:
    paths = server.http.get("/openapi.json").json()["paths"]

    assert {p for p in paths if p.startswith(TES)} == {
        f"{TES}/service-info",
        f"{TES}/tasks",
        f"{TES}/tasks/{{id}}",
        f"{TES}/tasks/{{id}}:cancel",
    }


def test_first_tasks_at_once_make_one_queue(server: LiveServer, project: Tenant) -> None:
    def post(_: int) -> int:
        with Tenant(server, project.name, project.token) as client:
            return client.post("/tasks", json=task()).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(post, range(8)))

    assert statuses == [200] * 8
    queues = server.http.get(f"/v1/projects/{project.name}/queues").json()["items"]
    assert sorted(queue["name"] for queue in queues) == ["default", "tes"]
    assert len(listed(project)) == 8


def test_the_list_reads_pages_and_filters_from_indexes(server: LiveServer, project: Tenant) -> None:
    # On SQLite as shipped (no statistics). On PostgreSQL, whose tables are too small here for a
    # plan of its own choosing to say anything: told to prefer an index, and for a filter, shown
    # the plan it has without the (project, seq) index, in a transaction rolled back.
    first = create(project, task(name="indexed", tags={"k": "v"}))
    create(project, task(name="other"))
    postgres = server.services.db.is_postgres
    statements: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if (
            "FROM jobs JOIN tes_tasks" in statement
            and "ORDER BY tes_tasks.job_seq DESC" in statement
        ):
            statements.append((statement, parameters))

    engine = server.services.db.read_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        token = project.get("/tasks", params={"page_size": 1}).json()["next_page_token"]
        assert listed(project, page_size=1, page_token=token) == [first]
        assert listed(project, name_prefix="index") == [first]
        assert listed(project, tag_key="k", tag_value="v") == [first]
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    plans = [plan(engine, postgres, *each, filtered=i >= 2) for i, each in enumerate(statements)]
    newest, after_token, prefix, tagged = plans
    assert "ix_tes_tasks_project_seq" in newest, newest
    assert "ix_tes_tasks_project_seq" in after_token, after_token
    assert "ix_tes_tasks_project_name" in prefix, prefix
    assert "ix_tes_task_tags_lookup" in tagged, tagged
    assert not [each for each in plans if "Seq Scan" in each or "SCAN jobs" in each], plans


def plan(engine: Any, postgres: bool, statement: str, parameters: Any, *, filtered: bool) -> str:
    """The query plan of ``statement``, one line."""
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        if postgres:
            cursor.execute("BEGIN")
            cursor.execute("SET LOCAL enable_seqscan = off")
            if filtered:
                cursor.execute("DROP INDEX ix_tes_tasks_project_seq")
            cursor.execute("EXPLAIN " + statement, parameters)
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
        shown = " / ".join(str(row[-1]) for row in cursor.fetchall())
        if postgres:
            cursor.execute("ROLLBACK")
        return shown
    finally:
        connection.close()


def test_the_container_policy_checks_every_executor(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(runner_enabled=False, policy_allowed_images="busybox:", policy_max_cpus=2)
    url = server.url + TES
    headers = bearer(admin_token(server.settings))
    second = {"image": "evil.example/miner:1", "command": ["x"]}
    executors = [{"image": "busybox:1.36", "command": ["true"]}, second]

    refused = server.anonymous.post(f"{url}/tasks", json=task(executors=executors), headers=headers)
    too_big = server.anonymous.post(
        f"{url}/tasks", json=task(resources={"cpu_cores": 3}), headers=headers
    )

    assert refused.status_code == 403 and "ORCH_POLICY_ALLOWED_IMAGES" in refused.text
    assert too_big.status_code == 403 and "ORCH_POLICY_MAX_CPUS" in too_big.text
    assert server.anonymous.post(f"{url}/tasks", json=task(), headers=headers).status_code == 200


def test_a_full_page_is_cut_by_its_size_and_its_token_goes_on(project: Tenant) -> None:
    """ORCH_LIST_PAGE_MAX_BYTES (64 KiB here) cuts a page of 30 KB tasks at two; the tokens
    still walk every task once, newest first."""
    content = "x" * 30_000
    made = [
        create(project, task(name="big", inputs=[{"path": "/in/a", "content": content}]))
        for _ in range(5)
    ]
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        params: dict[str, Any] = {"view": "FULL", "page_size": 100, "name_prefix": "big"}
        if token:
            params["page_token"] = token
        response = project.get("/tasks", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert 1 <= len(body["tasks"]) <= 2
        assert len(response.content) <= 65_536
        seen += [item["id"] for item in body["tasks"]]
        pages += 1
        token = body.get("next_page_token")
        if not token:
            break
    assert seen == made[::-1] and pages == 3


def test_s3_urls_are_taken_only_for_the_buckets_configured(
    make_server: Any, request: pytest.FixtureRequest
) -> None:
    server: LiveServer = make_server(runner_enabled=False, tes_s3_buckets="results,refs")
    client = httpx.Client(
        base_url=server.url + TES, headers=bearer(admin_token(server.settings)), timeout=30
    )
    request.addfinalizer(client.close)
    file_output = [{"path": "/o", "url": "file:///x/o"}]

    def posted(inputs: list[dict[str, str]], outputs: list[dict[str, str]]) -> httpx.Response:
        return client.post("/tasks", json=task(inputs=inputs, outputs=outputs))

    accepted = posted(
        [{"path": "/in", "url": "s3://refs/genome/hg38.fa"}],
        [{"path": "/out", "url": "s3://results/run-1/", "type": "DIRECTORY"}],
    )
    assert accepted.status_code == 200, accepted.text
    full = client.get(f"/tasks/{accepted.json()['id']}", params={"view": "FULL"}).json()
    assert full["inputs"][0]["url"] == "s3://refs/genome/hg38.fa"
    assert full["outputs"][0]["url"] == "s3://results/run-1/"

    refused = {
        "another bucket": (
            posted([], [{"path": "/o", "url": "s3://elsewhere/o"}]),
            "outputs.0.url",
            "bucket 'elsewhere' is not one this server may use (ORCH_TES_S3_BUCKETS)",
        ),
        "no key": (
            posted([{"path": "/i", "url": "s3://refs"}], file_output),
            "inputs.0.url",
            "names an object or a prefix",
        ),
        "not a bucket name": (
            posted([{"path": "/i", "url": "s3://a/k"}], file_output),
            "inputs.0.url",
            "'a' is not an S3 bucket name",
        ),
        "credentials": (
            posted([{"path": "/i", "url": "s3://key:secret@refs/k"}], file_output),
            "inputs.0.url",
            "not credentials or a port",
        ),
        "another scheme": (
            posted([{"path": "/i", "url": "gs://refs/k"}], file_output),
            "inputs.0.url",
            "supported: file, http, https, s3",
        ),
    }
    for case, (response, field, message) in refused.items():
        assert response.status_code == 400, (case, response.text)
        assert response.json()["field"] == field, case
        assert message in response.json()["message"], case
        assert "secret" not in response.text
    storage = client.get("/service-info").json()["storage"]
    assert storage[-4:] == ["http://", "https://", "s3://results/", "s3://refs/"]
