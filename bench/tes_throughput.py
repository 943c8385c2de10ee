"""Issue 22's performance goal: a one-executor ``true`` task through GA4GH TES costs within 1.1x
of the same job through the native API (``bench/throughput.py``'s method, in one run).

One server with its runner at capacity 4. Each round submits N jobs of a native definition
running ``true`` in busybox (on the project's network, as a TES executor runs) into a fresh
queue, then N TES tasks of one executor running the same ``true`` (into the TES queue), and
times each batch from just before its first submit to its last job's ``finish_time``; the
containers are waited out between batches. Rounds alternate which arm goes first. Also reports
the server process's CPU during each arm.

    python bench/tes_throughput.py [--jobs N] [--rounds R] [--smoke] [--postgres URL]

Run as a file: its directory, bench/, is then first on sys.path, so ``import common`` works.
"""

from __future__ import annotations

import tempfile
import time
from datetime import datetime
from typing import Any

import common

NAME = "tes_throughput"
CAPACITY = 4
TES = "/ga4gh/tes/v1"
DEFINITION = {
    "name": "bench-true-net",
    "description": "bench/tes_throughput.py: `true` on the project's network, as TES runs it",
    "image": common.IMAGE,
    "command": ["true"],
    "timeout": "5m",
}


def finished_by(server: common.Server, ids: list[str]) -> float:
    """The latest ``finish_time`` of ``ids`` (native jobs), once all succeeded."""

    def done() -> list[dict[str, Any]] | None:
        jobs = [server.job(job_id) for job_id in ids]
        if all(job["status"] in {"succeeded", "failed", "cancelled"} for job in jobs):
            return jobs
        return None

    jobs = common.wait_until(done, timeout=600, interval=0.2)
    statuses = {job["status"] for job in jobs}
    if statuses != {"succeeded"}:
        raise RuntimeError(f"statuses {statuses}")
    return max(datetime.fromisoformat(job["finish_time"]).timestamp() for job in jobs)


def native_batch(server: common.Server, jobs: int, queue: str) -> tuple[float, float]:
    """(seconds, server cores) for ``jobs`` native jobs in a fresh queue."""
    server.http.post("/v1/projects/default/queues", json={"name": queue}).raise_for_status()
    meter = common.CpuMeter(server.pid)
    began = time.time()
    ids = [server.submit(definition=DEFINITION["name"], queue=queue)["id"] for _ in range(jobs)]
    last = finished_by(server, ids)
    cores = meter.read()
    common.wait_removed(server.label)
    return last - began, cores


def tes_batch(server: common.Server, jobs: int) -> tuple[float, float]:
    """(seconds, server cores) for ``jobs`` one-executor TES tasks."""
    meter = common.CpuMeter(server.pid)
    began = time.time()
    task = {"executors": [{"image": common.IMAGE, "command": ["true"]}]}
    ids = []
    for _ in range(jobs):
        response = server.http.post(f"{TES}/tasks", json=task)
        response.raise_for_status()
        ids.append(response.json()["id"])
    last = finished_by(server, ids)
    cores = meter.read()
    common.wait_removed(server.label)
    return last - began, cores


def main() -> None:
    """Run the benchmark, print its table and write bench/results/tes_throughput.json."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30, help="jobs per batch (default 30)")
    parser.add_argument("--rounds", type=int, default=3, help="native+TES pairs (default 3)")
    args = parser.parse_args()
    if args.smoke:
        args.jobs, args.rounds = 6, 1
    info = common.machine()
    common.busybox_image()
    native: list[float] = []
    tes: list[float] = []
    native_cores: list[float] = []
    tes_cores: list[float] = []
    with (
        common.postgres_database(args.postgres) as database_url,
        tempfile.TemporaryDirectory(prefix="bench-tes-") as tmp,
        common.running_server(
            tmp, runner_capacity=CAPACITY, database_url=database_url, poll_interval=5
        ) as server,
    ):
        server.register(DEFINITION)
        native_batch(server, min(args.jobs, CAPACITY), "warm")
        tes_batch(server, min(args.jobs, CAPACITY))
        for number in range(args.rounds):
            arms = ["native", "tes"] if number % 2 == 0 else ["tes", "native"]
            for arm in arms:
                if arm == "native":
                    seconds, cores = native_batch(server, args.jobs, f"r{number}")
                    native.append(seconds)
                    native_cores.append(cores)
                else:
                    seconds, cores = tes_batch(server, args.jobs)
                    tes.append(seconds)
                    tes_cores.append(cores)
            print(
                f"  round {number + 1}: native {args.jobs / native[-1]:.2f}/s, "
                f"TES {args.jobs / tes[-1]:.2f}/s",
                flush=True,
            )
    native_rate = args.jobs * args.rounds / sum(native)
    tes_rate = args.jobs * args.rounds / sum(tes)
    row = {
        "jobs": args.jobs,
        "rounds": args.rounds,
        "native_per_s": native_rate,
        "tes_per_s": tes_rate,
        "cost_ratio": native_rate / tes_rate,
        "native_cores": common.percentile(native_cores, 50),
        "tes_cores": common.percentile(tes_cores, 50),
    }
    database = "PostgreSQL" if args.postgres else "SQLite"
    common.print_table(
        f"TES vs native: {args.jobs} x `true`, capacity {CAPACITY}, {args.rounds} rounds "
        f"({database}; load before {info['load_before']})",
        [row],
        list(row),
    )
    met = row["cost_ratio"] <= 1.1
    print(f"a TES task costs {row['cost_ratio']:.2f}x a native job (goal <= 1.1x: {met})")
    path = common.write_result(NAME, {"database": database, "smoke": args.smoke, "row": row})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
