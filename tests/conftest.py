"""Shared fixtures: a real Docker engine, a locally built busybox image, a real database
(SQLite and PostgreSQL, each test on a fresh one) and a live server on a free port.

Tests that need Docker or PostgreSQL skip when it is absent locally, and fail when ``CI=true``.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import httpx
import psycopg
import pytest
import uvicorn

from orchestrator.api import create_app
from orchestrator.api.server import build as build_server
from orchestrator.config import Settings
from orchestrator.process import Services
from orchestrator.rules.roles import Role
from orchestrator.services import runners, tokens
from orchestrator.services.audit import Actor
from orchestrator.storage.db import Database

pytest_plugins = ["tests.hosts", "tests.receiver"]
IN_CI = os.environ.get("CI", "").lower() == "true"
TEST_IMAGE = "busybox:1.36"
POSTGRES_URL = os.environ.get(
    "ORCH_TEST_POSTGRES_URL", "postgresql+psycopg://orch:orch@127.0.0.1:5432/postgres"
)
TERMINAL = {"succeeded", "failed", "cancelled"}


def unavailable(capability: str) -> None:
    """Skip locally, fail in CI: a missing capability must not pass CI silently."""
    if IN_CI:
        pytest.fail(f"{capability} is required in CI but is not available")
    pytest.skip(f"{capability} is not available")


# Long enough for a loaded two-core CI machine: httpx's own default (5 s) is not.
CLIENT_TIMEOUT = 30.0


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


# The tests' receivers (webhooks, HTTP targets, registries) listen on 127.0.0.1, which outbound
# requests may not reach by default: every server, sender and subprocess of the tests is allowed
# it here, through the environment. A test of the default passes ``outbound_allow_networks=""``.
OUTBOUND_ALLOWED = "127.0.0.0/8"


@pytest.fixture(scope="session", autouse=True)
def outbound_to_loopback() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ORCH_OUTBOUND_ALLOW_NETWORKS", OUTBOUND_ALLOWED)
        yield


# --- Docker ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except Exception:
        unavailable("a Docker engine")
    yield client
    client.close()


def build_busybox_image(client: docker.DockerClient, tag: str = TEST_IMAGE) -> None:
    """A busybox image with every applet, from the host's static busybox (no registry needed)."""
    busybox = shutil.which("busybox")
    if busybox is None:
        unavailable("a static busybox binary (apt-get install busybox-static)")
    with tempfile.TemporaryDirectory() as root:
        bin_dir = Path(root, "bin")
        bin_dir.mkdir()
        shutil.copy(busybox, bin_dir / "busybox")
        applets = subprocess.run(
            [busybox, "--list"], capture_output=True, text=True, check=True
        ).stdout.split()
        for applet in applets:
            if applet != "busybox":
                (bin_dir / applet).symlink_to("busybox")
        Path(root, "tmp").mkdir(mode=0o1777)
        tar = subprocess.run(["tar", "-C", root, "-c", "."], capture_output=True, check=True)
        repository, _, version = tag.partition(":")
        client.api.import_image_from_data(tar.stdout, repository=repository, tag=version)


@pytest.fixture(scope="session")
def busybox_image(docker_client: docker.DockerClient) -> str:
    try:
        docker_client.images.get(TEST_IMAGE)
    except docker.errors.ImageNotFound:
        build_busybox_image(docker_client)
    return TEST_IMAGE


class Cleanup:
    """Teardown work nothing after it waits for, done in the background in the order given;
    its first error fails the end of the session."""

    def __init__(self) -> None:
        self._worker = ThreadPoolExecutor(max_workers=1)
        self._done: list[Future[None]] = []

    def submit(self, work: Callable[..., None], *args: Any) -> None:
        self._done.append(self._worker.submit(work, *args))

    def finish(self) -> None:
        self._worker.shutdown(wait=True)
        for done in self._done:
            done.result()


@pytest.fixture(scope="session")
def cleanup() -> Iterator[Cleanup]:
    background = Cleanup()
    yield background
    background.finish()


# --- an S3 store ----------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Server:
    """A local S3-compatible store (moto's server, in this process) and a boto3 client of it.
    Its credentials are in this process's environment, where boto3 finds them (as a runner
    would find its own)."""

    endpoint_url: str
    client: Any

    def new_bucket(self) -> str:
        """A bucket of the test's own."""
        name = f"orch-test-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError:
        unavailable("moto's S3 server (pip install 'moto[server]')")
    credentials = {
        "AWS_ACCESS_KEY_ID": "orch-test-key",
        "AWS_SECRET_ACCESS_KEY": "orch-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {name: os.environ.get(name) for name in credentials}
    os.environ.update(credentials)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line for every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_port}"
    try:
        yield S3Server(endpoint, boto3.client("s3", endpoint_url=endpoint))
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- databases -----------------------------------------------------------------------------


def postgres_admin() -> psycopg.Connection[Any]:
    url = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    return connect_patiently(url, autocommit=True)


def connect_patiently(url: str, **options: Any) -> psycopg.Connection[Any]:
    """A connection, retried for up to 30 s while connecting times out (a server busy with the
    suite's load on two cores has missed 3 s once); a refused one (no server) fails at once."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return psycopg.connect(url, connect_timeout=3, **options)
        except psycopg.errors.ConnectionTimeout:
            if time.monotonic() > deadline:
                raise


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, migrated: MigratedTemplates, cleanup: Cleanup
) -> Iterator[str]:
    """A fresh database for one test: empty, or migrated (a copy of the session's template,
    with an installation id of its own) when only its servers (``make_settings``) use it and
    the test is not marked ``fresh_database``."""
    fresh = request.node.get_closest_marker("fresh_database") is not None
    from_template = not fresh and only_servers_use_the_database(request)
    if request.param == "sqlite":
        path = tmp_path / "orchestrator.db"
        if from_template:
            migrated.copy_sqlite(path)
        yield f"sqlite:///{path}"
        return
    try:
        admin = postgres_admin()
    except psycopg.OperationalError:
        unavailable(f"PostgreSQL at {POSTGRES_URL}")
    admin.close()
    name = migrated.take_postgres(from_template) or migrated.take_postgres(False)
    assert name is not None
    base, _, _ = POSTGRES_URL.rpartition("/")
    yield f"{base}/{name}"
    cleanup.submit(drop_database, name)  # nothing uses it any more


# --- migrated templates ----------------------------------------------------------------------
# Most tests' servers would run every migration on their fresh database (0.2 to 0.5 s each,
# ~800 tests): they get a copy of one migrated in the session instead. A test (or a fixture
# of its own) that takes ``database_url`` itself, or is marked ``fresh_database`` (its server
# must make the database), gets an empty database as before: the migrations from scratch are
# tested there (tests/services/test_migrations.py, both databases).


def only_servers_use_the_database(request: pytest.FixtureRequest) -> bool:
    """True when no fixture but ``make_settings`` (and the test not) takes ``database_url``:
    then only the servers started on it see it, and they would migrate it first."""
    info = request.node._fixtureinfo
    if "database_url" in info.argnames:
        return False
    return not any(
        "database_url" in definition.argnames
        for name, definitions in info.name2fixturedefs.items()
        if name not in ("database_url", "make_settings")
        for definition in definitions
    )


class MigratedTemplates:
    """A SQLite file and a PostgreSQL database at the newest revision, each made on first use;
    each copy gets an installation id of its own, as a database migrated alone would."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._sqlite: Path | None = None
        self._postgres: str | None = None
        # One database of each kind (migrated or not) is made ahead, in the background:
        # CREATE DATABASE takes 0.2 to 0.5 s.
        self._maker = ThreadPoolExecutor(max_workers=1)
        self._next: dict[bool, Future[str | None]] = {}

    def copy_sqlite(self, path: Path) -> None:
        if self._sqlite is None:
            template = self._root / "template.db"
            migrate(f"sqlite:///{template}")
            self._sqlite = template
        shutil.copy(self._sqlite, path)  # its mode too (the database is a private file)
        with sqlite3.connect(path) as connection:
            connection.execute(*new_installation())
        connection.close()

    def take_postgres(self, migrated: bool) -> str | None:
        """The name of a fresh database, copied from the template or empty, made while the
        previous test ran (and the next one begun); None if the template stayed busy
        (autovacuum)."""
        template = None
        if migrated:
            if self._postgres is None:
                self._postgres = f"orch_template_{uuid.uuid4().hex[:12]}"
                with postgres_admin() as admin:
                    admin.execute(f'CREATE DATABASE "{self._postgres}"')
                migrate(f"{POSTGRES_URL.rpartition('/')[0]}/{self._postgres}")
            template = self._postgres
        ready = self._next.get(migrated) or self._maker.submit(self._create_postgres, template)
        self._next[migrated] = self._maker.submit(self._create_postgres, template)
        return ready.result()

    @staticmethod
    def _create_postgres(template: str | None) -> str | None:
        name = f"orch_test_{uuid.uuid4().hex[:12]}"
        with postgres_admin() as admin:
            if template is None:
                admin.execute(f'CREATE DATABASE "{name}"')
                return name
            deadline = time.monotonic() + 5
            while True:
                try:
                    admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                    break
                except psycopg.errors.ObjectInUse:
                    if time.monotonic() > deadline:
                        return None
                    time.sleep(0.1)
        url = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
        with connect_patiently(f"{url.rpartition('/')[0]}/{name}") as copy:
            statement, values = new_installation()
            copy.execute(statement.replace("?", "%s"), values)
        return name

    def close(self) -> None:
        """Drop the databases made ahead and the template."""
        for made in self._next.values():
            left = made.result() if made.exception() is None else None
            if left is not None:
                drop_database(left)
        self._maker.shutdown()
        if self._postgres is not None:
            drop_database(self._postgres)


def migrate(url: str) -> None:
    db = Database(url)
    try:
        db.upgrade_schema()
    finally:
        db.dispose()


def new_installation() -> tuple[str, tuple[str, str]]:
    """The statement (and its values) that gives a copied database an installation of its own."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")  # naive UTC, as the models store
    return "UPDATE installation SET id = ?, create_time = ?", (uuid.uuid4().hex, now)


@pytest.fixture(scope="session")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigratedTemplates]:
    templates = MigratedTemplates(tmp_path_factory.mktemp("migrated"))
    yield templates
    templates.close()


def drop_database(name: str, timeout: float = 30.0) -> None:
    """Drop a test database, waiting out an autovacuum worker (which only a superuser may end)."""
    deadline = time.monotonic() + timeout
    with postgres_admin() as admin:
        while True:
            try:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except psycopg.errors.InsufficientPrivilege:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


# --- a live server -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    """A running server: its URL, an HTTP client on the default project, and its services."""

    url: str
    settings: Settings
    services: Services
    http: httpx.Client
    anonymous: httpx.Client
    _server: uvicorn.Server
    _thread: threading.Thread

    @property
    def api(self) -> httpx.Client:
        """A client whose base URL is the default project."""
        return self.http

    def submit(self, **body: Any) -> dict[str, Any]:
        """Submit a job to the default project; assert 201; the job."""
        response = self.http.post("/v1/projects/default/jobs", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def job(self, job_id: str, project: str = "default") -> dict[str, Any]:
        response = self.http.get(f"/v1/projects/{project}/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_job(
        self, job_id: str, statuses: set[str] | None = None, timeout: float = 60.0
    ) -> dict[str, Any]:
        """Wait until the job is in one of ``statuses`` (default: terminal); the job."""
        wanted = statuses or TERMINAL

        def reached() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["status"] in wanted else None

        return dict(wait_for(reached, timeout))

    def events(self, job_id: str) -> list[dict[str, Any]]:
        response = self.http.get(f"/v1/projects/default/jobs/{job_id}/events")
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    def logs(self, job_id: str) -> str:
        response = self.http.get(f"/v1/projects/default/jobs/{job_id}/logs")
        assert response.status_code == 200, response.text
        return response.text

    def register(self, spec: dict[str, Any], project: str = "default") -> dict[str, Any]:
        response = self.http.post(f"/v1/projects/{project}/definitions", json=spec)
        assert response.status_code in (200, 201), response.text
        return dict(response.json())

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self.http.close()
        self.anonymous.close()


def admin_token(settings: Settings) -> str:
    """The admin token the server wrote to its data dir on its first start."""
    return (settings.data_dir / "admin-token").read_text().strip()


def stream_reader(services: Services, project: str) -> Actor:
    """The actor of a new read token on ``project``, for tests that hold a stream's lease as the
    API does: the streams' token check ends a lease whose token is not in the database (so a
    made-up actor's streams end at the first check, ``streams.guard.CHECK_SECONDS`` in)."""
    with services.db.transaction() as session:
        _, plain = tokens.create(session, "stream reader", Role.READ, project, caps=services.caps)
    actor = services.verified_tokens.actor(plain)  # verified as a request's token is
    assert actor is not None
    return actor


def bearer(token: str) -> dict[str, str]:
    """The header that presents ``token``."""
    return {"Authorization": f"Bearer {token}"}


def start_server(settings: Settings) -> LiveServer:
    app = create_app(settings)
    # The server `orchestrator serve` runs: its protocol, its header timeout, its caps.
    http_server = build_server(app, settings, log_level="warning")
    thread = threading.Thread(target=http_server.run, daemon=True)
    thread.start()
    wait_for(lambda: http_server.started, timeout=30)
    url = f"http://{settings.host}:{settings.port}"
    return LiveServer(
        url=url,
        settings=settings,
        services=app.state.services,
        http=httpx.Client(
            base_url=url, timeout=CLIENT_TIMEOUT, headers=bearer(admin_token(settings))
        ),
        anonymous=httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT),
        _server=http_server,
        _thread=thread,
    )


@pytest.fixture
def make_settings(tmp_path: Path, database_url: str) -> Callable[..., Settings]:
    """Settings for a test server; keyword arguments override the test defaults."""
    runner_name = f"test-{uuid.uuid4().hex[:10]}"

    def make(**overrides: Any) -> Settings:
        # Any default may be overridden, the data dir, database and runner name included.
        defaults = {"data_dir": tmp_path / "data", "database_url": database_url}
        return server_settings(**{**defaults, "runner_name": runner_name, **overrides})

    return make


def server_settings(
    data_dir: Path, database_url: str, runner_name: str, **overrides: Any
) -> Settings:
    """The test defaults (a free port, short intervals); keyword arguments override them."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "port": free_port(),
        "runner_name": runner_name,
        "runner_capacity": 4,
        "poll_interval": 2.0,
        "engine_retry_interval": 0.5,
        "stop_grace_period": 2.0,
        "log_flush_interval": 0.1,
        "docker_host": None,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def make_server(
    make_settings: Callable[..., Settings],
    busybox_image: str,
    docker_client: docker.DockerClient,
    cleanup: Cleanup,
) -> Iterator[Callable[..., LiveServer]]:
    """Start live servers (stopped, and their containers removed, at the end of the test)."""
    started: list[LiveServer] = []

    def make(**overrides: Any) -> LiveServer:
        server = start_server(make_settings(**overrides))
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
    # Stopped, a server's installation is touched by nothing else of the session: its removal
    # (~0.15 s of engine calls) goes on while the next test runs.
    for server in started:
        cleanup.submit(remove_installation, docker_client, installation_of(server.settings))


def remove_installation(docker_client: docker.DockerClient, installation: str) -> None:
    """Remove everything ``installation`` made on the engine (runner processes of the test's
    included): its containers, then its projects' networks and volumes, and nothing else.
    Docker has address pools for about 30 networks: a test that leaves its networks behind
    makes later ones fail to create theirs."""
    label = f"orchestrator.installation={installation}"
    # ignore_removed: the runner may remove a container between docker-py's list and inspect.
    listed = docker_client.containers.list(all=True, filters={"label": label}, ignore_removed=True)
    for container in listed:
        container.remove(force=True)
    for network in docker_client.networks.list(filters={"label": label}):
        network.remove()
    for volume in docker_client.volumes.list(filters={"label": label}):
        volume.remove(force=True)


@pytest.fixture
def server(make_server: Callable[..., LiveServer]) -> LiveServer:
    """A live server with a runner (capacity 4) on the local engine."""
    return make_server()


def installation_of(settings: Settings) -> str:
    """The installation id of the database ``settings`` name (it must exist)."""
    db = Database(settings.resolved_database_url())
    try:
        with db.read() as session:
            return runners.installation_id(session)
    finally:
        db.dispose()


def containers_of(client: docker.DockerClient, job_id: str) -> list[Any]:
    """Every container (running or not) labelled with the job's id."""
    return list(
        client.containers.list(
            all=True, filters={"label": f"orchestrator.job-id={job_id}"}, ignore_removed=True
        )
    )


# --- one live server for a module ------------------------------------------------------------

# The databases a module-scoped server fixture is parametrized over.
DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextmanager
def module_server(
    kind: str, root: Path, docker_client: docker.DockerClient, **overrides: Any
) -> Iterator[LiveServer]:
    """A live server on a fresh ``kind`` database (``DATABASES``) under ``root``, for a module's
    tests that can share one (each in a project of its own, or only refused requests): one start
    instead of one a test. Stopped, its installation removed, its database dropped at the end."""
    database = None
    if kind == "sqlite":
        url = f"sqlite:///{root / 'orchestrator.db'}"
    else:
        try:
            admin = postgres_admin()
        except psycopg.OperationalError:
            unavailable(f"PostgreSQL at {POSTGRES_URL}")
        database = f"orch_test_{uuid.uuid4().hex[:12]}"
        with admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        url = f"{POSTGRES_URL.rpartition('/')[0]}/{database}"
    runner_name = f"test-{uuid.uuid4().hex[:10]}"
    server = start_server(server_settings(root / "data", url, runner_name, **overrides))
    try:
        yield server
    finally:
        server.stop()
        remove_installation(docker_client, installation_of(server.settings))
        if database is not None:
            drop_database(database)
