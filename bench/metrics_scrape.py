"""Issue 21, item 4: a ``/metrics`` scrape costs the same at a million finished jobs as at a
thousand (goal: under 50 ms, and within 1.5x of the scrape at 1k).

One server (no runner, retention off) holds 100 queued jobs in 5 queues and N finished jobs
(copied in bulk from a real cancelled job, as ``retention.py`` does). Scrapes are timed from
the client, one after another, at 1k finished jobs and again after the database has grown to
``--jobs`` (default 1M; smoke 20k). SQLite by default, PostgreSQL with ``--postgres URL``.

    python bench/metrics_scrape.py [--smoke] [--postgres URL] [--jobs N]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import (
    base_parser,
    machine,
    percentile,
    postgres_database,
    print_table,
    running_server,
    summary_row,
    write_result,
)
from retention import DEFINITION, load_backlog

from orchestrator.storage.db import Database

SMALL = 1000
QUEUES = 5
WAITING_PER_QUEUE = 20
TIME_GOAL_MS = 50.0
RATIO_GOAL = 1.5


def time_scrapes(server: object, count: int) -> list[float]:
    """Milliseconds per scrape, ``count`` of them one after another (after 5 to warm up)."""
    http = server.http  # type: ignore[attr-defined]
    times = []
    for n in range(count + 5):
        began = time.perf_counter()
        response = http.get("/metrics")
        response.raise_for_status()
        if n >= 5:
            times.append((time.perf_counter() - began) * 1000)
    return times


def main() -> None:
    """Run the benchmark, print the table, write ``bench/results/metrics_scrape.json``."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, help="finished jobs at the end (default 1M)")
    args = parser.parse_args()
    record = machine()
    large = args.jobs or (20_000 if args.smoke else 1_000_000)
    scrapes = 50 if args.smoke else 200
    kind = "postgres" if args.postgres else "sqlite"
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmpdir,
        postgres_database(args.postgres) as database_url,
        running_server(
            Path(tmpdir), database_url=database_url, runner_enabled="false", retention=0
        ) as server,
    ):
        url = database_url or f"sqlite:///{server.data_dir / 'orchestrator.db'}"
        db = Database(url)
        try:
            server.register(DEFINITION)
            for q in range(QUEUES):
                name = f"bench-{q}"
                server.http.post(
                    "/v1/projects/default/queues", json={"name": name, "paused": True}
                ).raise_for_status()
                for _ in range(WAITING_PER_QUEUE):
                    server.submit(definition=DEFINITION["name"], queue=name)
            template = server.submit(definition=DEFINITION["name"])
            server.http.post(f"/v1/projects/default/jobs/{template['id']}/cancel")
            loaded = 1
            for target in (SMALL, large):
                seconds = load_backlog(db, template["id"], target - loaded)
                loaded = target
                print(f"  {target} finished jobs ({seconds:.1f} s to load)", flush=True)
                times = time_scrapes(server, scrapes)
                rows.append(
                    {
                        "finished_jobs": target,
                        "scrapes": len(times),
                        "p50_ms": percentile(times, 50),
                        "p95_ms": percentile(times, 95),
                        "p99_ms": percentile(times, 99),
                    }
                )
        finally:
            db.dispose()
    ratio = rows[1]["p50_ms"] / rows[0]["p50_ms"]
    print_table(
        f"/metrics scrape on {kind}, {QUEUES * WAITING_PER_QUEUE} waiting jobs "
        f"(machine: {record['cores']} cores, load before {record['load_before']})",
        rows,
        list(rows[0]),
    )
    time_met = "met" if rows[1]["p95_ms"] < TIME_GOAL_MS else "MISSED"
    ratio_met = "met" if ratio <= RATIO_GOAL else "MISSED"
    print(
        f"p95 {rows[1]['p95_ms']:.1f} ms at {large} finished jobs (goal < {TIME_GOAL_MS:g} ms: "
        f"{time_met}); p50 {ratio:.2f}x the scrape at {SMALL} (goal <= {RATIO_GOAL:g}x: "
        f"{ratio_met})"
    )
    write_result(
        "metrics_scrape",
        {
            "machine": record,
            "smoke": args.smoke,
            "database": kind,
            "rows": rows,
            "summary": [
                summary_row(
                    f"/metrics p95 at {large} finished jobs ({kind})",
                    rows[1]["p95_ms"],
                    unit="ms",
                    goal=f"< {TIME_GOAL_MS:g} ms",
                    met=rows[1]["p95_ms"] < TIME_GOAL_MS,
                ),
                summary_row(
                    f"/metrics p50 at {large} finished jobs, against {SMALL} ({kind})",
                    rows[1]["p50_ms"],
                    unit="ms",
                    baseline=rows[0]["p50_ms"],
                    goal=f"<= {RATIO_GOAL:g}x",
                    met=ratio <= RATIO_GOAL,
                ),
            ],
        },
    )


if __name__ == "__main__":
    main()
