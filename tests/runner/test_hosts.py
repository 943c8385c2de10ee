"""Two hosts: runner processes on two Docker engines sharing one PostgreSQL database.

The first runner uses the machine's engine, the second the second engine
(``scripts/second-docker-engine``); an API-only server in this process takes the submissions.
Each job's container writes a marker file named after its job and attempt into a shared
directory, so the test counts what really ran. Figures of the 2,000-job run are printed.
"""

from __future__ import annotations

import os
import select
import socket
import socketserver
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import psycopg
import pytest
import sqlalchemy as sa

from tests.conftest import (
    POSTGRES_URL,
    TEST_IMAGE,
    LiveServer,
    drop_database,
    free_port,
    installation_of,
    postgres_admin,
    unavailable,
    wait_for,
)
from tests.hosts import RunnerProcess, SecondEngine
from tests.workers import build_worker_image, worker_definition

FIRST_ENGINE = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
RUNNER_SETTINGS = {
    "ORCH_POLL_INTERVAL": "30",  # wake-ups come over LISTEN/NOTIFY, not from the poll
    "ORCH_ENGINE_RETRY_INTERVAL": "0.5",
    "ORCH_STOP_GRACE_PERIOD": "2",
    "ORCH_LOG_FLUSH_INTERVAL": "0.1",
    "ORCH_POLICY_ALLOW_HOST_MOUNTS": "true",
    "ORCH_RUNNER_LEASE": "3",
    "ORCH_DRAIN_TIMEOUT": "60",
}


@pytest.fixture
def database_url() -> Iterator[str]:
    """A fresh PostgreSQL database: runners on several hosts share PostgreSQL, not SQLite."""
    try:
        admin = postgres_admin()
    except psycopg.OperationalError:
        unavailable(f"PostgreSQL at {POSTGRES_URL}")
    name = f"orch_hosts_{os.urandom(6).hex()}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = POSTGRES_URL.rpartition("/")
    yield f"{base}/{name}"
    drop_database(name)


class Cluster:
    """The API server, the marker directory and a way to start runners on either engine."""

    def __init__(
        self,
        api: LiveServer,
        markers: Path,
        start: Callable[..., RunnerProcess],
        second: SecondEngine,
    ) -> None:
        self.api = api
        self.markers = markers
        self._start = start
        self.second = second

    def runner(
        self,
        name: str,
        engine: str,
        capacity: int,
        queues: list[str],
        database_url: str | None = None,
        **settings: str,
    ) -> RunnerProcess:
        """Start a runner process on the first or second engine (``settings``: more ORCH_*)."""
        process = self._start(
            docker_host=FIRST_ENGINE if engine == "first" else self.second.url,
            name=name,
            database_url=database_url or self.api.settings.database_url,
            data_dir=self.api.settings.data_dir,
            capacity=capacity,
            queues=queues,
            env={**RUNNER_SETTINGS, **settings},
        )
        wait_for(lambda: self.runner_view(name).get("state") == "active", timeout=60)
        return process

    def runner_view(self, name: str) -> dict[str, Any]:
        response = self.api.http.get(f"/v1/runners/{name}")
        return dict(response.json()) if response.status_code == 200 else {}

    def queue(self, name: str, **fields: Any) -> None:
        response = self.api.http.post("/v1/projects/default/queues", json={"name": name, **fields})
        assert response.status_code == 201, response.text

    def define(self, name: str, script: str) -> None:
        self.api.register(
            {
                "name": name,
                "image": TEST_IMAGE,
                "command": ["sh", "-c", script],
                "volumes": [f"{self.markers}:/markers"],
                "network": "none",
            }
        )

    def statuses(self) -> Counter[str]:
        with self.api.services.db.read() as session:
            rows = session.execute(sa.text("SELECT status, count(*) FROM jobs GROUP BY status"))
            return Counter({status: count for status, count in rows})

    def jobs(self, where: str = "TRUE") -> list[dict[str, Any]]:
        with self.api.services.db.read() as session:
            rows = session.execute(sa.text(f"SELECT * FROM jobs WHERE {where}")).mappings()
            return [dict(row) for row in rows]

    def events(self, where: str = "TRUE") -> list[dict[str, Any]]:
        with self.api.services.db.read() as session:
            rows = session.execute(
                sa.text(f"SELECT * FROM job_events WHERE {where} ORDER BY id")
            ).mappings()
            return [dict(row) for row in rows]

    def marker_names(self) -> list[str]:
        return sorted(path.name for path in self.markers.iterdir())

    def containers(self, runner: str) -> list[Any]:
        """The runner's containers on both engines."""
        found = []
        for url in (FIRST_ENGINE, self.second.url):
            client = docker.DockerClient(base_url=url, timeout=30)
            try:
                found += client.containers.list(
                    all=True,
                    filters={"label": f"orchestrator.runner={runner}"},
                    ignore_removed=True,
                )
            finally:
                client.close()
        return found


@pytest.fixture
def cluster(
    make_server: Callable[..., LiveServer],
    runner_processes: Callable[..., RunnerProcess],
    second_engine: SecondEngine,
    tmp_path: Path,
) -> Cluster:
    markers = tmp_path / "markers"
    markers.mkdir(mode=0o777)
    api = make_server(runner_enabled=False, policy_allow_host_mounts=True, runner_lease=3)
    return Cluster(api, markers, runner_processes, second_engine)


def wait_all_done(cluster: Cluster, total: int, timeout: float) -> None:
    def done() -> bool:
        counts = cluster.statuses()
        return sum(counts[s] for s in ("succeeded", "failed", "cancelled")) == total

    wait_for(done, timeout=timeout, interval=0.5)


def holds(condition: Callable[[], bool], seconds: float) -> bool:
    """Whether ``condition`` stays true for ``seconds`` (checked every 0.2 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not condition():
            return False
        time.sleep(0.2)
    return True


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one instant (an end before a start at the same time)."""
    points = [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals]
    current = peak = 0
    for _, step in sorted(points, key=lambda p: (p[0], p[1])):
        current += step
        peak = max(peak, current)
    return peak


# The load run's size: 120 jobs by default (about half a minute), enough for both runners to
# share the work and for the limited queue (18 of them) to reach its limit;
# ORCH_TEST_HOSTS_JOBS=2000 is the full run (about twelve minutes on two cores).
HOSTS_JOBS = int(os.environ.get("ORCH_TEST_HOSTS_JOBS", "120"))


@pytest.mark.timeout(max(900, HOSTS_JOBS))
def test_many_jobs_run_exactly_once_across_two_hosts(cluster: Cluster) -> None:
    total, limit = HOSTS_JOBS, 3
    # Every sixth job of the first 90% goes to the limited queue: 15% of them.
    limited = total * 15 // 100
    cluster.queue("limited", max_concurrency=limit)
    cluster.define("mark", "touch /markers/$ORCH_JOB_ID.$ORCH_ATTEMPT")
    cluster.runner("host-1", "first", capacity=6, queues=[])
    cluster.runner("host-2", "second", capacity=6, queues=[])

    def submit(index: int) -> str:
        queue = "limited" if index % 6 == 0 and index < limited * 6 else "default"
        response = cluster.api.http.post(
            "/v1/projects/default/jobs", json={"definition": "mark", "queue": queue}
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(submit, range(total)))
    submitted = time.monotonic() - started
    wait_all_done(cluster, total, timeout=max(800, total * 0.6))
    elapsed = time.monotonic() - started

    jobs = cluster.jobs()
    assert len(jobs) == total == len(set(ids))
    assert Counter(job["status"] for job in jobs) == {"succeeded": total}
    assert {job["attempt"] for job in jobs} == {1}
    assert {job["interrupted_attempts"] for job in jobs} == {0}
    # Each job's container ran once: one marker per job, all of attempt 1.
    assert cluster.marker_names() == sorted(f"{job_id}.1" for job_id in ids)
    started_events = Counter(e["job_id"] for e in cluster.events("type = 'started'"))
    assert set(started_events.values()) == {1}
    by_runner = Counter(job["runner"] for job in jobs)
    assert set(by_runner) == {"host-1", "host-2"}
    assert min(by_runner.values()) > total // 10

    # The queue limit held across both runners: from claim to outcome, never more than 3.
    limited_jobs = [job for job in jobs if job["queue"] == "limited"]
    assert len(limited_jobs) == limited
    spans: dict[str, list[datetime]] = {}
    for event in cluster.events("type IN ('starting', 'succeeded')"):
        spans.setdefault(event["job_id"], []).append(event["time"])
    limited_ids = {job["id"] for job in limited_jobs}
    intervals = [(times[0], times[-1]) for job_id, times in spans.items() if job_id in limited_ids]
    assert max_overlap(intervals) == limit
    assert len({job["runner"] for job in limited_jobs}) == 2
    wait_for(lambda: not cluster.containers("host-1") and not cluster.containers("host-2"))
    print(
        f"\n{total} jobs on 2 runners (capacity 6 each, two engines): submitted in "
        f"{submitted:.1f} s, all done in {elapsed:.1f} s = {total / elapsed:.1f} jobs/s; "
        f"per runner {dict(by_runner)}; limited queue peak {max_overlap(intervals)}/{limit}"
    )


def test_a_killed_runner_restarted_adopts_its_containers(cluster: Cluster) -> None:
    cluster.queue("adopt")
    cluster.define(
        "exits",
        'echo start; sleep "$S"; echo "{\\"code\\": $CODE}" > "$ORCH_OUTPUT"; echo end; '
        'exit "$CODE"',
    )
    runner = cluster.runner("host-2", "second", capacity=6, queues=["adopt"])
    cases = [("1", "0"), ("1", "3"), ("1", "0"), ("8", "0"), ("8", "5"), ("8", "0")]
    ids = [
        cluster.api.submit(definition="exits", queue="adopt", env={"S": s, "CODE": c})["id"]
        for s, c in cases
    ]
    wait_for(lambda: all(cluster.api.job(i)["status"] == "running" for i in ids), timeout=60)
    runner.kill9()
    # The short ones exit while no runner watches; nobody changes the jobs meanwhile.
    engine = cluster.second.client
    short = ids[:3]
    wait_for(
        lambda: all(
            c.status == "exited"
            for c in engine.containers.list(
                all=True, filters={"label": "orchestrator.runner=host-2"}, ignore_removed=True
            )
            if c.labels["orchestrator.job-id"] in short
        ),
        timeout=30,
    )
    assert {cluster.api.job(i)["status"] for i in ids} == {"running"}
    runner.restart()
    for job_id, (_, code) in zip(ids, cases, strict=True):
        done = cluster.api.wait_job(job_id, timeout=60)
        assert done["exit_code"] == int(code), done
        assert done["status"] == ("succeeded" if code == "0" else "failed")
        assert done["output"] == {"code": int(code)}
        assert done["attempt"] == 1
        assert cluster.api.logs(job_id) == "start\nend\n"
        assert "runner_lost" not in [e["type"] for e in cluster.api.events(job_id)]
    wait_for(lambda: not cluster.containers("host-2"))


def test_a_killed_runners_jobs_are_recovered_by_the_other_after_the_lease(
    cluster: Cluster,
) -> None:
    cluster.queue("recover")
    cluster.define("work", 'touch "/markers/$ORCH_JOB_ID.$ORCH_ATTEMPT"; sleep 4')
    doomed = cluster.runner("host-2", "second", capacity=4, queues=["recover"])
    ids = [cluster.api.submit(definition="work", queue="recover")["id"] for _ in range(4)]
    wait_for(lambda: all(cluster.api.job(i)["status"] == "running" for i in ids), timeout=60)
    doomed.kill9()
    killed_at = time.monotonic()
    cluster.runner("host-1", "first", capacity=4, queues=["recover"])
    for job_id in ids:
        done = cluster.api.wait_job(job_id, timeout=60)
        assert done["status"] == "succeeded", done
        assert done["runner"] == "host-1"
        assert done["attempt"] == 2
        assert done["interrupted_attempts"] == 1
        types = [e["type"] for e in cluster.api.events(job_id)]
        assert types.count("runner_lost") == 1
        assert types.count("succeeded") == 1
    # Not before the lease (3 s) ran out.
    assert time.monotonic() - killed_at >= 3
    assert cluster.runner_view("host-2")["state"] == "lost"
    # The lost runner comes back: it records nothing for its old attempts and removes their
    # containers (fenced by attempt number).
    doomed.restart()
    wait_for(lambda: cluster.runner_view("host-2").get("state") == "active", timeout=60)
    wait_for(lambda: not cluster.containers("host-2"), timeout=60)
    for job_id in ids:
        job = cluster.api.job(job_id)
        assert (job["status"], job["attempt"], job["runner"]) == ("succeeded", 2, "host-1")
        assert [e["type"] for e in cluster.api.events(job_id)].count("succeeded") == 1
    assert {f"{i}.2" for i in ids} <= set(cluster.marker_names())


def test_the_engine_stopped_and_started_under_a_runner(cluster: Cluster) -> None:
    cluster.queue("outage")
    cluster.define(
        "resumable",
        'if [ -e "/markers/$ORCH_JOB_ID" ]; then echo again; exit 0; fi; '
        "touch \"/markers/$ORCH_JOB_ID\"; trap 'exit 143' TERM; sleep 60 & wait",
    )
    cluster.define("quick", "echo quick")
    cluster.runner("host-2", "second", capacity=4, queues=["outage"])
    ids = [cluster.api.submit(definition="resumable", queue="outage")["id"] for _ in range(3)]
    wait_for(lambda: all(cluster.api.job(i)["status"] == "running" for i in ids), timeout=60)
    # A stopping engine stops its containers (no live restore): their attempts are
    # interrupted, not failed, and wait in the queue for an engine.
    cluster.second.stop()
    try:
        wait_for(lambda: cluster.runner_view("host-2")["docker"] == "unavailable", timeout=30)
        # (A claim may slip in while the engine shuts down, answering some calls and not
        # others; it cannot start a container and goes back to the queue.)
        wait_for(lambda: {cluster.api.job(i)["status"] for i in ids} == {"queued"}, timeout=90)
        waiting = cluster.api.submit(definition="quick", queue="outage")["id"]
        # While the engine is away nothing is claimed and nothing fails.
        assert holds(lambda: cluster.api.job(waiting)["status"] == "queued", seconds=3)
        assert {cluster.api.job(i)["status"] for i in ids} == {"queued"}
        assert cluster.runner_view("host-2")["state"] == "active"
    finally:
        cluster.second.start()
    for job_id in [*ids, waiting]:
        done = cluster.api.wait_job(job_id, timeout=90)
        assert done["status"] == "succeeded", done
    for job_id in ids:
        job = cluster.api.job(job_id)
        assert job["interrupted_attempts"] == 1
        events = cluster.api.events(job_id)
        (interrupted,) = [e for e in events if e["type"] == "interrupted"]
        assert interrupted["detail"]["reason"] == "engine_unavailable"
        assert "again" in cluster.api.logs(job_id)
    wait_for(lambda: cluster.runner_view("host-2")["docker"] == "ok", timeout=30)


def test_a_drain_during_load_loses_nothing(cluster: Cluster) -> None:
    cluster.queue("busy")
    cluster.define("step", 'sleep 2; touch "/markers/$ORCH_JOB_ID.$ORCH_ATTEMPT"')
    staying = cluster.runner("host-1", "first", capacity=3, queues=["busy"])
    leaving = cluster.runner("host-2", "second", capacity=3, queues=["busy"])
    # Twice what both runners hold: jobs are still waiting when one of them drains.
    total = 12
    ids = [cluster.api.submit(definition="step", queue="busy")["id"] for _ in range(total)]
    wait_for(lambda: cluster.runner_view("host-2")["running"] >= 2, timeout=60)
    leaving.terminate()
    drained_at = datetime.now(UTC).replace(tzinfo=None)  # the database's naive UTC
    assert leaving.wait(timeout=60) == 0
    assert cluster.runner_view("host-2")["state"] == "stopped"
    wait_all_done(cluster, total, timeout=120)
    jobs = cluster.jobs()
    assert Counter(job["status"] for job in jobs) == {"succeeded": total}
    assert {job["attempt"] for job in jobs} == {1}
    assert cluster.marker_names() == sorted(f"{i}.1" for i in ids)
    late_claims = [
        e
        for e in cluster.events("type = 'starting'")
        if e["detail"].get("runner") == "host-2" and (e["time"] - drained_at).total_seconds() > 1.0
    ]
    assert late_claims == []
    assert staying.alive
    assert "drain" in leaving.log_text()


def test_a_drain_past_its_deadline_leaves_jobs_to_the_restarted_runner(cluster: Cluster) -> None:
    cluster.queue("rolling")
    cluster.define("long", 'echo begin; sleep 6; echo "{\\"ok\\": true}" > "$ORCH_OUTPUT"')
    old = cluster.runner("host-2", "second", 2, ["rolling"], ORCH_DRAIN_TIMEOUT="1")
    ids = [cluster.api.submit(definition="long", queue="rolling")["id"] for _ in range(2)]
    wait_for(lambda: all(cluster.api.job(i)["status"] == "running" for i in ids), timeout=60)
    old.terminate()
    assert old.wait(timeout=30) == 0
    assert "leaving 2 running jobs" in old.log_text()
    assert {cluster.api.job(i)["status"] for i in ids} == {"running"}
    # The upgraded runner starts under the same name and adopts what the old one left.
    old.restart()
    for job_id in ids:
        done = cluster.api.wait_job(job_id, timeout=60)
        assert done["status"] == "succeeded", done
        assert (done["attempt"], done["interrupted_attempts"]) == (1, 0)
        assert done["output"] == {"ok": True}
        assert cluster.api.logs(job_id) == "begin\n"
    wait_for(lambda: not cluster.containers("host-2"))


def test_a_cancel_reaches_the_runner_on_the_other_host_at_once(cluster: Cluster) -> None:
    cluster.queue("remote")
    cluster.define("loop", "trap 'exit 0' TERM; while true; do sleep 0.1; done")
    cluster.runner("host-2", "second", 1, ["remote"])
    job_id = cluster.api.submit(definition="loop", queue="remote")["id"]
    cluster.api.wait_job(job_id, {"running"}, timeout=30)
    asked = time.monotonic()
    response = cluster.api.http.post(f"/v1/projects/default/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    assert cluster.api.wait_job(job_id, timeout=10)["status"] == "cancelled"
    # The runner polls every 30 s: only the NOTIFY explains an end this soon.
    assert time.monotonic() - asked < 5
    wait_for(lambda: not cluster.containers("host-2"))


class _ForwardToPostgres(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        upstream = socket.create_connection(self.server.upstream)  # type: ignore[attr-defined]
        sockets = [self.request, upstream]
        try:
            while not getattr(self.server, "closing", False):
                readable, _, _ = select.select(sockets, [], [], 0.5)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is self.request else self.request).sendall(data)
        except OSError:
            return
        finally:
            upstream.close()


class DatabaseProxy:
    """A TCP port forwarding to PostgreSQL while it is up: one runner's database outage."""

    def __init__(self, database_url: str) -> None:
        url = sa.engine.make_url(database_url)
        self.upstream = (url.host or "127.0.0.1", url.port or 5432)
        self.port = free_port()
        self.url = url.set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)
        self._server: socketserver.ThreadingTCPServer | None = None

    def up(self) -> None:
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), _ForwardToPostgres)
        server.daemon_threads = True
        server.upstream = self.upstream  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def down(self) -> None:
        if self._server is not None:
            self._server.closing = True  # type: ignore[attr-defined]
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def test_an_attempt_that_ends_while_the_database_is_away_is_recorded_when_it_returns(
    cluster: Cluster,
) -> None:
    proxy = DatabaseProxy(cluster.api.settings.database_url or "")
    proxy.up()
    try:
        cluster.queue("dbless")
        cluster.define("exit4", "echo out; sleep 3; exit 4")
        runner = cluster.runner(
            "host-2", "second", 1, ["dbless"], database_url=proxy.url, ORCH_RUNNER_LEASE="60"
        )
        job_id = cluster.api.submit(definition="exit4", queue="dbless")["id"]
        cluster.api.wait_job(job_id, {"running"}, timeout=30)
        proxy.down()
        wait_for(lambda: "could not record the attempt" in runner.log_text(), timeout=30)
        assert cluster.api.job(job_id)["status"] == "running"
        proxy.up()
        done = cluster.api.wait_job(job_id, timeout=60)
        assert (done["status"], done["exit_code"], done["attempt"]) == ("failed", 4, 1)
        assert done["error"] == "the container exited with code 4"
        assert cluster.api.logs(job_id) == "out\n"
        wait_for(lambda: not cluster.containers("host-2"))
    finally:
        proxy.down()


def test_a_runner_on_the_second_engine_makes_the_projects_network_there(cluster: Cluster) -> None:
    # Networks are per engine: each runner makes its project's network where it runs the job.
    engine = cluster.second.client
    image = build_worker_image(engine, TEST_IMAGE)
    cluster.queue("far")
    cluster.api.register(worker_definition("far-worker", image))
    cluster.api.register({"name": "far-job", "image": TEST_IMAGE, "command": ["true"]})
    runner = cluster.runner("host-2", "second", capacity=2, queues=["far"])
    installation = installation_of(cluster.api.settings)
    label = f"orchestrator.installation={installation}"
    try:
        worker = cluster.api.submit(definition="far-worker", queue="far", input={"text": "far"})
        job = cluster.api.submit(definition="far-job", queue="far")
        # The runner, on this host, reached the worker on the second engine's project network.
        assert cluster.api.wait_job(worker["id"])["output"] == "far"
        assert cluster.api.wait_job(job["id"])["status"] == "succeeded"
        (network,) = engine.networks.list(filters={"label": label})
        assert network.name == f"orch-{installation[:12]}-default"
        assert network.attrs["Labels"]["orchestrator.project"] == "default"
        first = docker.DockerClient(base_url=FIRST_ENGINE)
        try:
            assert not first.networks.list(filters={"label": label})
        finally:
            first.close()
    finally:
        runner.terminate()
        runner.wait()
        for container in engine.containers.list(all=True, filters={"label": label}):
            container.remove(force=True)
        for network in engine.networks.list(filters={"label": label}):
            network.remove()
