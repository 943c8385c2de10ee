"""Issue 18, item 1: in a soak where jobs are submitted and expire at the same rate, the
database file stops growing.

One server (no runner) with ``ORCH_RETENTION=20s`` and ``ORCH_GC_INTERVAL=5``: client threads
submit jobs at a steady rate and cancel each at once (a real terminal transition, with its
events), so every job expires 20 s after its submit and the server's own collector deletes it.
Every 10 s the size of the database is sampled: on SQLite the database file, and beside it its
``-wal`` and ``-shm`` (the WAL is reused after each checkpoint: its size is the most written
between two checkpoints, not what the database holds); on PostgreSQL ``pg_database_size``, and
beside it the jobs and events tables with their indexes and TOAST. Once the first jobs have
expired (after a warm-up), the size must level off: the figure is the growth from the first
third of the samples' peak to the last third's.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from common import (
    base_parser,
    machine,
    postgres_database,
    print_table,
    running_server,
    summary_row,
    write_result,
)

from orchestrator.storage.db import Database

DEFINITION = {"name": "bench-noop", "image": "busybox:1.36", "command": ["true"]}
RETENTION_S = 20
GC_INTERVAL_S = 5
SAMPLE_EVERY_S = 10
# Past this, the first jobs have expired and been collected: the size starts to level off.
WARM_UP_S = RETENTION_S + 2 * GC_INTERVAL_S + SAMPLE_EVERY_S
GROWTH_GOAL = 0.05


def size_of(db: Database, data_dir: Path) -> dict[str, float]:
    """The jobs the database holds, its size and what is sampled beside it (MiB)."""
    mib = 1024 * 1024
    with db.read_engine.connect() as connection:
        jobs = int(connection.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one())
        if db.is_postgres:
            sizes = connection.execute(
                sa.text(
                    "SELECT pg_database_size(current_database()), "
                    "pg_total_relation_size('jobs') + pg_total_relation_size('job_events')"
                )
            ).one()
            return {"jobs": jobs, "size_mib": sizes[0] / mib, "tables_mib": sizes[1] / mib}
    database = data_dir / "orchestrator.db"
    journals = [Path(f"{database}{suffix}") for suffix in ("-wal", "-shm")]
    wal = sum(path.stat().st_size for path in journals if path.exists())
    return {"jobs": jobs, "size_mib": database.stat().st_size / mib, "wal_mib": wal / mib}


def submitter(server: Any, rate: float, stop: threading.Event, counts: list[int]) -> None:
    """Submit and cancel jobs at ``rate`` per second until ``stop``."""
    interval = 1 / rate
    due = time.monotonic()
    while not stop.is_set():
        job = server.submit(definition=DEFINITION["name"])
        server.http.post(f"/v1/projects/default/jobs/{job['id']}/cancel").raise_for_status()
        counts.append(1)
        due += interval
        delay = due - time.monotonic()
        if delay > 0:
            stop.wait(delay)


def main() -> None:
    """Run the soak, print the samples, write ``bench/results/retention_soak.json``."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, help="how long to soak (default 6; smoke 1)")
    parser.add_argument("--rate", type=float, default=40.0, help="jobs per second (default 40)")
    args = parser.parse_args()
    record = machine()
    minutes = args.minutes or (1.0 if args.smoke else 6.0)
    kind = "postgres" if args.postgres else "sqlite"
    threads_n = 4
    samples: list[dict[str, float]] = []
    counts: list[int] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-retention-soak-") as tmpdir,
        postgres_database(args.postgres) as database_url,
        running_server(
            Path(tmpdir),
            database_url=database_url,
            runner_enabled="false",
            retention=f"{RETENTION_S}s",
            gc_interval=GC_INTERVAL_S,
        ) as server,
    ):
        url = database_url or f"sqlite:///{server.data_dir / 'orchestrator.db'}"
        db = Database(url)
        stop = threading.Event()
        threads = [
            threading.Thread(target=submitter, args=(server, args.rate / threads_n, stop, counts))
            for _ in range(threads_n)
        ]
        try:
            server.register(DEFINITION)
            began = time.monotonic()
            for thread in threads:
                thread.start()
            while (elapsed := time.monotonic() - began) < minutes * 60:
                time.sleep(SAMPLE_EVERY_S - (elapsed % SAMPLE_EVERY_S))
                sample = {"t_s": round(time.monotonic() - began), "submitted": len(counts)}
                sample.update(size_of(db, server.data_dir))
                samples.append(sample)
                print(
                    f"  {sample['t_s']:>4} s: {sample['submitted']} submitted, "
                    f"{sample['jobs']} kept, {sample['size_mib']:.2f} MiB",
                    flush=True,
                )
        finally:
            stop.set()
            for thread in threads:
                if thread.is_alive():
                    thread.join()
            db.dispose()
    steady = [s for s in samples if s["t_s"] >= WARM_UP_S]
    third = max(len(steady) // 3, 1)
    first_peak = max(s["size_mib"] for s in steady[:third])
    last_peak = max(s["size_mib"] for s in steady[-third:])
    growth = last_peak / first_peak - 1
    rate = len(counts) / (samples[-1]["t_s"] or 1)
    print_table(
        f"Retention soak on {kind}: {rate:.0f} jobs/s submitted and expiring after "
        f"{RETENTION_S} s, collected every {GC_INTERVAL_S} s (machine: {record['cores']} "
        f"cores, load before {record['load_before']})",
        samples,
        list(samples[0]),
    )
    met = growth <= GROWTH_GOAL
    print(
        f"size peak {first_peak:.2f} MiB in the first third after warm-up, {last_peak:.2f} MiB "
        f"in the last: growth {growth:+.1%} (goal <= {GROWTH_GOAL:.0%}: "
        f"{'met' if met else 'MISSED'})"
    )
    write_result(
        "retention_soak",
        {
            "machine": record,
            "database": kind,
            "rate": rate,
            "samples": samples,
            "summary": [
                summary_row(
                    f"database size growth in a retention soak ({kind})",
                    growth * 100,
                    unit="%",
                    goal=f"<= {GROWTH_GOAL:.0%} (levels off)",
                    met=met,
                )
            ],
        },
    )


if __name__ == "__main__":
    main()
