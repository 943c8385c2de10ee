"""Issue 7, item 2a: end-to-end throughput of short jobs vs raw docker-SDK containers.

N jobs (``true`` in busybox, network ``none``) submitted through the API and run by the
server's runner at capacity 1, 4 and 16, against raw docker-SDK create/start/wait/remove of
the same containers (network ``none``, the runner's default memory and pids limits,
``no-new-privileges``, the same labels and env) at the same concurrency. Each capacity runs
its rounds interleaved (raw, ours, raw + calls, raw, ours, ...) on one server. "raw + calls"
is a diagnostic arm: raw plus the other Docker work the runner does per job (the input in a
bind-mounted directory, the logs followed), so the gap splits into Docker's share and ours.
"children" runs the same N jobs as the children of one array (``array: {size: N}``, issue 20):
dispatched with the same per-job overhead as single jobs, its rate matches "ours". Also
reports the server process's CPU during our batches, as a fraction of one core.

    python bench/throughput.py [--jobs N] [--rounds R] [--smoke] [--postgres URL]

Run as a file: its directory, bench/, is then first on sys.path, so ``import common`` works.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import common
import docker.types

from orchestrator.config import Settings

NAME = "throughput"
CAPACITIES = (1, 4, 16)
DEFAULT_CAPACITY = 4
DEFINITION = {
    "name": "bench-true",
    "description": "bench/throughput.py: the shortest job there is",
    "image": common.IMAGE,
    "command": ["true"],
    "network": "none",
    "timeout": "5m",
}


def raw_options(run_id: str) -> dict[str, Any]:
    """Container options as the runner gives a job of DEFINITION (``container_spec`` in
    orchestrator/runner/container_spec.py and ``create`` in docker/engine.py): the server's
    default memory and pids limits, no-new-privileges, network none, labels and ORCH_* env of
    the same shape."""
    defaults = Settings.model_fields
    labels = {
        common.BENCH_LABEL_KEY: "1",
        "orchestrator.bench-run": run_id,
        "orchestrator.job-id": "raw",
        "orchestrator.attempt": "1",
        "orchestrator.runner": f"raw-{run_id}",
        "orchestrator.project": "default",
        "orchestrator.queue": "default",
    }
    env = {
        "ORCH_JOB_ID": "raw",
        "ORCH_ATTEMPT": "1",
        "ORCH_PROJECT": "default",
        "ORCH_QUEUE": "default",
        "ORCH_INPUT": "/run/orchestrator/input.json",
        "ORCH_OUTPUT": "/run/orchestrator/output.json",
    }
    return {
        "command": ["true"],
        "environment": env,
        "labels": labels,
        "network_mode": "none",
        "security_opt": ["no-new-privileges"],
        "pids_limit": defaults["default_pids"].default,
        "mem_limit": defaults["default_memory"].default,
        "detach": True,
    }


def one_container(client: Any, options: dict[str, Any], calls: bool) -> None:
    """Create, start, wait for and remove one container.

    ``calls``: also do the other work the runner does with Docker per job (a directory of its
    own holding the input, bind-mounted at /run/orchestrator; follow the logs; look for the
    output), to tell Docker's share of our overhead from our own."""
    run_dir = None
    if calls:
        run_dir = tempfile.mkdtemp(prefix="bench-run-")
        os.chmod(run_dir, 0o777)
        with open(os.path.join(run_dir, "input.json"), "wb") as handle:
            handle.write(b"null")
        mount = docker.types.Mount("/run/orchestrator", run_dir, type="bind")
        options = {**options, "mounts": [mount]}
    container = client.containers.create(common.IMAGE, **options)
    client.api.start(container.id)
    if calls:
        for _ in client.api.logs(container.id, stream=True, follow=True, timestamps=True):
            pass
    client.api.wait(container.id, timeout=None)
    if run_dir is not None:
        output = os.path.join(run_dir, "output.json")
        if os.path.exists(output):  # `true` writes none: the usual case, as for the runner
            with open(output, "rb") as handle:
                handle.read()
    client.api.remove_container(container.id, force=True)
    if run_dir is not None:
        shutil.rmtree(run_dir)


def raw_batch(jobs: int, concurrency: int, run_id: str, calls: bool = False) -> float:
    """Seconds to run ``jobs`` containers with ``one_container``, ``concurrency`` at a time."""
    client = common.docker_client(max_pool_size=concurrency * 3 + 4)
    options = raw_options(run_id)
    counter = itertools.count()
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                index = next(counter)
            if index >= jobs:
                return
            one_container(client, options, calls)

    began = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    elapsed = time.monotonic() - began
    client.close()
    return elapsed


def ours_batch(server: common.Server, jobs: int, queue: str) -> tuple[float, float]:
    """(seconds, server cores used): submit ``jobs`` jobs into a fresh queue, wait for all.

    The time runs from just before the first submit to the last job's ``finish_time``;
    then it waits for the runner to remove every container, so batches do not overlap.
    """
    server.http.post("/v1/projects/default/queues", json={"name": queue}).raise_for_status()
    meter = common.CpuMeter(server.pid)
    began_wall = time.time()
    for _ in range(jobs):
        server.submit(definition=DEFINITION["name"], queue=queue)

    def drained() -> bool:
        response = server.http.get(f"/v1/projects/default/queues/{queue}")
        response.raise_for_status()
        body = response.json()
        return body["current_queue_length"] == 0 and body["running"] == 0

    common.wait_until(drained, timeout=600, interval=0.1)
    cores = meter.read()
    listed = server.http.get(
        "/v1/projects/default/jobs", params={"queue": queue, "limit": 500}
    ).json()["items"]
    statuses = {job["status"] for job in listed}
    if len(listed) != jobs or statuses != {"succeeded"}:
        raise RuntimeError(f"batch {queue}: {len(listed)} jobs, statuses {statuses}")
    last = max(datetime.fromisoformat(job["finish_time"]).timestamp() for job in listed)
    common.wait_removed(server.label)
    return last - began_wall, cores


def array_batch(server: common.Server, jobs: int, queue: str) -> float:
    """Seconds for one array of ``jobs`` children in a fresh queue, from just before its
    submit to its last child's ``finish_time`` (then its containers are waited out, as
    ``ours_batch`` does)."""
    server.http.post("/v1/projects/default/queues", json={"name": queue}).raise_for_status()
    began_wall = time.time()
    parent = server.submit(definition=DEFINITION["name"], queue=queue, array={"size": jobs})
    common.wait_until(
        lambda: server.job(parent["id"])["status"] in {"succeeded", "failed"},
        timeout=600,
        interval=0.1,
    )
    children = server.http.get(
        f"/v1/projects/default/jobs/{parent['id']}/children", params={"limit": 500}
    ).json()["items"]
    statuses = {child["status"] for child in children}
    if len(children) != jobs or statuses != {"succeeded"}:
        raise RuntimeError(f"array {queue}: {len(children)} children, statuses {statuses}")
    last = max(datetime.fromisoformat(child["finish_time"]).timestamp() for child in children)
    common.wait_removed(server.label)
    return last - began_wall


def measure(
    capacity: int, jobs: int, rounds: int, database_url: str | None, run_id: str
) -> dict[str, Any]:
    """Interleaved raw and ours batches at one capacity; per-round figures and medians."""
    raw_times: list[float] = []
    calls_times: list[float] = []
    ours_times: list[float] = []
    children_times: list[float] = []
    cores: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-tp-") as tmp,
        common.running_server(
            tmp, runner_capacity=capacity, database_url=database_url, poll_interval=5
        ) as server,
    ):
        server.register(DEFINITION)
        warm = min(jobs, max(2, capacity))
        raw_batch(warm, capacity, run_id)
        ours_batch(server, warm, f"warm-{capacity}")
        for number in range(rounds):
            raw_times.append(raw_batch(jobs, capacity, run_id))
            seconds, used = ours_batch(server, jobs, f"c{capacity}-r{number}")
            ours_times.append(seconds)
            cores.append(used)
            calls_times.append(raw_batch(jobs, capacity, run_id, calls=True))
            children_times.append(array_batch(server, jobs, f"c{capacity}-a{number}"))
            print(
                f"  capacity {capacity} round {number + 1}: raw {jobs / raw_times[-1]:.2f}/s, "
                f"ours {jobs / seconds:.2f}/s, raw + our calls {jobs / calls_times[-1]:.2f}/s, "
                f"children {jobs / children_times[-1]:.2f}/s, server {used:.2f} cores",
                flush=True,
            )
    raw_rate = jobs * rounds / sum(raw_times)
    ours_rate = jobs * rounds / sum(ours_times)
    calls_rate = jobs * rounds / sum(calls_times)
    children_rate = jobs * rounds / sum(children_times)
    return {
        "capacity": capacity,
        "jobs": jobs,
        "rounds": rounds,
        "raw_per_s": raw_rate,
        "ours_per_s": ours_rate,
        "ratio": ours_rate / raw_rate,
        "raw_calls_per_s": calls_rate,
        "ours_vs_raw_calls": ours_rate / calls_rate,
        "children_per_s": children_rate,
        "children_vs_singles": children_rate / ours_rate,
        "server_cores": common.percentile(cores, 50),
        "server_cores_max": max(cores),
        "raw_rounds_per_s": [jobs / t for t in raw_times],
        "ours_rounds_per_s": [jobs / t for t in ours_times],
        "raw_calls_rounds_per_s": [jobs / t for t in calls_times],
        "children_rounds_per_s": [jobs / t for t in children_times],
    }


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The goal rows of issue 7 (a)."""
    by_capacity = {row["capacity"]: row for row in rows}
    out = []
    if 1 in by_capacity:
        one = by_capacity[1]
        out.append(
            common.summary_row(
                "throughput, 1 at a time",
                one["ours_per_s"],
                unit="jobs/s",
                baseline=one["raw_per_s"],
                goal=">= 0.9x raw",
                met=one["ratio"] >= 0.9,
            )
        )
    if DEFAULT_CAPACITY in by_capacity:
        default = by_capacity[DEFAULT_CAPACITY]
        out.append(
            common.summary_row(
                f"throughput, capacity {DEFAULT_CAPACITY}",
                default["ours_per_s"],
                unit="jobs/s",
                baseline=default["raw_per_s"],
                goal=">= 0.85x raw",
                met=default["ratio"] >= 0.85,
            )
        )
    if 16 in by_capacity and DEFAULT_CAPACITY in by_capacity:
        over = by_capacity[16]
        out.append(
            common.summary_row(
                "throughput, capacity 16",
                over["ours_per_s"],
                unit="jobs/s",
                baseline=over["raw_per_s"],
                goal="no collapse (>= 0.85x raw)",
                met=over["ratio"] >= 0.85,
            )
        )
    saturated = max(rows, key=lambda row: row["capacity"])
    out.append(
        common.summary_row(
            f"server CPU at capacity {saturated['capacity']}",
            saturated["server_cores"],
            unit="cores",
            goal="<= 0.3 core",
            met=saturated["server_cores"] <= 0.3,
        )
    )
    return out


def main() -> None:
    """Run the benchmark, print its table and write bench/results/throughput.json."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30, help="jobs per batch (default 30)")
    parser.add_argument("--rounds", type=int, default=2, help="raw+ours pairs per capacity")
    parser.add_argument(
        "--capacities", default=",".join(map(str, CAPACITIES)), help="comma list (1,4,16)"
    )
    args = parser.parse_args()
    if args.smoke:
        args.jobs, args.rounds = 6, 1
    capacities = [int(c) for c in args.capacities.split(",")]
    info = common.machine()
    common.busybox_image()
    run_id = uuid.uuid4().hex[:8]
    rows = []
    try:
        for capacity in capacities:
            # A database each: a server writes its admin token only into a new one.
            with common.postgres_database(args.postgres) as database_url:
                rows.append(measure(capacity, args.jobs, args.rounds, database_url, run_id))
    finally:
        common.cleanup(common.BENCH_LABEL)
    common.print_table(
        f"Throughput: {args.jobs} x `true`, network none, {args.rounds} interleaved rounds "
        f"({'PostgreSQL' if args.postgres else 'SQLite'}; load before {info['load_before']})",
        rows,
        [
            "capacity",
            "raw_per_s",
            "ours_per_s",
            "ratio",
            "raw_calls_per_s",
            "ours_vs_raw_calls",
            "children_per_s",
            "children_vs_singles",
            "server_cores",
            "server_cores_max",
        ],
    )
    path = common.write_result(
        NAME,
        {
            "database": "postgresql" if args.postgres else "sqlite",
            "smoke": args.smoke,
            "rows": rows,
            "summary": summary(rows),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
