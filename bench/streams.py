"""Issue 18, item 7: 1,000 followers of a job that logs 100 lines/s; a plain GET's p99 and
the server's CPU with them, against the same without them, in one run.

One ``orchestrator serve`` (SQLite, or PostgreSQL with ``--postgres``) runs busybox jobs that
print ten ``bench-stream-line`` lines every 0.1 s; one logs at any time. Three phases of
``--seconds`` each, one after the other:

- before: a first job logs, no followers; a client sends ``GET /v1/projects/default/jobs/<id>``
  every ``PACE_SECONDS`` (one at a time) and times each; the server's CPU over the phase (user
  + system, from /proc/<pid>/stat);
- followers: ``--followers`` connections follow a second job's log (``logs?follow=true``, the
  admin token, opened by bench/followers.py in a process of its own, so their reading does not
  share the timing client's interpreter) from before it starts; the first job is cancelled and
  the second starts logging; the same GETs (of the second job) and CPU;
- after: the followers gone, the same again (a drift check on a shared machine).

Goals: the GET p99 with followers within 2x of the mean of before and after, and the server
under 0.5 core with followers. The followers' line counts show each got the job's lines.

    python bench/streams.py [--followers N] [--seconds S] [--smoke] [--postgres URL]

Run as a file: its directory, bench/, is then first on sys.path, so ``import common`` works.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from typing import Any

import common
import httpx

NAME = "streams"
MARKER = "bench-stream-line"
PACE_SECONDS = 0.05
GOAL_RATIO = 2.0
GOAL_CORES = 0.5
# Ten lines every 0.1 s: 100 lines/s (a little less: the loop itself takes time).
SCRIPT = (
    "trap 'exit 0' TERM; i=0; while true; do j=0; while [ $j -lt 10 ]; do "
    f'echo "{MARKER} $i $j ................................"; j=$((j+1)); done; '
    "i=$((i+1)); sleep 0.1; done"
)


def phase(server: common.Server, path: str, seconds: float) -> dict[str, Any]:
    """GETs of ``path`` every ``PACE_SECONDS`` for ``seconds``: latency percentiles (ms) and
    the server's CPU (cores) over the phase."""
    meter = common.CpuMeter(server.pid)
    latencies: list[float] = []
    end = time.monotonic() + seconds
    with httpx.Client(base_url=server.url, headers=server.http.headers, timeout=60) as client:
        while time.monotonic() < end:
            began = time.perf_counter()
            response = client.get(path)
            latencies.append((time.perf_counter() - began) * 1000)
            response.raise_for_status()
            time.sleep(max(0.0, PACE_SECONDS - (time.perf_counter() - began)))
    return {
        "requests": len(latencies),
        "p50_ms": common.percentile(latencies, 50),
        "p99_ms": common.percentile(latencies, 99),
        "max_ms": max(latencies),
        "server_cores": meter.read(),
        "rss_mb": common.rss_bytes(server.pid) / 2**20,
    }


def start_followers(server: common.Server, job_id: str, count: int) -> subprocess.Popen[str]:
    """bench/followers.py following the job's log ``count`` times; returns once all are in."""
    follow_path = f"/v1/projects/default/jobs/{job_id}/logs?follow=true"
    process = subprocess.Popen(
        [
            sys.executable,
            str(common.BENCH_DIR / "followers.py"),
            server.url,
            follow_path,
            server.token,
            str(count),
            MARKER,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().split()
    if line[:1] != ["connected"] or int(line[1]) != count:
        process.kill()
        raise RuntimeError(f"followers: {line} of {count} connected")
    return process


def stop_followers(process: subprocess.Popen[str]) -> dict[str, Any]:
    """Stop bench/followers.py; its counts."""
    process.terminate()
    out, _ = process.communicate(timeout=60)
    return dict(json.loads(out.strip().splitlines()[-1]))


def measure(followers: int, seconds: float, database_url: str | None) -> dict[str, Any]:
    """The three phases on one server, with one logging job throughout."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-streams-") as tmp,
        common.running_server(
            tmp,
            database_url=database_url,
            max_streams_per_token=followers + 10,
            # The followers' sockets and the bench's own clients.
            max_connections=followers + 100,
        ) as server,
    ):
        server.register({"name": "chatty", "image": common.IMAGE, "command": ["sh", "-c", SCRIPT]})
        first = running(server, server.submit(definition="chatty"))
        # The followed job waits in a paused queue while its followers connect, so they join
        # with nothing to catch up on: the figures are the steady state, not the catch-up.
        held = server.http.post(
            "/v1/projects/default/queues", json={"name": "held", "paused": True}
        )
        held.raise_for_status()
        job = server.submit(definition="chatty", queue="held")
        path = f"/v1/projects/default/jobs/{job['id']}"
        phase(server, path, 2)  # warm-up, not recorded
        before = phase(server, path, seconds)
        process = start_followers(server, job["id"], followers)
        try:
            # One job logs at a time: the followed one takes over from the first.
            server.http.post(f"/v1/projects/default/jobs/{first['id']}/cancel").raise_for_status()
            server.http.patch("/v1/projects/default/queues/held", json={"paused": False})
            running(server, job)
            time.sleep(1)
            during = phase(server, path, seconds)
        finally:
            counts = stop_followers(process)
        time.sleep(2)
        after = phase(server, path, seconds)
        server.http.post(f"{path}/cancel").raise_for_status()
    return {"before": before, "followers": during, "after": after, "counts": counts}


def running(server: common.Server, job: dict[str, Any]) -> dict[str, Any]:
    """Wait until the job runs; the job."""
    common.wait_until(lambda: server.job(job["id"])["status"] == "running", timeout=60)
    return job


def main() -> None:
    """Run the benchmark, print its table and write bench/results/streams.json."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--followers", type=int, default=1000, help="followers (default 1000)")
    parser.add_argument("--seconds", type=float, default=30, help="seconds per phase (30)")
    args = parser.parse_args()
    if args.smoke:
        args.followers, args.seconds = 100, 5
    info = common.machine()
    common.busybox_image()
    with common.postgres_database(args.postgres) as database_url:
        figures = measure(args.followers, args.seconds, database_url)
    database = "PostgreSQL" if args.postgres else "SQLite"
    phases = [{"phase": name, **figures[name]} for name in ("before", "followers", "after")]
    counts = figures["counts"]
    baseline_p99 = (figures["before"]["p99_ms"] + figures["after"]["p99_ms"]) / 2
    with_p99 = figures["followers"]["p99_ms"]
    cores = figures["followers"]["server_cores"]
    lines_per_s = counts["min"] / counts["seconds"]
    common.print_table(
        f"Streams: {args.followers} followers of a job logging ~100 lines/s, {args.seconds:.0f} s "
        f"per phase ({database}; load before {info['load_before']}); each follower got "
        f"{counts['min']}-{counts['max']} lines in {counts['seconds']:.0f} s "
        f"({lines_per_s:.0f}/s at least); {counts['ok']} answered 200, "
        f"{counts['closed_early']} closed early",
        phases,
        list(phases[0]),
    )
    summary = [
        common.summary_row(
            f"GET p99 with {args.followers} followers",
            with_p99,
            unit="ms",
            baseline=baseline_p99,
            goal=f"<= {GOAL_RATIO}x without",
            met=with_p99 <= GOAL_RATIO * baseline_p99,
        ),
        common.summary_row(
            f"server CPU with {args.followers} followers",
            cores,
            unit="cores",
            baseline=(figures["before"]["server_cores"] + figures["after"]["server_cores"]) / 2,
            goal=f"< {GOAL_CORES} core",
            met=cores < GOAL_CORES,
        ),
    ]
    path = common.write_result(
        NAME,
        {
            "database": database.lower(),
            "smoke": args.smoke,
            "followers": args.followers,
            "seconds": args.seconds,
            "phases": phases,
            "counts": counts,
            "summary": summary,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
