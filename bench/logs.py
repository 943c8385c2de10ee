"""Issue 7, item 2f: log lines/s, to the stored log and to a follow client, vs raw follow.

A busybox container prints N lines (200k by default; ``bench log line 000001`` and so on, 22
bytes each, so the whole output stays inside the first half of the default
``ORCH_MAX_LOG_BYTES``, which is stored as it comes). Each round runs, one after the other:

- raw CLI (the baseline): docker-SDK create + start of the same container with the runner's
  options (bench/throughput.py ``raw_options``), then ``docker logs --follow`` as a
  subprocess, reading its stdout to the end and counting lines;
- raw SDK (diagnostic): the same, followed with docker-py's ``logs(stream=True, follow=True,
  timestamps=True)`` as the runner's pump reads it, to show what reading Docker's frames in
  Python costs before any of our own work;
- ours, stored: a job of the same command submitted through the API; done when the stored log
  is complete, which is when the job's terminal event is written (the runner commits the last
  log batch before the terminal state), so this side also carries the exit -> terminal step;
- ours, follow client: another such job, followed from just after submit with
  ``GET .../logs?follow=true`` (httpx streaming, the admin token), done at its last line.

Every arm is timed from the container's ``start`` event (Docker's events API; same host, same
clock) to its end, and its line count is checked against N. Lines/s = N / that time; medians
over the rounds; ratios against the raw CLI follow of the same run. ``after_exit_s`` is how long
an arm went on after the container's ``die`` event: the reading pace, once the output is all
written.

    python bench/logs.py [--lines N] [--rounds R] [--smoke] [--postgres URL]

Run as a file: its directory, bench/, is then first on sys.path, so ``import common`` works.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import common
import httpx
from dispatch import EventLog
from throughput import raw_options

from orchestrator.config import Settings

NAME = "logs"
GOAL_RATIO = 0.8
LINE_BYTES = len("bench log line 000001\n")
ARMS = ("raw CLI follow", "raw SDK follow", "ours, stored", "ours, follow client")


def command(lines: int) -> list[str]:
    """The container's command: ``lines`` numbered lines of ``LINE_BYTES`` bytes on stdout.

    busybox's ``seq`` has no ``-f``, so awk writes them (all 200k in well under a second).
    """
    program = f'BEGIN {{ for (i = 1; i <= {lines}; i++) printf "bench log line %06d\\n", i }}'
    return ["busybox", "awk", program]


def definition(lines: int) -> dict[str, Any]:
    """The job definition whose containers print ``lines`` lines."""
    return {
        "name": "bench-logs",
        "description": "bench/logs.py: a container printing many short lines",
        "image": common.IMAGE,
        "command": command(lines),
        "network": "none",
        "timeout": "5m",
    }


def check_count(arm: str, counted: int, lines: int) -> None:
    """Fail the run when an arm saw another number of lines than the container printed."""
    if counted != lines:
        raise RuntimeError(f"{arm}: {counted} lines seen, {lines} printed")


RAW_TRIES = 5
# (container start -> done, container exit -> done) of one arm, in seconds: the second is how
# long the reading went on after the output was all written.
Span = tuple[float, float]


def span(events: EventLog, key: str, done: float) -> Span:
    """``Span`` of the container with id or job id ``key``, done at ``done`` (epoch seconds)."""
    return done - events.wait(key, "start"), done - events.wait(key, "die")


def raw_follow(client: Any, container_id: str, sdk: bool) -> tuple[int, float]:
    """(lines, time of the last line) of one started container's followed log: with the
    ``docker logs --follow`` CLI, or with docker-py when ``sdk``."""
    counted = 0
    last = 0.0
    if sdk:
        # As the runner's pump asks for it: with timestamps, one frame per line.
        for chunk in client.api.logs(container_id, stream=True, follow=True, timestamps=True):
            counted += chunk.count(b"\n")
            last = time.time()
        return counted, last
    with subprocess.Popen(
        ["docker", "logs", "--follow", container_id], stdout=subprocess.PIPE
    ) as follower:
        assert follower.stdout is not None
        fd = follower.stdout.fileno()
        while chunk := os.read(fd, 1 << 16):
            counted += chunk.count(b"\n")
            last = time.time()
    if follower.returncode != 0:
        raise RuntimeError(f"docker logs --follow exited {follower.returncode}")
    return counted, last


def raw_one(
    client: Any, events: EventLog, options: dict[str, Any], lines: int, sdk: bool
) -> tuple[Span, int]:
    """(``Span`` to the last line, short follows retried) of one raw container followed as
    ``raw_follow`` does.

    Docker 20.10 ends a followed log early, without an error, when the container exits
    before the follower has read the log file to its end (about half of the lines, most often
    with short outputs): such a follow is no baseline, so it is counted and run again."""
    arm = "raw SDK follow" if sdk else "raw CLI follow"
    for short in range(RAW_TRIES):
        container = client.containers.create(common.IMAGE, **options)
        try:
            client.api.start(container.id)
            counted, last = raw_follow(client, container.id, sdk)
        finally:
            client.api.remove_container(container.id, force=True)
        if counted == lines:
            return span(events, container.id, last), short
        if counted > lines:
            check_count(arm, counted, lines)
    raise RuntimeError(f"{arm}: Docker ended the follow short {RAW_TRIES} times in a row")


def _event_time(server: common.Server, job_id: str, kind: str) -> float:
    response = server.http.get(f"/v1/projects/default/jobs/{job_id}/events")
    response.raise_for_status()
    for event in response.json()["items"]:
        if event["type"] == kind:
            at = datetime.fromisoformat(event["time"])
            # The API writes UTC; a time without its zone is UTC too.
            return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
    raise RuntimeError(f"job {job_id} has no {kind} event")


def _stored_lines(server: common.Server, job_id: str) -> int:
    with server.http.stream("GET", f"/v1/projects/default/jobs/{job_id}/logs") as response:
        response.raise_for_status()
        return sum(chunk.count(b"\n") for chunk in response.iter_bytes())


def _wait_succeeded(server: common.Server, job_id: str) -> None:
    job = common.wait_until(
        lambda: (j := server.job(job_id))["status"] in common.TERMINAL and j,
        timeout=300,
        interval=0.1,
    )
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job_id} {job['status']}: {job['error']}")


def ours_stored(server: common.Server, events: EventLog, lines: int) -> Span:
    """``Span`` of a job to its stored log being complete (its terminal event)."""
    job = server.submit(definition="bench-logs")
    _wait_succeeded(server, job["id"])
    # Checked after the clock stops: reading 4 MB back is not part of the arm.
    check_count("ours, stored", _stored_lines(server, job["id"]), lines)
    return span(events, job["id"], _event_time(server, job["id"], "succeeded"))


def ours_follow(
    server: common.Server, follow_client: httpx.Client, events: EventLog, lines: int
) -> Span:
    """``Span`` of a job to the last line reaching a client that follows its log over the
    API from just after submit."""
    job = server.submit(definition="bench-logs")
    counted = 0
    last = 0.0
    url = f"/v1/projects/default/jobs/{job['id']}/logs"
    with follow_client.stream("GET", url, params={"follow": "true"}) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes():
            counted += chunk.count(b"\n")
            last = time.time()
    _wait_succeeded(server, job["id"])
    check_count("ours, follow client", counted, lines)
    return span(events, job["id"], last)


def measure(lines: int, rounds: int, database_url: str | None) -> dict[str, Any]:
    """``rounds`` interleaved rounds of the four arms: seconds per arm from the container's
    start and from its exit, the server's CPU (cores) during our two arms, and how many raw
    follows Docker ended short (run again)."""
    seconds: dict[str, list[float]] = {arm: [] for arm in ARMS}
    after_exit: dict[str, list[float]] = {arm: [] for arm in ARMS}
    short = {"raw CLI follow": 0, "raw SDK follow": 0}
    server_cpu: list[float] = []
    client = common.docker_client()
    options = {**raw_options(uuid.uuid4().hex[:8]), "command": command(lines)}
    events = EventLog()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-logs-") as tmp,
            common.running_server(tmp, database_url=database_url) as server,
            httpx.Client(base_url=server.url, headers=server.http.headers, timeout=300) as follow,
        ):
            server.register(definition(lines))
            # Warm-up, not recorded: image and page caches, the server's first job.
            raw_one(client, events, options, lines, sdk=False)
            ours_stored(server, events, lines)
            common.wait_removed(server.label)
            for _ in range(rounds):
                spans: dict[str, Span] = {}
                for arm, sdk in (("raw CLI follow", False), ("raw SDK follow", True)):
                    spans[arm], shorts = raw_one(client, events, options, lines, sdk)
                    short[arm] += shorts
                meter = common.CpuMeter(server.pid)
                spans["ours, stored"] = ours_stored(server, events, lines)
                common.wait_removed(server.label)
                spans["ours, follow client"] = ours_follow(server, follow, events, lines)
                common.wait_removed(server.label)
                server_cpu.append(meter.read())
                for arm, (from_start, from_exit) in spans.items():
                    seconds[arm].append(from_start)
                    after_exit[arm].append(from_exit)
    finally:
        events.close()
        client.close()
    return {
        "seconds": seconds,
        "after_exit": after_exit,
        "server_cpu": server_cpu,
        "raw_follows_short": short,
    }


def rows(
    lines: int, seconds: dict[str, list[float]], after_exit: dict[str, list[float]]
) -> list[dict[str, Any]]:
    """Median and best lines/s of each arm, its ratio to the raw CLI follow, and the median
    seconds it went on after the container exited."""
    baseline = lines / statistics.median(seconds["raw CLI follow"])
    table = []
    for arm in ARMS:
        rates = [lines / s for s in seconds[arm]]
        median = statistics.median(rates)
        table.append(
            {
                "arm": arm,
                "median_s": statistics.median(seconds[arm]),
                "after_exit_s": statistics.median(after_exit[arm]),
                "lines_per_s": median,
                "best_lines_per_s": max(rates),
                "vs_raw_cli": median / baseline,
            }
        )
    return table


def main() -> None:
    """Run the benchmark, print its table and write bench/results/logs.json."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000, help="lines (default 200000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    args = parser.parse_args()
    if args.smoke:
        args.lines, args.rounds = 20_000, 1
    # Past half of the default budget the runner holds the tail back until the end (and past
    # all of it cuts lines out): that is a different measurement.
    head = Settings.model_fields["max_log_bytes"].default // 2
    if args.lines * LINE_BYTES > head:
        parser.error(f"--lines: at most {head // LINE_BYTES} ({LINE_BYTES}-byte lines)")
    info = common.machine()
    common.busybox_image()
    try:
        with common.postgres_database(args.postgres) as database_url:
            figures = measure(args.lines, args.rounds, database_url)
    finally:
        common.cleanup(common.BENCH_LABEL)
    table = rows(args.lines, figures["seconds"], figures["after_exit"])
    database = "PostgreSQL" if args.postgres else "SQLite"
    common.print_table(
        f"Logs: {args.lines} lines of {LINE_BYTES} bytes, {args.rounds} interleaved rounds "
        f"({database}; load before {info['load_before']}; server CPU during ours "
        f"{statistics.median(figures['server_cpu']):.2f} cores)",
        table,
        list(table[0]),
    )
    baseline = table[0]["lines_per_s"]
    summary = [
        common.summary_row(
            metric,
            row["lines_per_s"],
            unit="lines/s",
            baseline=baseline,
            goal=f">= {GOAL_RATIO}x raw follow",
            met=row["vs_raw_cli"] >= GOAL_RATIO,
        )
        for metric, row in (("logs, stored", table[2]), ("logs, follow client", table[3]))
    ]
    path = common.write_result(
        NAME,
        {
            "database": database.lower(),
            "smoke": args.smoke,
            "lines": args.lines,
            "line_bytes": LINE_BYTES,
            "rounds": args.rounds,
            "rows": table,
            "samples_s": figures["seconds"],
            "samples_after_exit_s": figures["after_exit"],
            "server_cpu": figures["server_cpu"],
            "raw_follows_short": figures["raw_follows_short"],
            "summary": summary,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
