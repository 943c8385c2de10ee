"""What every bench script shares: the machine record, results, the busybox image, clean-up,
a live ``orchestrator serve`` subprocess, and percentiles.

Bench scripts run as ``python bench/x.py`` (pytest never collects them: its testpaths are
``tests/``). Each writes ``bench/results/<name>.json`` with ``write_result`` and prints a table;
``bench/run_all`` reads the ``summary`` rows of every result into one table.

Containers a script makes itself carry ``BENCH_LABEL``; the server's job containers carry the
runner's own ``orchestrator.runner=<name>`` label (``Server.label``). Scripts remove both in a
``finally`` with ``cleanup``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
IMAGE = "busybox:1.36"
BENCH_LABEL_KEY = "orchestrator.bench"
BENCH_LABEL = f"{BENCH_LABEL_KEY}=1"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})

_machine: dict[str, Any] | None = None


# --- the machine and results ----------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Cores, load average before the run, Docker, Python, OS and commit.

    The first call is the record (its load average is "before"); later calls return it again,
    so call it once at the start of a script.
    """
    global _machine
    if _machine is None:
        try:
            docker_version = docker_client().version().get("Version", "?")
        except docker.errors.DockerException as exc:
            docker_version = f"unavailable: {exc}"
        _machine = {
            "cores": os.cpu_count(),
            "load_before": [round(x, 2) for x in os.getloadavg()],
            "docker": docker_version,
            "python": platform.python_version(),
            "os": platform.platform(),
            "commit": _git("rev-parse", "--short", "HEAD"),
            "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    return _machine


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO_DIR, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


def summary_row(
    metric: str,
    value: float | None,
    *,
    unit: str = "",
    baseline: float | None = None,
    ratio: float | None = None,
    goal: str = "",
    met: bool | None = None,
) -> dict[str, Any]:
    """One row of ``bench/run_all``'s summary: a headline figure, its baseline and goal.

    ``ratio`` defaults to value / baseline when both are given; ``met`` is None when the
    figure has no goal.
    """
    if ratio is None and value is not None and baseline:
        ratio = value / baseline
    return {
        "metric": metric,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "ratio": ratio,
        "goal": goal,
        "met": met,
    }


def write_result(name: str, figures: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json``: the figures plus the machine record; its path.

    Put the headline rows (``summary_row``) under ``figures["summary"]`` for ``run_all``.
    """
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    body = {"name": name, "machine": machine(), **figures}
    body["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    body["load_after"] = [round(x, 2) for x in os.getloadavg()]
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")
    return path


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def print_table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Print ``rows`` (dicts) as an aligned text table of ``columns``, under ``title``."""
    values = [[row.get(column) for column in columns] for row in rows]
    cells = [[_cell(value) for value in line] for line in values]
    widths = [
        max([len(column), *(len(line[i]) for line in cells)]) for i, column in enumerate(columns)
    ]
    print(f"\n{title}")
    print("  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True)))
    print("  ".join("-" * width for width in widths))
    for line, raw in zip(cells, values, strict=True):
        # Numbers right-aligned, text left-aligned.
        print(
            "  ".join(
                cell.rjust(width) if isinstance(value, int | float) else cell.ljust(width)
                for cell, value, width in zip(line, raw, widths, strict=True)
            )
        )
    sys.stdout.flush()


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``values``, linearly interpolated; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def back_to_back(
    workers: int, seconds: float, send: Callable[[], Awaitable[httpx.Response]], ok: int
) -> tuple[list[float], int, float]:
    """``workers`` clients each sending ``send()`` as soon as its last answer came, for
    ``seconds``: the latencies (s) of the answers with status ``ok``, how many others (or
    transport errors) there were, and the time it took."""
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            try:
                response = await send()
            except httpx.HTTPError:
                errors += 1
                continue
            if response.status_code == ok:
                latencies.append(time.perf_counter() - began)
            else:
                errors += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return latencies, errors, time.perf_counter() - began


def base_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the options every bench script takes: ``--smoke`` and ``--postgres URL``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="a tiny run (~30 s), for CI")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="run the server on PostgreSQL: a fresh database is made beside URL's and dropped",
    )
    return parser


# --- Docker ---------------------------------------------------------------------------------


def docker_client(max_pool_size: int = 32) -> docker.DockerClient:
    """A client of the local engine whose connection pool holds ``max_pool_size`` connections
    (docker-py's default of 10 reconnects on every call above 10 concurrent ones)."""
    return docker.DockerClient.from_env(timeout=120, max_pool_size=max_pool_size)


def busybox_image() -> str:
    """``busybox:1.36``, built from the host's static busybox when it is missing (no registry)."""
    client = docker_client()
    try:
        client.images.get(IMAGE)
        return IMAGE
    except docker.errors.ImageNotFound:
        pass
    busybox = shutil.which("busybox")
    if busybox is None:
        raise SystemExit(f"{IMAGE} is missing and there is no busybox binary to build it from")
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
        repository, _, version = IMAGE.partition(":")
        client.api.import_image_from_data(tar.stdout, repository=repository, tag=version)
    return IMAGE


def container_ids(label: str) -> list[str]:
    """Ids of every container (running or not) carrying ``label``.

    The low-level list: docker-py's ``containers.list`` inspects each one, which fails when
    the runner removes a container in between."""
    client = docker_client()
    try:
        return [c["Id"] for c in client.api.containers(all=True, filters={"label": label})]
    finally:
        client.close()


def wait_removed(label: str, timeout: float = 120.0) -> None:
    """Wait until no container carries ``label`` (the runner removes its containers after the
    job's terminal state), so the next measurement does not overlap this one's removals."""
    wait_until(lambda: not container_ids(label), timeout=timeout, interval=0.05)


def cleanup(label: str = BENCH_LABEL) -> int:
    """Remove every container carrying ``label`` (``key=value`` or ``key``); how many."""
    client = docker_client()
    removed = 0
    for container in client.containers.list(
        all=True, filters={"label": label}, ignore_removed=True
    ):
        try:
            container.remove(force=True)
            removed += 1
        except docker.errors.NotFound:
            pass  # removed meanwhile (the runner removes its own)
    return removed


# --- processes ------------------------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (from /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name, which is in parentheses and may contain spaces.
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """The process's resident set size in bytes (from /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class CpuMeter:
    """CPU a process uses over a stretch of wall time, as a fraction of one core."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._cpu = cpu_seconds(pid)
        self._wall = time.monotonic()

    def read(self) -> float:
        """Cores used since construction (or the last ``read``), and restart the stretch."""
        cpu, wall = cpu_seconds(self.pid), time.monotonic()
        used = (cpu - self._cpu) / max(wall - self._wall, 1e-9)
        self._cpu, self._wall = cpu, wall
        return used


# --- a live server --------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on localhost right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running ``orchestrator serve`` subprocess and an HTTP client with its admin token."""

    url: str
    data_dir: Path
    runner_name: str
    process: subprocess.Popen[bytes]
    token: str
    http: httpx.Client
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        """The server process's id (for CPU, RSS and py-spy)."""
        return self.process.pid

    def installation(self) -> str:
        """The installation id in the server's database (its networks carry it)."""
        from orchestrator.services import runners
        from orchestrator.storage.db import Database

        url = self.env.get("ORCH_DATABASE_URL") or f"sqlite:///{self.data_dir / 'orchestrator.db'}"
        db = Database(url)
        try:
            with db.read() as session:
                return runners.installation_id(session)
        finally:
            db.dispose()

    @property
    def label(self) -> str:
        """The label on every container this server's runner makes."""
        return f"orchestrator.runner={self.runner_name}"

    @property
    def log_path(self) -> Path:
        """Where the server's stdout and stderr go."""
        return self.data_dir.parent / "server.log"

    def register(self, spec: dict[str, Any], project: str = "default") -> dict[str, Any]:
        """Register a job definition; the stored definition."""
        response = self.http.post(f"/v1/projects/{project}/definitions", json=spec)
        response.raise_for_status()
        return dict(response.json())

    def submit(self, project: str = "default", **body: Any) -> dict[str, Any]:
        """Submit a job; the job."""
        response = self.http.post(f"/v1/projects/{project}/jobs", json=body)
        response.raise_for_status()
        return dict(response.json())

    def job(self, job_id: str, project: str = "default") -> dict[str, Any]:
        """One job as the API shows it."""
        response = self.http.get(f"/v1/projects/{project}/jobs/{job_id}")
        response.raise_for_status()
        return dict(response.json())

    def stop(self) -> None:
        """Stop the server (SIGINT, then SIGKILL after 30 s) and close the client."""
        self.http.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _env_name(key: str) -> str:
    # start_server(tmp, runner_capacity=16) and start_server(tmp, ORCH_RUNNER_CAPACITY="16")
    # mean the same.
    return key if key.startswith("ORCH_") else f"ORCH_{key.upper()}"


def start_server(tmpdir: Path | str, **env: Any) -> Server:
    """Start ``orchestrator serve`` with its data dir in ``tmpdir`` on a free port.

    Keyword arguments are settings (``runner_capacity=16``, ``database_url=...``, or their
    ``ORCH_*`` names); without ``database_url`` it uses SQLite in the data dir. Waits for
    ``/healthz`` and the ``admin-token`` file. Stop it with ``Server.stop``.
    """
    tmp = Path(tmpdir)
    data_dir = tmp / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    runner_name = f"bench-{uuid.uuid4().hex[:10]}"
    settings = {
        "ORCH_DATA_DIR": str(data_dir),
        "ORCH_HOST": "127.0.0.1",
        "ORCH_PORT": str(port),
        "ORCH_RUNNER_NAME": runner_name,
        **{_env_name(key): str(value) for key, value in env.items() if value is not None},
    }
    runner_name = settings["ORCH_RUNNER_NAME"]
    process_env = {**os.environ, **settings}
    command = [sys.executable, "-m", "orchestrator", "serve"]
    log = (tmp / "server.log").open("ab")
    process = subprocess.Popen(
        command, env=process_env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_DIR
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    token_file = data_dir / "admin-token"
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"orchestrator serve exited ({process.returncode}):\n"
                + (tmp / "server.log").read_text()[-3000:]
            )
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200 and token_file.exists():
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(
                f"orchestrator serve did not answer /healthz within 60 s at {url}:\n"
                + (tmp / "server.log").read_text()[-3000:]
            )
        time.sleep(0.1)
    token = token_file.read_text().strip()
    http = httpx.Client(
        base_url=url,
        timeout=60,
        headers={"Authorization": f"Bearer {token}"},
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
    )
    return Server(url, data_dir, runner_name, process, token, http, settings)


@contextmanager
def running_server(tmpdir: Path | str, **env: Any) -> Iterator[Server]:
    """``start_server`` as a context: stops it and removes its runner's containers at the end."""
    server = start_server(tmpdir, **env)
    try:
        yield server
    finally:
        installation = server.installation()
        server.stop()
        cleanup(server.label)
        remove_networks(installation)


def remove_networks(installation: str) -> None:
    """Remove the project networks (and volumes) ``installation`` made: Docker has address
    pools for about 30 networks, and a bench run leaves a new installation's behind."""
    client = docker_client()
    label = f"orchestrator.installation={installation}"
    for network in client.networks.list(filters={"label": label}):
        network.remove()
    for volume in client.volumes.list(filters={"label": label}):
        volume.remove(force=True)


@contextmanager
def postgres_database(url: str | None) -> Iterator[str | None]:
    """A fresh, empty PostgreSQL database beside ``url``'s (dropped at the end); its URL.

    ``None`` passes through, so ``with postgres_database(args.postgres) as database_url:``
    serves both SQLite (None: the server's default) and PostgreSQL.
    """
    if url is None:
        yield None
        return
    import psycopg

    admin_url = url.replace("postgresql+psycopg://", "postgresql://")
    name = f"orch_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
            # FORCE cannot end an autovacuum worker (the superuser's) unless the role may
            # signal it: such a worker ends soon by itself, so try again meanwhile.
            for attempt in range(60):
                try:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    break
                except psycopg.errors.InsufficientPrivilege:
                    if attempt == 59:
                        raise
                    time.sleep(1)


def wait_until(predicate: Any, timeout: float = 60.0, interval: float = 0.05) -> Any:
    """Call ``predicate`` until it returns something truthy; that value (TimeoutError after)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached within {timeout} s")
        time.sleep(interval)
