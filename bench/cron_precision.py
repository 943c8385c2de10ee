"""Cron precision (issue 7, item 2e): how late a schedule's job is queued after its instant.

Five-field cron cannot fire every second, so this makes a tight series of one-shot ``run_at``
schedules, one per second, whose target job goes to a paused queue (no container runs). Each
fire's lateness is its job's ``queued`` event time minus its ``run_at``; the scheduler's own
share (run ``fire_time`` minus ``tick``) is shown beside it. The baseline, in the same seconds:
a Python timer in this process (``Event.wait`` until each instant), the floor any loop that
sleeps until a deadline gets on this machine.

    python bench/cron_precision.py [--smoke] [--postgres URL]
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import (
    Server,
    base_parser,
    machine,
    percentile,
    postgres_database,
    print_table,
    running_server,
    summary_row,
    write_result,
)

DEFINITION = {"name": "bench-noop", "image": "busybox:1.36", "command": ["true"]}
QUEUE = "bench-cron"
GOAL_P99_MS = 250.0
# Seconds between the end of creating the schedules and the first instant, at least.
LEAD = 2.0


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def create_schedules(server: Server, first: float, count: int) -> None:
    """One ``run_at`` schedule per second from ``first`` (unix seconds)."""
    for number in range(count):
        body = {
            "name": f"bench-cron-{number:03d}",
            "run_at": _utc(first + number).isoformat(),
            "target": {"job": {"definition": DEFINITION["name"], "queue": QUEUE}},
        }
        server.http.post("/v1/projects/default/schedules", json=body).raise_for_status()


def timer_lateness(first: float, count: int, out: list[float]) -> None:
    """The baseline: wake at each instant with ``Event.wait``; seconds late, into ``out``."""
    sleeper = threading.Event()
    for number in range(count):
        instant = first + number
        sleeper.wait(max(0.0, instant - time.time()))
        out.append(time.time() - instant)


def fired(server: Server, count: int) -> list[dict[str, Any]]:
    """Each schedule's run and its job's queued time; empty until every one has fired."""
    results = []
    for number in range(count):
        name = f"bench-cron-{number:03d}"
        response = server.http.get(f"/v1/projects/default/schedules/{name}/runs")
        response.raise_for_status()
        runs = [run for run in response.json()["items"] if run["job_id"]]
        if not runs:
            return []
        run = runs[0]
        events = server.http.get(f"/v1/projects/default/jobs/{run['job_id']}/events")
        events.raise_for_status()
        queued = [e for e in events.json()["items"] if e["type"] == "queued"]
        if not queued:
            return []
        results.append(
            {
                "tick": datetime.fromisoformat(run["tick"]),
                "fire_time": datetime.fromisoformat(run["fire_time"]),
                "queued": datetime.fromisoformat(queued[0]["time"]),
            }
        )
    return results


def _stats(name: str, lateness: list[float]) -> dict[str, Any]:
    ms = [value * 1000 for value in lateness]
    return {
        "measure": name,
        "fires": len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else math.nan,
        "min_ms": min(ms) if ms else math.nan,
    }


def main() -> None:
    """Run the benchmark, print the table, write ``bench/results/cron_precision.json``."""
    args = base_parser(__doc__.splitlines()[0]).parse_args()
    record = machine()
    count = 15 if args.smoke else 60
    kind = "postgres" if args.postgres else "sqlite"
    baseline: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-cron-") as tmpdir,
        postgres_database(args.postgres) as database_url,
        running_server(Path(tmpdir), database_url=database_url) as server,
    ):
        server.register(DEFINITION)
        server.http.post(
            "/v1/projects/default/queues", json={"name": QUEUE, "paused": True}
        ).raise_for_status()
        # Creating a schedule takes ~10-50 ms here: leave room so the first instant is ahead.
        first = math.ceil(time.time() + LEAD + 0.1 * count)
        create_schedules(server, first, count)
        lead = first - time.time()
        if lead < 0:
            raise SystemExit(f"creating the schedules ran {-lead:.1f} s past the first instant")
        timer = threading.Thread(target=timer_lateness, args=(first, count, baseline))
        timer.start()
        print(f"  {count} schedules, first in {lead:.1f} s; waiting for them", flush=True)
        timer.join()
        deadline = time.monotonic() + 60
        while not (results := fired(server, count)):
            if time.monotonic() > deadline:
                raise SystemExit("not every schedule fired within 60 s of its instant")
            time.sleep(0.5)
    queued = [(r["queued"] - r["tick"]).total_seconds() for r in results]
    fire = [(r["fire_time"] - r["tick"]).total_seconds() for r in results]
    rows = [
        _stats("orchestrator: run_at -> job queued", queued),
        _stats("  of which run_at -> tick claimed", fire),
        _stats("baseline: Python timer wake-up", baseline),
    ]
    title = (
        f"Cron precision on {kind}: {count} run_at schedules, one a second "
        f"(machine: {record['cores']} cores, load before {record['load_before']})"
    )
    print_table(title, rows, ["measure", "fires", "p50_ms", "p99_ms", "max_ms", "min_ms"])
    ours = rows[0]
    met = ours["p99_ms"] <= GOAL_P99_MS
    print(
        f"\np99 lateness {ours['p99_ms']:.1f} ms (goal <= {GOAL_P99_MS:g} ms: "
        f"{'met' if met else 'MISSED'}); timer baseline p99 {rows[2]['p99_ms']:.1f} ms"
    )
    path = write_result(
        "cron_precision",
        {
            "database": kind,
            "smoke": args.smoke,
            "fires": count,
            "figures": rows,
            "lateness_ms": [round(value * 1000, 2) for value in queued],
            "summary": [
                summary_row(
                    f"schedule lateness p99 ({kind})",
                    ours["p99_ms"],
                    unit="ms",
                    baseline=rows[2]["p99_ms"],
                    goal=f"p99 <= {GOAL_P99_MS:g} ms",
                    met=met,
                )
            ],
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
