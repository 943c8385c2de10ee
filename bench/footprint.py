"""Footprint (issue 7, item 2g): resident memory of ``orchestrator serve`` idle, with 1k and
10k waiting jobs, and with 50 running containers.

Two servers, so one phase's leftovers (freed but still mapped heap) do not count in the other:

- Waiting: a server (runner on, default capacity) whose ``default`` queue is paused. The first
  100 and then 1k jobs are submitted over the API (4 clients): the first step warms the
  submit path up, the second shows what each submitted job leaves in the process. Then the
  queue is topped up to 10k by bulk-loading copies of one of them straight into the database
  (``queue_depth.bulk_load``), as submitting 10k through the API would take minutes. At each
  step the server does what it does with waiting jobs: it serves a page of them and the
  queue's counts, and its runner and scheduler loops run for a while; then the RSS is read.
  The growth from 1k to 10k, per 1k jobs, is the slope the goal asks to be flat.
- Running: a server with runner capacity 50 runs 50 ``sleep`` jobs (busybox, network
  ``none``); the RSS once all 50 are running, then the jobs are cancelled.

RSS is the server process's plus that of any child processes it has (there are none today;
the table says how many were counted). RssAnon (heap) and RssFile (mapped code, mostly
shared libraries) are shown apart: only the first grows with work.

    python bench/footprint.py [--smoke] [--postgres URL]
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from common import (
    IMAGE,
    Server,
    base_parser,
    busybox_image,
    machine,
    postgres_database,
    print_table,
    running_server,
    summary_row,
    wait_until,
    write_result,
)
from queue_depth import bulk_load, waiting

from orchestrator.storage.db import Database

NAME = "footprint"
MB = 1024 * 1024
IDLE_GOAL_MB = 120.0
# "No growth proportional to waiting jobs": the server holds nothing per waiting job, so going
# from the first step to the last should add no more than allocator noise and caches that
# fill once (statement cache, pages read by the ORM). 10 MB across 9k jobs is ~1.1 KB a job:
# less than one ORM Job row with its JSON columns, so anything kept per job would exceed it.
FLAT_LIMIT_MB = 10.0
SETTLE = 3.0  # seconds after start-up and between steps: let the loops run and the heap settle
# Seconds the runner and scheduler loops run over the waiting jobs at each step: two of the
# runner's 5 s polls (three seconds in a smoke run).
LOOPS, SMOKE_LOOPS = 10.0, 3.0
SUBMITTERS = 4
WAITING_DEFINITION = {
    "name": "bench-footprint-wait",
    "description": "bench/footprint.py: a job that waits in a paused queue",
    "image": IMAGE,
    "command": ["true"],
    "network": "none",
    "timeout": "5m",
}
RUNNING_DEFINITION = {
    "name": "bench-footprint-sleep",
    "description": "bench/footprint.py: a job that runs until cancelled",
    "image": IMAGE,
    "command": ["sleep", "600"],
    "network": "none",
    "timeout": "15m",
}


# --- memory ---------------------------------------------------------------------------------


def _status(pid: int) -> dict[str, int]:
    """The ``kB`` fields of /proc/<pid>/status, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            fields[key] = int(parts[0]) * 1024
    return fields


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children of each of its threads, recursively)."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in children.read_text().split():
            found += [int(child), *descendants(int(child))]
    return found


def memory(pid: int) -> dict[str, Any]:
    """RSS, RssAnon and RssFile (MB) of ``pid`` and its descendants; VmHWM (the peak RSS) of
    ``pid`` alone; how many processes were counted."""
    pids = [pid, *descendants(pid)]
    statuses = [_status(p) for p in pids]
    return {
        "rss_mb": sum(s.get("VmRSS", 0) for s in statuses) / MB,
        "anon_mb": sum(s.get("RssAnon", 0) for s in statuses) / MB,
        "file_mb": sum(s.get("RssFile", 0) for s in statuses) / MB,
        "peak_mb": statuses[0].get("VmHWM", 0) / MB,
        "processes": len(pids),
    }


def touch_api(server: Server) -> None:
    """What an idle server has done: answered a health check and a jobs page."""
    server.http.get("/healthz").raise_for_status()
    server.http.get("/v1/projects/default/jobs", params={"limit": 50}).raise_for_status()


def sample(server: Server, phase: str, **extra: Any) -> dict[str, Any]:
    """A table row: ``phase``, the server's memory now, and ``extra`` columns."""
    row = {"phase": phase, **extra, **memory(server.pid)}
    print(f"  {phase}: {row['rss_mb']:.1f} MB", flush=True)
    return row


# --- phases ---------------------------------------------------------------------------------


def idle(server: Server, phase: str) -> dict[str, Any]:
    """RSS of a server that started, served one request, and has nothing to do."""
    time.sleep(SETTLE)
    touch_api(server)
    time.sleep(SETTLE)
    return sample(server, phase, waiting=0, running=0)


def serve_waiting(server: Server, loops: float) -> None:
    """Do with the waiting jobs what a server does with them: list a page (the largest the API
    gives), count the queue, and let the runner and scheduler loops pass over them for
    ``loops`` seconds."""
    server.http.get(
        "/v1/projects/default/jobs", params={"status": "queued", "limit": 500}
    ).raise_for_status()
    server.http.get("/v1/projects/default/queues/default").raise_for_status()
    time.sleep(loops)


def submit_waiting(server: Server, count: int) -> list[dict[str, Any]]:
    """Submit ``count`` jobs over the API from ``SUBMITTERS`` clients; the jobs."""
    with ThreadPoolExecutor(SUBMITTERS) as pool:
        return list(
            pool.map(lambda _: server.submit(definition=WAITING_DEFINITION["name"]), range(count))
        )


def waiting_phase(
    server: Server, database_url: str | None, steps: list[tuple[int, str]], loops: float
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Idle, then each step of waiting jobs: ``(count, "api" or "bulk")`` tops the queue up to
    ``count`` over the API or by bulk-loading; the rows and how long the loading took."""
    rows = [idle(server, "idle")]
    server.register(WAITING_DEFINITION)
    server.http.patch(
        "/v1/projects/default/queues/default", json={"paused": True}
    ).raise_for_status()
    # The first job is submitted alone: it is the template bulk_load copies.
    template = submit_waiting(server, 1)[0]
    timing = {"api_submit_s": 0.0, "api_jobs": 1.0, "bulk_load_s": 0.0}
    db = Database(database_url or f"sqlite:///{server.data_dir / 'orchestrator.db'}")
    try:
        with db.write_engine.connect() as connection:
            template_seq = connection.execute(
                sa.text("SELECT seq FROM jobs WHERE id = :id"), {"id": template["id"]}
            ).scalar_one()
        for count, how in steps:
            # Only when some are missing: on SQLite bulk_load's CTE makes one row for count 0.
            missing = count - waiting(db)
            began = time.perf_counter()
            if missing > 0 and how == "api":
                submit_waiting(server, missing)
                timing["api_submit_s"] += time.perf_counter() - began
                timing["api_jobs"] += missing
            elif missing > 0:
                timing["bulk_load_s"] += bulk_load(db, template_seq, missing)
            print(f"  {missing} more by {how} in {time.perf_counter() - began:.1f} s", flush=True)
            serve_waiting(server, loops)
            now = waiting(db)
            rows.append(sample(server, f"{now} waiting ({how})", waiting=now, running=0))
    finally:
        db.dispose()
    timing["api_jobs_per_s"] = timing["api_jobs"] / max(timing["api_submit_s"], 1e-9)
    return rows, timing


def jobs_in(server: Server, status: str) -> list[dict[str, Any]]:
    """The default project's jobs in ``status`` (up to 500: more than this bench makes)."""
    response = server.http.get("/v1/projects/default/jobs", params={"status": status, "limit": 500})
    response.raise_for_status()
    return list(response.json()["items"])


def running_phase(server: Server, count: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Idle, then ``count`` running containers, then after cancelling them; the rows and how
    long the containers took to be running."""
    rows = [idle(server, f"idle (capacity {count})")]
    server.register(RUNNING_DEFINITION)
    began = time.perf_counter()
    submitted = [server.submit(definition=RUNNING_DEFINITION["name"]) for _ in range(count)]
    wait_until(lambda: len(jobs_in(server, "running")) >= count, timeout=300, interval=0.5)
    timing = {"start_all_s": time.perf_counter() - began}
    print(f"  {count} running after {timing['start_all_s']:.1f} s", flush=True)
    time.sleep(SETTLE)
    touch_api(server)
    rows.append(sample(server, f"{count} running", waiting=0, running=count))
    for job in submitted:
        server.http.post(f"/v1/projects/default/jobs/{job['id']}/cancel").raise_for_status()
    wait_until(lambda: not jobs_in(server, "running"), timeout=120, interval=0.5)
    time.sleep(SETTLE)
    rows.append(sample(server, "after cancelling them", waiting=0, running=0))
    return rows, timing


def main() -> None:
    """Run the benchmark, print the table, write ``bench/results/footprint.json``."""
    args = base_parser(__doc__.splitlines()[0]).parse_args()
    record = machine()
    # Two API steps (the first warms the submit path up, so the second shows what each
    # submitted job leaves behind), then bulk-loading to the largest depth.
    steps = (
        [(50, "api"), (200, "api"), (1_000, "bulk")]
        if args.smoke
        else [(100, "api"), (1_000, "api"), (10_000, "bulk")]
    )
    running = 5 if args.smoke else 50
    kind = "postgres" if args.postgres else "sqlite"
    busybox_image()
    began = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmpdir,
        postgres_database(args.postgres) as database_url,
    ):
        with running_server(Path(tmpdir, "waiting"), database_url=database_url) as server:
            waiting_rows, waiting_timing = waiting_phase(
                server, database_url, steps, SMOKE_LOOPS if args.smoke else LOOPS
            )
    with (
        tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmpdir,
        postgres_database(args.postgres) as database_url,
    ):
        # running_server removes the runner's containers however the phase ends.
        with running_server(
            Path(tmpdir), database_url=database_url, runner_capacity=running
        ) as server:
            running_rows, running_timing = running_phase(server, running)
    seconds = time.monotonic() - began

    idle_mb = waiting_rows[0]["rss_mb"]
    warm, first, last = waiting_rows[1], waiting_rows[2], waiting_rows[3]
    growth_mb = last["rss_mb"] - first["rss_mb"]
    per_1k_mb = growth_mb / ((last["waiting"] - first["waiting"]) / 1000)
    api_per_1k_mb = (first["rss_mb"] - warm["rss_mb"]) / (
        (first["waiting"] - warm["waiting"]) / 1000
    )
    running_mb = running_rows[1]["rss_mb"]
    per_container_mb = (running_mb - running_rows[0]["rss_mb"]) / running
    idle_met = idle_mb <= IDLE_GOAL_MB
    flat_met = growth_mb < FLAT_LIMIT_MB

    title = (
        f"Footprint of orchestrator serve on {kind}, MB "
        f"(machine: {record['cores']} cores, load before {record['load_before']})"
    )
    columns = ["phase", "waiting", "running", "rss_mb", "anon_mb", "file_mb", "peak_mb"]
    columns.append("processes")
    print_table(title, [*waiting_rows, *running_rows], columns)
    print(
        f"\nidle RSS {idle_mb:.1f} MB (goal <= {IDLE_GOAL_MB:g} MB: "
        f"{'met' if idle_met else 'MISSED'})"
        f"\ngrowth {first['waiting']} -> {last['waiting']} waiting: {growth_mb:+.1f} MB, "
        f"{per_1k_mb:+.2f} MB per 1k (goal: flat, < {FLAT_LIMIT_MB:g} MB in all: "
        f"{'met' if flat_met else 'MISSED'})"
        f"\n{warm['waiting']} -> {first['waiting']} submitted over the API: "
        f"{api_per_1k_mb:+.2f} MB per 1k"
        f"\n{running} running: {running_mb:.1f} MB, {per_container_mb:+.2f} MB per container"
        f"\n{seconds:.0f} s in all; API submits {waiting_timing['api_jobs_per_s']:.0f}/s",
        flush=True,
    )
    path = write_result(
        NAME,
        {
            "database": kind,
            "smoke": args.smoke,
            "seconds": seconds,
            "waiting": waiting_rows,
            "running": running_rows,
            "timing": {**waiting_timing, **running_timing},
            "growth_mb": growth_mb,
            "growth_per_1k_waiting_mb": per_1k_mb,
            "api_submit_growth_per_1k_mb": api_per_1k_mb,
            "per_running_container_mb": per_container_mb,
            "summary": [
                summary_row(
                    f"RSS idle ({kind})",
                    idle_mb,
                    unit="MB",
                    goal=f"<= {IDLE_GOAL_MB:g} MB",
                    met=idle_met,
                ),
                summary_row(
                    f"RSS growth per 1k waiting, {first['waiting']}->{last['waiting']} ({kind})",
                    per_1k_mb,
                    unit="MB",
                    baseline=first["rss_mb"],
                    ratio=last["rss_mb"] / first["rss_mb"],
                    goal=f"flat (< {FLAT_LIMIT_MB:g} MB in all)",
                    met=flat_met,
                ),
                summary_row(
                    f"RSS with {running} running ({kind})",
                    running_mb,
                    unit="MB",
                    baseline=running_rows[0]["rss_mb"],
                ),
            ],
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
