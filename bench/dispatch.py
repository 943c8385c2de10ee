"""Issue 7, item 2b: dispatch overhead per job, on both sides of the container's life.

One job at a time, interleaved with one raw docker-SDK container at a time (same options as
bench/throughput.py). Times come from the Docker events API (the container's ``start`` and
``die`` events) and from this process's clock (same host, same clock):

- start side: ours = submit response received -> ``start`` event of the job's container
  (label ``orchestrator.job-id``); raw = ``create`` call issued -> ``start`` event.
- exit side: ours = ``die`` event -> the terminal event arriving on the job's SSE stream
  (``/v1/projects/default/jobs/{id}/stream``); raw = ``die`` event -> ``wait`` returned.

Added milliseconds = ours - raw, paired job by job; p50/p95 reported.

    python bench/dispatch.py [--jobs N] [--smoke] [--postgres URL]

Run as a file: its directory, bench/, is then first on sys.path, so ``import common`` works.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from typing import Any

import common
import httpx
from throughput import DEFINITION, raw_options

NAME = "dispatch"
GOAL_MS = 30.0


class EventLog:
    """Container ``create``, ``start`` and ``die`` times (seconds since the epoch) from
    Docker's events, keyed by container id and by the ``orchestrator.job-id`` label."""

    def __init__(self) -> None:
        self._client = common.docker_client()
        self._stream = self._client.events(
            decode=True,
            since=int(time.time()) - 1,
            filters={"type": "container", "event": ["create", "start", "die"]},
        )
        self._times: dict[str, dict[str, float]] = {}
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="docker-events", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self._stream:
                at = int(event["timeNano"]) / 1e9
                attributes = event.get("Actor", {}).get("Attributes", {})
                keys = [event["id"]]
                if "orchestrator.job-id" in attributes:
                    keys.append(attributes["orchestrator.job-id"])
                with self._condition:
                    for key in keys:
                        self._times.setdefault(key, {})[event["status"]] = at
                    self._condition.notify_all()
        except Exception:
            # Closing the stream ends the iteration with a connection error: that is the end.
            return

    def wait(self, key: str, status: str, timeout: float = 60.0) -> float:
        """The time of ``status`` for container id or job id ``key``, waiting for it."""
        with self._condition:
            found = self._condition.wait_for(
                lambda: status in self._times.get(key, {}), timeout=timeout
            )
            if not found:
                raise TimeoutError(f"no {status} event for {key} within {timeout} s")
            return self._times[key][status]

    def close(self) -> None:
        """Stop reading events."""
        self._stream.close()
        self._client.close()


def raw_one(client: Any, events: EventLog, options: dict[str, Any]) -> tuple[float, float, float]:
    """(create call -> start, die -> wait returned, create call -> create event) of one raw
    container, in milliseconds."""
    began = time.time()
    container = client.containers.create(common.IMAGE, **options)
    client.api.start(container.id)
    client.api.wait(container.id, timeout=None)
    returned = time.time()
    client.api.remove_container(container.id, force=True)
    created = events.wait(container.id, "create")
    start = events.wait(container.id, "start")
    die = events.wait(container.id, "die")
    return (start - began) * 1000, (returned - die) * 1000, (created - began) * 1000


def ours_one(
    server: common.Server, stream_client: httpx.Client, events: EventLog
) -> tuple[float, float, float]:
    """(submit response -> start, die -> terminal state on the SSE stream, submit response ->
    create event) of one job, in ms."""
    job = server.submit(definition=DEFINITION["name"])
    answered = time.time()
    seen: dict[str, float] = {}

    def follow() -> None:
        with stream_client.stream("GET", f"/v1/projects/default/jobs/{job['id']}/stream") as r:
            for line in r.iter_lines():
                if line.startswith("event: ") and line[7:].strip() in common.TERMINAL:
                    seen["terminal"] = time.time()
                    return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    follower.join(120)
    if "terminal" not in seen:
        raise TimeoutError(f"job {job['id']} reached no terminal state on its stream")
    created = events.wait(job["id"], "create")
    start = events.wait(job["id"], "start")
    die = events.wait(job["id"], "die")
    final = server.job(job["id"])
    if final["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} {final['status']}: {final['error']}")
    return (start - answered) * 1000, (seen["terminal"] - die) * 1000, (created - answered) * 1000


def measure(jobs: int, database_url: str | None) -> dict[str, Any]:
    """Paired raw and ours measurements of ``jobs`` containers; per-side lists in ms."""
    figures: dict[str, list[float]] = {
        "raw_start": [],
        "ours_start": [],
        "raw_exit": [],
        "ours_exit": [],
        "raw_create": [],
        "ours_create": [],
    }
    client = common.docker_client()
    options = raw_options(uuid.uuid4().hex[:8])
    events = EventLog()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-dispatch-") as tmp,
            common.running_server(tmp, database_url=database_url) as server,
            httpx.Client(base_url=server.url, headers=server.http.headers, timeout=120) as sse,
        ):
            server.register(DEFINITION)
            raw_one(client, events, options)  # warm-up, not recorded
            ours_one(server, sse, events)
            common.wait_removed(server.label)
            for _ in range(jobs):
                raw_start, raw_exit, raw_create = raw_one(client, events, options)
                ours_start, ours_exit, ours_create = ours_one(server, sse, events)
                common.wait_removed(server.label)
                figures["raw_start"].append(raw_start)
                figures["raw_exit"].append(raw_exit)
                figures["ours_start"].append(ours_start)
                figures["ours_exit"].append(ours_exit)
                figures["raw_create"].append(raw_create)
                figures["ours_create"].append(ours_create)
    finally:
        events.close()
        client.close()
    return figures


def side_row(name: str, raw: list[float], ours: list[float]) -> dict[str, Any]:
    """p50/p95 of raw, ours and the paired added milliseconds of one side."""
    added = [o - r for o, r in zip(ours, raw, strict=True)]
    return {
        "side": name,
        "raw_p50_ms": common.percentile(raw, 50),
        "raw_p95_ms": common.percentile(raw, 95),
        "ours_p50_ms": common.percentile(ours, 50),
        "ours_p95_ms": common.percentile(ours, 95),
        "added_p50_ms": common.percentile(added, 50),
        "added_p95_ms": common.percentile(added, 95),
    }


def main() -> None:
    """Run the benchmark, print its table and write bench/results/dispatch.json."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30, help="jobs per side (default 30)")
    args = parser.parse_args()
    if args.smoke:
        args.jobs = 5
    info = common.machine()
    common.busybox_image()
    try:
        with common.postgres_database(args.postgres) as database_url:
            figures = measure(args.jobs, database_url)
    finally:
        common.cleanup(common.BENCH_LABEL)
    rows = [
        side_row("submit -> start", figures["raw_start"], figures["ours_start"]),
        side_row("exit -> terminal", figures["raw_exit"], figures["ours_exit"]),
    ]
    # Where the start side's time goes: up to the container's create event (the claim and
    # the wake-up, for ours), and from there to its start event (create, copy-in, start).
    parts = [
        side_row("  of which -> create", figures["raw_create"], figures["ours_create"]),
        side_row(
            "  of which create -> start",
            [s - c for s, c in zip(figures["raw_start"], figures["raw_create"], strict=True)],
            [s - c for s, c in zip(figures["ours_start"], figures["ours_create"], strict=True)],
        ),
    ]
    common.print_table(
        f"Dispatch: {args.jobs} jobs one at a time, paired with raw containers "
        f"({'PostgreSQL' if args.postgres else 'SQLite'}; load before {info['load_before']})",
        [*rows, *parts],
        list(rows[0]),
    )
    summary = [
        common.summary_row(
            f"dispatch added p50, {row['side']}",
            row["added_p50_ms"],
            unit="ms",
            baseline=row["raw_p50_ms"],
            ratio=row["ours_p50_ms"] / row["raw_p50_ms"] if row["raw_p50_ms"] else None,
            goal=f"<= {GOAL_MS:.0f} ms added",
            met=row["added_p50_ms"] <= GOAL_MS,
        )
        for row in rows
    ]
    path = common.write_result(
        NAME,
        {
            "database": "postgresql" if args.postgres else "sqlite",
            "smoke": args.smoke,
            "rows": rows,
            "start_breakdown": parts,
            "samples_ms": figures,
            "summary": summary,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
