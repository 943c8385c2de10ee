"""One attempt of a GA4GH TES task on the real engine (``runner.tes_run``), with no database:
executors in order sharing volumes, their streams and stdin, inputs staged from content,
allowed roots and HTTP, outputs delivered under the output root, the escapes refused, cancel,
a missing image, and the executor containers never left behind nor taken for a job's."""

from __future__ import annotations

import http.server
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker
import httpx
import pytest

from orchestrator.background.outbound import guarded_transport
from orchestrator.docker.engine import DockerEngine
from orchestrator.docker.spec import INSTALLATION_LABEL, LABEL_PREFIX, TES_EXECUTOR_LABEL
from orchestrator.rules.outbound import OutboundRule, parse_networks
from orchestrator.rules.tes_storage import TesStorage
from orchestrator.runner.attempt_adoption import started_container
from orchestrator.runner.tes_run import (
    NOT_FOUND,
    NOT_MADE,
    ExecutorOutcome,
    OutputFile,
    TaskOutcome,
    TesFileSettings,
    remove_task_containers,
    run_task,
)
from orchestrator.runner.tes_s3 import S3Store
from tests.conftest import TEST_IMAGE, S3Server, remove_installation

LOOPBACK = OutboundRule(parse_networks("127.0.0.0/8"))


@pytest.fixture
def engine() -> Iterator[DockerEngine]:
    made = DockerEngine(None, timeout=30, pool_size=4)
    yield made
    made.close()


@pytest.fixture
def labels(docker_client: docker.DockerClient) -> Iterator[dict[str, str]]:
    """The labels of one attempt of a job of an installation of the test's own."""
    installation = uuid.uuid4().hex
    yield {
        INSTALLATION_LABEL: installation,
        f"{LABEL_PREFIX}job-id": uuid.uuid4().hex,
        f"{LABEL_PREFIX}attempt": "1",
    }
    remove_installation(docker_client, installation)


@pytest.fixture
def roots(tmp_path: Path) -> SimpleNamespace:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    return SimpleNamespace(inputs=inputs, outputs=tmp_path / "outputs", task=tmp_path / "task")


def file_settings(roots: SimpleNamespace, **overrides: Any) -> TesFileSettings:
    values: dict[str, Any] = {
        "input_roots": (roots.inputs,),
        "output_root": roots.outputs,
        "http_input_max_bytes": 1024 * 1024,
        "http_transport": lambda: guarded_transport(LOOPBACK, httpx.Limits()),
        "http_timeout": 10.0,
    } | overrides
    return TesFileSettings(**values)


class Run:
    """One call of ``run_task`` with what its callbacks were told."""

    def __init__(self, on_start: Callable[[], None] | None = None) -> None:
        self.events: list[tuple[str, int]] = []
        self.ended: list[ExecutorOutcome] = []
        self.on_start = on_start

    def started(self, index: int, when: datetime) -> None:
        assert when.tzinfo is not None
        self.events.append(("started", index))
        if self.on_start is not None:
            self.on_start()

    def finished(self, outcome: ExecutorOutcome) -> None:
        self.events.append(("ended", outcome.index))
        self.ended.append(outcome)


def run(
    engine: DockerEngine,
    labels: dict[str, str],
    roots: SimpleNamespace,
    task: dict[str, Any],
    *,
    cancel: threading.Event | None = None,
    calls: Run | None = None,
    settings: TesFileSettings | None = None,
    **options: Any,
) -> TaskOutcome:
    roots.task.mkdir(exist_ok=True)
    calls = calls or Run()
    values: dict[str, Any] = {
        "network": None,
        "user": None,
        "nano_cpus": None,
        "memory_bytes": None,
    } | options
    outcome = run_task(
        engine,
        task,
        task_dir=roots.task,
        names=f"orch-tes-{labels[f'{LABEL_PREFIX}job-id'][:12]}",
        labels=labels,
        settings=settings or file_settings(roots),
        cancel=cancel or threading.Event(),
        on_executor_started=calls.started,
        on_executor_ended=calls.finished,
        stop_grace=1,
        **values,
    )
    assert calls.ended == outcome.executors
    return outcome


def executor(*command: str, **fields: Any) -> dict[str, Any]:
    return {"image": TEST_IMAGE, "command": list(command), "ignore_error": False} | fields


def sh(script: str, **fields: Any) -> dict[str, Any]:
    return executor("sh", "-c", script, **fields)


def containers(client: docker.DockerClient, labels: dict[str, str]) -> list[Any]:
    filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
    return client.containers.list(all=True, filters=filters, ignore_removed=True)


# --- executors -------------------------------------------------------------------------------


def test_the_second_executor_reads_what_the_first_wrote_in_a_shared_volume(
    engine: DockerEngine,
    labels: dict[str, str],
    roots: SimpleNamespace,
    busybox_image: str,
    docker_client: docker.DockerClient,
) -> None:
    calls = Run()
    task = {
        "volumes": ["/shared"],
        "executors": [sh("echo hello from one > /shared/note"), executor("cat", "/shared/note")],
    }
    outcome = run(engine, labels, roots, task, calls=calls)
    assert outcome.state == "complete" and outcome.system_logs == []
    first, second = outcome.executors
    assert (first.exit_code, second.exit_code) == (0, 0)
    assert second.stdout == "hello from one\n" and second.stderr == ""
    assert first.end_time is not None and first.end_time <= second.start_time
    assert calls.events == [("started", 0), ("ended", 0), ("started", 1), ("ended", 1)]
    # Each executor container is removed once read.
    assert containers(docker_client, labels) == []


def test_stdin_stdout_and_stderr_are_files_at_their_container_paths(
    engine: DockerEngine, labels: dict[str, str], roots: SimpleNamespace, busybox_image: str
) -> None:
    task = {
        "volumes": ["/work"],
        "inputs": [{"path": "/in/data.txt", "content": "line one\nline two\n", "type": "FILE"}],
        "outputs": [
            {"path": "/work/out.txt", "url": f"file://{roots.outputs}/out.txt", "type": "FILE"}
        ],
        "executors": [
            # wc reads its stdin; seq writes more than the tail keeps.
            sh(
                "wc -l; echo to stderr >&2; seq 1 30000",
                stdin="/in/data.txt",
                stdout="/work/out.txt",
                stderr="/work/logs/err.txt",
            ),
            executor("cat", "/work/logs/err.txt"),
        ],
    }
    outcome = run(engine, labels, roots, task)
    assert outcome.state == "complete", outcome.system_logs
    first, second = outcome.executors
    whole = "2\n" + "".join(f"{n}\n" for n in range(1, 30001))
    assert len(whole) > 2 * 64 * 1024
    # The file has every byte; the outcome the last 64 KiB.
    assert (roots.outputs / "out.txt").read_text() == whole
    assert first.stdout == whole[-64 * 1024 :]
    assert first.stderr == "to stderr\n"
    assert second.stdout == "to stderr\n"
    (delivered,) = outcome.outputs
    assert delivered == OutputFile(
        url=(roots.outputs / "out.txt").as_uri(), path="/work/out.txt", size_bytes=len(whole)
    )


def test_an_executor_that_never_reads_its_stdin_still_ends(
    engine: DockerEngine, labels: dict[str, str], roots: SimpleNamespace, busybox_image: str
) -> None:
    big = "x" * (4 * 1024 * 1024)
    task = {
        "inputs": [{"path": "/in/big", "content": big, "type": "FILE"}],
        "executors": [executor("true", stdin="/in/big"), executor("wc", "-c", stdin="/in/big")],
    }
    outcome = run(engine, labels, roots, task)
    assert outcome.state == "complete"
    assert outcome.executors[1].stdout == f"{len(big)}\n"


def test_workdir_env_user_network_and_limits_are_applied(
    engine: DockerEngine,
    labels: dict[str, str],
    roots: SimpleNamespace,
    busybox_image: str,
    docker_client: docker.DockerClient,
) -> None:
    seen: list[dict[str, Any]] = []

    def started() -> None:
        (container,) = containers(docker_client, labels)
        seen.append(container.attrs)

    calls = Run(started)
    task = {
        "executors": [
            sh(
                "pwd; echo $GREETING; id -u; ls /sys/class/net; sleep 0.2",
                workdir="/tmp/place",
                env={"GREETING": "hi there"},
            )
        ]
    }
    outcome = run(
        engine,
        labels,
        roots,
        task,
        calls=calls,
        network="none",
        user="1234",
        nano_cpus=500_000_000,
        memory_bytes=64 * 1024 * 1024,
    )
    assert outcome.state == "complete", outcome.system_logs
    assert outcome.executors[0].stdout == "/tmp/place\nhi there\n1234\nlo\n"
    (attrs,) = seen
    host = attrs["HostConfig"]
    assert (host["NanoCpus"], host["Memory"], host["NetworkMode"]) == (
        500_000_000,
        64 * 1024 * 1024,
        "none",
    )
    assert attrs["Name"] == f"/orch-tes-{labels[f'{LABEL_PREFIX}job-id'][:12]}-x0"
    assert attrs["Config"]["Labels"] == labels | {TES_EXECUTOR_LABEL: "0"}


def test_a_failing_executor_stops_the_task_unless_it_ignores_errors(
    engine: DockerEngine, labels: dict[str, str], roots: SimpleNamespace, busybox_image: str
) -> None:
    task = {
        "volumes": ["/v"],
        "outputs": [{"path": "/v/x", "url": f"file://{roots.outputs}/x", "type": "FILE"}],
        "executors": [
            sh("echo x > /v/x; exit 3", ignore_error=True),
            sh("echo failing >&2; exit 1"),
            executor("true"),
        ],
    }
    outcome = run(engine, labels, roots, task)
    assert outcome.state == "executor_error"
    assert [e.exit_code for e in outcome.executors] == [3, 1]
    assert outcome.executors[1].stderr == "failing\n"
    # Outputs are delivered only when the executors succeeded.
    assert outcome.outputs == [] and not roots.outputs.exists()


def test_an_executor_that_cannot_start_is_an_executor_error(
    engine: DockerEngine, labels: dict[str, str], roots: SimpleNamespace, busybox_image: str
) -> None:
    outcome = run(engine, labels, roots, {"executors": [executor("no-such-binary")]})
    assert outcome.state == "executor_error"
    assert outcome.executors[0].exit_code == NOT_FOUND  # as `docker run` exits
    (line,) = outcome.system_logs
    assert line.startswith("executor 0 could not start:") and "no-such-binary" in line
    # One that ignores its errors lets the next run.
    task = {"executors": [executor("no-such-binary", ignore_error=True), executor("true")]}
    outcome = run(engine, labels, roots, task)
    assert outcome.state == "complete"
    assert [e.exit_code for e in outcome.executors] == [NOT_FOUND, 0]
    assert len(outcome.system_logs) == 1


def test_cancel_stops_the_running_executor_and_starts_no_other(
    engine: DockerEngine,
    labels: dict[str, str],
    roots: SimpleNamespace,
    busybox_image: str,
    docker_client: docker.DockerClient,
) -> None:
    cancel = threading.Event()
    seen: list[list[Any]] = []

    def started() -> None:
        seen.append(containers(docker_client, labels))
        cancel.set()

    calls = Run(started)
    task = {"executors": [executor("sleep", "30"), executor("true")]}
    outcome = run(engine, labels, roots, task, cancel=cancel, calls=calls)
    assert outcome.state == "canceled"
    (stopped,) = outcome.executors
    assert stopped.exit_code in (137, 143)  # SIGKILL or SIGTERM and stopped.end_time is not None
    # It was running when cancelled; it is gone now, and the second never ran.
    assert [c.status for c in seen[0]] == ["running"]
    assert containers(docker_client, labels) == []
    assert calls.events == [("started", 0), ("ended", 0)]


def test_a_missing_image_is_a_system_error_naming_it(
    engine: DockerEngine, labels: dict[str, str], roots: SimpleNamespace
) -> None:
    image = "no-such-registry.invalid/ghost:9"
    outcome = run(engine, labels, roots, {"executors": [{"image": image, "command": ["x"]}]})
    assert outcome.state == "system_error"
    assert outcome.executors[0].exit_code == NOT_MADE
    (line,) = outcome.system_logs
    assert line.startswith("executor 0 could not be created:") and image in line


# --- inputs ----------------------------------------------------------------------------------


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def web(tmp_path: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving a directory with ``page.txt`` (2000 bytes)."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "page.txt").write_bytes(b"w" * 2000)

    def handler(*args: Any) -> _Files:
        return _Files(*args, directory=str(served))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_inputs_come_from_content_allowed_files_directories_and_http(
    engine: DockerEngine,
    labels: dict[str, str],
    roots: SimpleNamespace,
    busybox_image: str,
    web: str,
) -> None:
    (roots.inputs / "one.txt").write_text("from a file\n")
    tree = roots.inputs / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("a\n")
    (tree / "sub" / "b.txt").write_text("b\n")
    # A link that stays inside the root is followed.
    (tree / "link.txt").symlink_to(roots.inputs / "one.txt")
    task = {
        "volumes": ["/vol"],
        "inputs": [
            {"path": "/in/content.txt", "content": "literal\n", "type": "FILE"},
            {"path": "/in/file.txt", "url": f"file://{roots.inputs}/one.txt", "type": "FILE"},
            {"path": "/in/tree", "url": f"file://{tree}", "type": "DIRECTORY"},
            {"path": "/in/page.txt", "url": f"{web}/page.txt?token=secret", "type": "FILE"},
            {"path": "/vol/mine.txt", "content": "changeable\n", "type": "FILE"},
        ],
        "executors": [
            sh(
                "cat /in/content.txt /in/file.txt /in/tree/a.txt /in/tree/sub/b.txt "
                "/in/tree/link.txt; wc -c < /in/page.txt; "
                "(echo x > /in/file.txt) 2>/dev/null && echo writable || echo read-only; "
                "echo changed > /vol/mine.txt && cat /vol/mine.txt"
            )
        ],
    }
    outcome = run(engine, labels, roots, task)
    assert outcome.state == "complete", outcome.system_logs
    assert outcome.executors[0].stdout == (
        "literal\nfrom a file\na\nb\nfrom a file\n2000\nread-only\nchanged\n"
    )


@pytest.mark.parametrize(
    "case",
    [
        "outside",
        "dotdot",
        "escaping link",
        "escaping link in a directory",
        "no roots",
        "missing",
        "loopback by default",
        "too large",
        "scheme",
    ],
)
def test_an_input_that_cannot_be_staged_is_a_system_error_and_no_executor_runs(
    engine: DockerEngine,
    labels: dict[str, str],
    roots: SimpleNamespace,
    web: str,
    case: str,
) -> None:
    (roots.inputs / "escape").symlink_to("/etc/passwd")
    (roots.inputs / "tree").mkdir()
    (roots.inputs / "tree" / "escape").symlink_to("/etc")
    settings = file_settings(roots)
    kind = "FILE"
    url, expected = {
        "outside": ("file:///etc/passwd", "outside the allowed input roots"),
        "dotdot": (f"file://{roots.inputs}/../task", "has a '..' component"),
        "escaping link": (f"file://{roots.inputs}/escape", "outside the allowed input roots"),
        "escaping link in a directory": (
            f"file://{roots.inputs}/tree",
            "escape leads outside the allowed input roots",
        ),
        "no roots": ("file:///etc/passwd", "file:// inputs are not allowed on this server"),
        "missing": (f"file://{roots.inputs}/nothing", "does not exist"),
        "loopback by default": (
            f"{web}/page.txt",
            "the download failed: 127.0.0.1 is a loopback address, refused",
        ),
        "too large": (f"{web}/page.txt", "larger than 1000 bytes"),
        "scheme": ("s3://bucket/key", "scheme 's3' is not supported for inputs on this server"),
    }[case]
    if case == "escaping link in a directory":
        kind = "DIRECTORY"
    if case == "no roots":
        settings = file_settings(roots, input_roots=())
    if case == "loopback by default":
        settings = file_settings(
            roots, http_transport=lambda: guarded_transport(OutboundRule(), httpx.Limits())
        )
    if case == "too large":
        settings = file_settings(roots, http_input_max_bytes=1000)
    calls = Run()
    task = {
        "inputs": [{"path": "/in/x", "url": url, "type": kind}],
        "executors": [executor("true")],
    }
    outcome = run(engine, labels, roots, task, calls=calls, settings=settings)
    assert outcome.state == "system_error" and outcome.executors == [] and calls.events == []
    (line,) = outcome.system_logs
    assert line.startswith("inputs[0] (") and expected in line
    assert line.endswith("; no executor was started")
    assert "secret" not in line and not (roots.task / "in" / "x" / "passwd").exists()


# --- outputs ---------------------------------------------------------------------------------


def test_outputs_are_files_directories_and_wildcard_matches_with_their_sizes(
    engine: DockerEngine, labels: dict[str, str], roots: SimpleNamespace, busybox_image: str
) -> None:
    out = roots.outputs
    task = {
        "volumes": ["/data"],
        "outputs": [
            {"path": "/data/one.txt", "url": f"file://{out}/deep/one.txt", "type": "FILE"},
            {"path": "/data/dir", "url": f"file://{out}/dir", "type": "DIRECTORY"},
            {
                "path": "/data/w/*/*.csv",
                "path_prefix": "/data/w",
                "url": f"file://{out}/csv",
                "type": "FILE",
            },
            # Its own directory is mounted writable for the executor, outside any volume.
            {"path": "/results/r.txt", "url": f"file://{out}/r.txt", "type": "FILE"},
        ],
        "executors": [
            sh(
                "printf abc > /data/one.txt; mkdir -p /data/dir/sub /data/w/a /data/w/b; "
                "printf 12345 > /data/dir/x; printf 1 > /data/dir/sub/y; "
                "printf 1,2 > /data/w/a/p.csv; printf 3,4,5 > /data/w/b/q.csv; "
                "printf no > /data/w/b/r.txt; printf hidden > /data/w/a/.h.csv; "
                "printf rr > /results/r.txt"
            )
        ],
    }
    outcome = run(engine, labels, roots, task)
    assert outcome.state == "complete", outcome.system_logs
    assert [(o.path, o.url, o.size_bytes) for o in outcome.outputs] == [
        ("/data/one.txt", (out / "deep" / "one.txt").as_uri(), 3),
        ("/data/dir/sub/y", (out / "dir" / "sub" / "y").as_uri(), 1),
        ("/data/dir/x", (out / "dir" / "x").as_uri(), 5),
        ("/data/w/a/p.csv", (out / "csv" / "a" / "p.csv").as_uri(), 3),
        ("/data/w/b/q.csv", (out / "csv" / "b" / "q.csv").as_uri(), 5),
        ("/results/r.txt", (out / "r.txt").as_uri(), 2),
    ]
    assert (out / "dir" / "x").read_text() == "12345"
    assert (out / "csv" / "b" / "q.csv").read_text() == "3,4,5"


@pytest.mark.parametrize(
    ("script", "output", "expected"),
    [
        (
            "ln -s /etc/passwd /data/pw",
            {"path": "/data/pw", "type": "FILE"},
            "pw is a symbolic link, which is never followed",
        ),
        (
            "mkdir /data/d; echo ok > /data/d/a; ln -s /etc/passwd /data/d/pw",
            {"path": "/data/d", "type": "DIRECTORY"},
            "pw is a symbolic link, which is never followed",
        ),
        (
            "rm -r /data/etc; ln -s /etc /data/etc",
            {"path": "/data/etc/passwd", "type": "FILE"},
            "etc is a symbolic link, which is never followed",
        ),
        ("true", {"path": "/data/../etc/passwd", "type": "FILE"}, "has a '..' component"),
        ("true", {"path": "/data/missing", "type": "FILE"}, "/data/missing does not exist"),
    ],
    ids=["file link", "link in a directory", "linked directory", "dotdot", "missing"],
)
def test_an_output_never_follows_a_link_nor_leaves_the_task(
    engine: DockerEngine,
    labels: dict[str, str],
    roots: SimpleNamespace,
    busybox_image: str,
    script: str,
    output: dict[str, Any],
    expected: str,
) -> None:
    task = {
        "volumes": ["/data"],
        "outputs": [output | {"url": f"file://{roots.outputs}/got"}],
        "executors": [sh(script)],
    }
    outcome = run(engine, labels, roots, task)
    assert outcome.state == "system_error"
    (line,) = outcome.system_logs
    assert line.startswith("outputs[0]") and expected in line
    copied = [p for p in roots.outputs.rglob("*") if p.is_file()] if roots.outputs.exists() else []
    assert all("root:" not in p.read_text() for p in copied)


def test_wildcards_match_no_link(
    engine: DockerEngine, labels: dict[str, str], roots: SimpleNamespace, busybox_image: str
) -> None:
    task = {
        "volumes": ["/data"],
        "outputs": [
            {
                "path": "/data/*.txt",
                "path_prefix": "/data",
                "url": f"file://{roots.outputs}/m",
                "type": "FILE",
            }
        ],
        "executors": [sh("echo ok > /data/a.txt; ln -s /etc/passwd /data/pw.txt")],
    }
    outcome = run(engine, labels, roots, task)
    assert outcome.state == "complete"
    assert [o.path for o in outcome.outputs] == ["/data/a.txt"]
    assert not (roots.outputs / "m" / "pw.txt").exists()


@pytest.mark.parametrize(
    "url",
    [
        "file:///tmp/elsewhere-{uuid}",
        "file://{out}/../escaped-{uuid}",
        "file://{out}/link/deeper/x",
        "s3://bucket/key",
    ],
    ids=["outside", "dotdot", "link in the root", "scheme"],
)
def test_an_output_url_outside_the_output_root_is_refused(
    engine: DockerEngine,
    labels: dict[str, str],
    roots: SimpleNamespace,
    busybox_image: str,
    url: str,
) -> None:
    mark = uuid.uuid4().hex
    target = url.format(out=roots.outputs, uuid=mark)
    roots.outputs.mkdir()
    outside = roots.outputs.parent / "outside"
    outside.mkdir()
    (roots.outputs / "link").symlink_to(outside)
    task = {
        "volumes": ["/data"],
        "outputs": [{"path": "/data/a", "url": target, "type": "FILE"}],
        "executors": [sh("echo a > /data/a")],
    }
    outcome = run(engine, labels, roots, task)
    assert outcome.state == "system_error" and outcome.outputs == []
    assert not Path(f"/tmp/elsewhere-{mark}").exists()
    assert not (roots.outputs.parent / f"escaped-{mark}").exists()
    assert list(outside.iterdir()) == []


# --- s3:// ------------------------------------------------------------------------------------


def s3_settings(roots: SimpleNamespace, s3: S3Server, *buckets: str, **overrides: Any) -> Any:
    return file_settings(
        roots,
        storage=TesStorage(s3_buckets=buckets),
        s3=S3Store(endpoint_url=s3.endpoint_url, region="us-east-1", timeout=5),
        **overrides,
    )


def test_s3_inputs_and_outputs_are_objects_of_an_allowed_bucket(
    engine: DockerEngine,
    labels: dict[str, str],
    roots: SimpleNamespace,
    busybox_image: str,
    s3_server: S3Server,
) -> None:
    bucket = s3_server.new_bucket()
    put = s3_server.client.put_object
    put(Bucket=bucket, Key="in/one.txt", Body=b"one\n")
    put(Bucket=bucket, Key="in/tree/a.txt", Body=b"a\n")
    put(Bucket=bucket, Key="in/tree/sub/b.txt", Body=b"b\n")
    put(Bucket=bucket, Key="in/tree/marker/", Body=b"")  # a console's "folder": skipped
    put(Bucket=bucket, Key="in/treeless.txt", Body=b"not under in/tree/")
    task = {
        "volumes": ["/data"],
        "inputs": [
            {"path": "/in/one.txt", "url": f"s3://{bucket}/in/one.txt", "type": "FILE"},
            {"path": "/in/tree", "url": f"s3://{bucket}/in/tree", "type": "DIRECTORY"},
        ],
        "outputs": [
            {"path": "/data/r.txt", "url": f"s3://{bucket}/out/r.txt", "type": "FILE"},
            {"path": "/data/dir", "url": f"s3://{bucket}/out/dir/", "type": "DIRECTORY"},
            {
                "path": "/data/w/*.csv",
                "path_prefix": "/data/w",
                "url": f"s3://{bucket}/out/csv",
                "type": "FILE",
            },
        ],
        "executors": [
            sh(
                "cat /in/one.txt /in/tree/a.txt /in/tree/sub/b.txt; ls -A /in/tree | tr '\\n' ' ';"
                "printf abc > /data/r.txt; mkdir -p /data/dir/sub /data/w; "
                "printf 12345 > /data/dir/sub/x; printf 1,2 > /data/w/p.csv"
            )
        ],
    }
    outcome = run(engine, labels, roots, task, settings=s3_settings(roots, s3_server, bucket))

    assert outcome.state == "complete", outcome.system_logs
    assert outcome.executors[0].stdout == "one\na\nb\na.txt sub "
    assert [(o.path, o.url, o.size_bytes) for o in outcome.outputs] == [
        ("/data/r.txt", f"s3://{bucket}/out/r.txt", 3),
        ("/data/dir/sub/x", f"s3://{bucket}/out/dir/sub/x", 5),
        ("/data/w/p.csv", f"s3://{bucket}/out/csv/p.csv", 3),
    ]
    got = s3_server.client.get_object
    assert got(Bucket=bucket, Key="out/r.txt")["Body"].read() == b"abc"
    assert got(Bucket=bucket, Key="out/dir/sub/x")["Body"].read() == b"12345"
    assert got(Bucket=bucket, Key="out/csv/p.csv")["Body"].read() == b"1,2"


@pytest.mark.parametrize(
    "case",
    [
        "bucket not allowed",
        "missing key",
        "missing bucket",
        "too large",
        "directory too large",
        "unsafe key",
        "empty prefix",
    ],
)
def test_an_s3_input_that_cannot_be_staged_says_why(
    engine: DockerEngine,
    labels: dict[str, str],
    roots: SimpleNamespace,
    busybox_image: str,
    s3_server: S3Server,
    case: str,
) -> None:
    bucket = s3_server.new_bucket()
    s3_server.client.put_object(Bucket=bucket, Key="big", Body=b"x" * 2000)
    s3_server.client.put_object(Bucket=bucket, Key="tree/../escape", Body=b"x")
    for name in ("a", "b"):  # each under the limit, not both
        s3_server.client.put_object(Bucket=bucket, Key=f"halves/{name}", Body=b"x" * 600)
    allowed, url, kind, expected = {
        "bucket not allowed": ("other", f"s3://{bucket}/big", "FILE", f"bucket '{bucket}' is not"),
        "missing key": (bucket, f"s3://{bucket}/nothing", "FILE", "S3 answered NoSuchKey"),
        "missing bucket": ("*", "s3://orch-no-such-bucket/k", "FILE", "S3 answered NoSuchBucket"),
        "too large": (bucket, f"s3://{bucket}/big", "FILE", "larger than 1000 bytes"),
        "directory too large": (
            bucket,
            f"s3://{bucket}/halves",
            "DIRECTORY",
            "larger than 1000 bytes together",
        ),
        "unsafe key": (bucket, f"s3://{bucket}/tree", "DIRECTORY", "has an empty, '.' or '..'"),
        "empty prefix": (bucket, f"s3://{bucket}/bi", "DIRECTORY", "no object has this prefix"),
    }[case]
    settings = s3_settings(roots, s3_server, allowed, http_input_max_bytes=1000)
    task = {
        "inputs": [{"path": "/in/x", "url": url, "type": kind}],
        "executors": [executor("true")],
    }
    outcome = run(engine, labels, roots, task, settings=settings)

    assert outcome.state == "system_error" and outcome.executors == []
    (line,) = outcome.system_logs
    assert line.startswith("inputs[0] (s3://") and expected in line
    assert "orch-test-secret" not in line and "orch-test-key" not in line


def test_an_s3_output_to_a_bucket_not_allowed_is_a_system_error(
    engine: DockerEngine,
    labels: dict[str, str],
    roots: SimpleNamespace,
    busybox_image: str,
    s3_server: S3Server,
) -> None:
    bucket = s3_server.new_bucket()
    task = {
        "volumes": ["/data"],
        "outputs": [{"path": "/data/a", "url": f"s3://{bucket}/a", "type": "FILE"}],
        "executors": [sh("echo a > /data/a")],
    }
    outcome = run(engine, labels, roots, task, settings=s3_settings(roots, s3_server, "other"))

    assert outcome.state == "system_error" and outcome.outputs == []
    assert f"bucket '{bucket}' is not one this server may use" in outcome.system_logs[-1]
    assert s3_server.client.list_objects_v2(Bucket=bucket).get("Contents") is None


def test_streams_and_stdin_never_go_through_a_link(
    engine: DockerEngine, labels: dict[str, str], roots: SimpleNamespace, busybox_image: str
) -> None:
    (roots.inputs / "victim").write_text("untouched\n")
    task = {
        "volumes": ["/data"],
        "executors": [
            sh(f"ln -s {roots.inputs} /data/logs; ln -s /etc/passwd /data/in"),
            sh("echo overwritten", stdout="/data/logs/victim"),
        ],
    }
    outcome = run(engine, labels, roots, task)
    assert outcome.state == "system_error"
    assert outcome.system_logs[0].startswith("executor 1: stdout: logs is a symbolic link")
    assert (roots.inputs / "victim").read_text() == "untouched\n"
    task["executors"][1] = executor("cat", stdin="/data/in")
    roots.task = roots.task.parent / "task2"
    outcome = run(engine, labels, roots, task)
    assert outcome.state == "system_error" and "root:" not in outcome.executors[1].stdout
    assert "executors[1].stdin" in outcome.system_logs[0]


# --- the containers --------------------------------------------------------------------------


def test_remove_task_containers_takes_the_executors_and_nothing_else(
    engine: DockerEngine,
    labels: dict[str, str],
    busybox_image: str,
    docker_client: docker.DockerClient,
) -> None:
    other = labels | {f"{LABEL_PREFIX}attempt": "2"}
    made = {
        name: docker_client.containers.create(busybox_image, ["sleep", "30"], labels=found)
        for name, found in {
            "executor": labels | {TES_EXECUTOR_LABEL: "0"},
            "job's": labels,
            "other attempt's": other | {TES_EXECUTOR_LABEL: "0"},
        }.items()
    }
    made["executor"].start()
    remove_task_containers(engine, labels)
    left = {
        c.id for c in containers(docker_client, {INSTALLATION_LABEL: labels[INSTALLATION_LABEL]})
    }
    assert left == {made["job's"].id, made["other attempt's"].id}
    with pytest.raises(ValueError):
        remove_task_containers(engine, {})


def test_a_restarted_runner_never_adopts_an_executor_as_the_jobs_container(
    engine: DockerEngine,
    labels: dict[str, str],
    busybox_image: str,
    docker_client: docker.DockerClient,
) -> None:
    executor_container = docker_client.containers.run(
        busybox_image, ["sleep", "30"], labels=labels | {TES_EXECUTOR_LABEL: "0"}, detach=True
    )
    # What ``started_container`` reads of its context and job.
    context = SimpleNamespace(engine=engine, installation=labels[INSTALLATION_LABEL])
    job = SimpleNamespace(id=labels[f"{LABEL_PREFIX}job-id"], attempt=1)
    assert started_container(context, job) is None  # type: ignore[arg-type]
    assert containers(docker_client, labels) == []
    assert executor_container.id  # made, and now gone


def test_the_tails_replace_invalid_bytes(
    engine: DockerEngine, labels: dict[str, str], roots: SimpleNamespace, busybox_image: str
) -> None:
    outcome = run(engine, labels, roots, {"executors": [executor("printf", "a\\377b")]})
    assert outcome.executors[0].stdout == "a\ufffdb"
    assert os.path.isdir(roots.task)
