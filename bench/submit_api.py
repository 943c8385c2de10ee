"""Submit API throughput (issue 7, item 2c): ``POST /v1/projects/default/jobs`` under 32
concurrent connections, the runner idle (its queue paused), against a trivial FastAPI endpoint
that inserts one row in the same kind of database, interleaved in one run.

The floor (``floor_app.py``) runs in its own uvicorn process, one worker, like ours. It has two
endpoints: ``/raw`` (the driver) is the goal's baseline; ``/orm`` (SQLModel) shows how much of
the gap is the ORM. Each target gets a warm-up, then ``ROUNDS`` measured phases, the order of
the targets rotating each round so drift on the shared machine hits them all alike.

    python bench/submit_api.py [--smoke] [--postgres URL]
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from common import (
    BENCH_DIR,
    CpuMeter,
    back_to_back,
    base_parser,
    free_port,
    machine,
    percentile,
    postgres_database,
    print_table,
    running_server,
    summary_row,
    wait_until,
    write_result,
)

CONNECTIONS = 32
GOAL_RATIO = 0.5
DEFINITION = {"name": "bench-noop", "image": "busybox:1.36", "command": ["true"]}
BODY = {"definition": "bench-noop"}


@dataclass
class Target:
    """One endpoint under load, and what its phases measured."""

    name: str
    base_url: str
    path: str
    pid: int
    headers: dict[str, str] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: int = 0
    server_cores: list[float] = field(default_factory=list)
    client_cores: list[float] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        """The target's table row (latencies in ms)."""
        return {
            "target": self.name,
            "requests": len(self.latencies),
            "errors": self.errors,
            "jobs_per_s": len(self.latencies) / self.seconds if self.seconds else None,
            "p50_ms": percentile(self.latencies, 50) * 1000,
            "p99_ms": percentile(self.latencies, 99) * 1000,
            "server_cores": sum(self.server_cores) / max(len(self.server_cores), 1),
            "client_cores": sum(self.client_cores) / max(len(self.client_cores), 1),
        }


async def _load(target: Target, seconds: float, record: bool) -> None:
    """``CONNECTIONS`` clients posting back to back for ``seconds``."""
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(
        base_url=target.base_url, headers=target.headers, limits=limits, timeout=60
    ) as client:
        meter = CpuMeter(target.pid)
        client_cpu = time.process_time()
        latencies, errors, elapsed = await back_to_back(
            CONNECTIONS, seconds, lambda: client.post(target.path, json=BODY), 201
        )
    if record:
        target.latencies += latencies
        target.seconds += elapsed
        target.errors += errors
        target.server_cores.append(meter.read())
        target.client_cores.append((time.process_time() - client_cpu) / elapsed)


def start_floor(tmp: Path, database_url: str) -> tuple[subprocess.Popen[bytes], str]:
    """The floor app in a uvicorn subprocess, one worker; its process and URL."""
    port = free_port()
    log = (tmp / "floor.log").open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "floor_app:app",
            "--app-dir",
            str(BENCH_DIR),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "info",
        ],
        env={**os.environ, "FLOOR_DATABASE_URL": database_url},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError((tmp / "floor.log").read_text()[-3000:])
        try:
            return httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=60, interval=0.1)
    return process, url


def measure(targets: list[Target], rounds: int, phase: float, warmup: float) -> None:
    """Warm each target up, then ``rounds`` phases each, rotating the order."""
    for target in targets:
        asyncio.run(_load(target, warmup, record=False))
    for number in range(rounds):
        shift = number % len(targets)
        for target in targets[shift:] + targets[:shift]:
            asyncio.run(_load(target, phase, record=True))
            print(f"  round {number + 1}: {target.name} done", flush=True)


def main() -> None:
    """Run the benchmark, print the table, write ``bench/results/submit_api.json``."""
    args = base_parser(__doc__.splitlines()[0]).parse_args()
    record = machine()
    rounds, phase, warmup = (1, 4.0, 1.0) if args.smoke else (3, 8.0, 3.0)
    kind = "postgres" if args.postgres else "sqlite"
    with tempfile.TemporaryDirectory(prefix="bench-submit-") as tmpdir:
        tmp = Path(tmpdir)
        with (
            postgres_database(args.postgres) as database_url,
            running_server(tmp, database_url=database_url) as server,
        ):
            server.register(DEFINITION)
            paused = server.http.patch("/v1/projects/default/queues/default", json={"paused": True})
            paused.raise_for_status()
            floor_url = database_url or f"sqlite:///{tmp / 'floor.db'}"
            floor, floor_base = start_floor(tmp, floor_url)
            try:
                auth = {"Authorization": f"Bearer {server.token}"}
                targets = [
                    Target(
                        "orchestrator", server.url, "/v1/projects/default/jobs", server.pid, auth
                    ),
                    Target("floor: raw driver", floor_base, "/raw", floor.pid),
                    Target("floor: SQLModel", floor_base, "/orm", floor.pid),
                ]
                measure(targets, rounds, phase, warmup)
            finally:
                floor.terminate()
                floor.wait(30)
    rows = [target.row() for target in targets]
    ours, raw, orm = rows
    ratio_raw = ours["jobs_per_s"] / raw["jobs_per_s"]
    ratio_orm = ours["jobs_per_s"] / orm["jobs_per_s"]
    for row in rows:
        row["ratio"] = ours["jobs_per_s"] / row["jobs_per_s"] if row["jobs_per_s"] else None
    title = (
        f"Submit API on {kind}: {CONNECTIONS} connections, {rounds} x {phase:g} s interleaved "
        f"(machine: {record['cores']} cores, load before {record['load_before']})"
    )
    columns = [
        "target",
        "requests",
        "errors",
        "jobs_per_s",
        "p50_ms",
        "p99_ms",
        "ratio",
        "server_cores",
        "client_cores",
    ]
    print_table(title, rows, columns)
    met = ratio_raw >= GOAL_RATIO
    print(
        f"\nours / raw-driver floor = {ratio_raw:.2f}x (goal >= {GOAL_RATIO}x: "
        f"{'met' if met else 'MISSED'}); ours / SQLModel floor = {ratio_orm:.2f}x"
    )
    path = write_result(
        "submit_api",
        {
            "database": kind,
            "smoke": args.smoke,
            "connections": CONNECTIONS,
            "rounds": rounds,
            "phase_seconds": phase,
            "targets": rows,
            "summary": [
                summary_row(
                    f"submit jobs/s ({kind})",
                    ours["jobs_per_s"],
                    unit="jobs/s",
                    baseline=raw["jobs_per_s"],
                    goal=f">= {GOAL_RATIO}x raw insert",
                    met=met,
                ),
                summary_row(f"submit p99 ({kind})", ours["p99_ms"], unit="ms"),
            ],
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
