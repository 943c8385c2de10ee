"""Issue 18, item 1: retention removes a backlog of finished jobs fast, and submits keep their
latency while it runs.

One server (no runner) holds N finished jobs past retention, each with its three events and a
log row, copied in bulk from a real cancelled job (the events and logs stored in the jobs'
order, as when jobs come and go over time). The server keeps everything at first
(``ORCH_RETENTION=0``): submits over its API are timed while the database is idle. Then the
project's retention is set to 30 days (``PATCH /v1/projects/default``) and the server's own
collector (the background loop, ``ORCH_GC_INTERVAL=0.5``) deletes the backlog while the same
submits are timed again. Figures: jobs removed per second (goal >= 5,000/s), from the PATCH to
the moment no expired job is left (polled every 0.25 s: the rate is understated a little), and
submit p99 during collection against idle (goal <= 2x). SQLite by default, PostgreSQL with
``--postgres URL`` (a fresh database beside it).
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
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

from orchestrator.storage.db import Database

DEFINITION = {"name": "bench-noop", "image": "busybox:1.36", "command": ["true"]}
RATE_GOAL = 5000.0
LATENCY_GOAL = 2.0


def load_backlog(db: Database, template_id: str, count: int) -> float:
    """``count`` copies of the finished job ``template_id``, finished 60 days ago, each with
    the template's events and one log row; seconds taken.

    Their ids are made as the server makes them (``rules/ids.py``): version 7 UUIDs, one
    millisecond apart from 61 days ago, in the order of the jobs."""
    with db.write_engine.connect() as connection:
        columns = [column["name"] for column in sa.inspect(connection).get_columns("jobs")]
    copied = [c for c in columns if c not in ("seq", "id", "finish_time")]
    names = ", ".join(f'"{c}"' for c in copied)
    source = ", ".join(f't."{c}"' for c in copied)
    if db.is_postgres:
        made_id = (
            "lpad(to_hex((:base + n) >> 16), 8, '0') || '-' || "
            "lpad(to_hex((:base + n) & 65535), 4, '0') || '-7' || "
            "lpad(to_hex((random() * 4095)::int), 3, '0') || '-' || "
            "to_hex(32768 + (random() * 16383)::int) || '-' || "
            "lpad(to_hex((random() * 281474976710655)::bigint), 12, '0')"
        )
        jobs = (
            f'INSERT INTO jobs ("id", "finish_time", {names}) '
            f"SELECT {made_id}, (now() AT TIME ZONE 'UTC') - interval '60 days', {source} "
            "FROM generate_series(1, :count) AS n, jobs AS t WHERE t.id = :template"
        )
    else:
        made_id = (
            "printf('%08x-%04x-7%03x-%04x-%012x', (:base + i) >> 16, (:base + i) & 65535, "
            "abs(random()) % 4096, 32768 | (abs(random()) % 16384), "
            "abs(random()) % 281474976710656)"
        )
        jobs = (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count) "
            f'INSERT INTO jobs ("id", "finish_time", {names}) '
            f"SELECT {made_id}, datetime('now', '-60 days'), {source} "
            "FROM n, jobs AS t WHERE t.id = :template"
        )
    events = (
        "INSERT INTO job_events (job_id, time, type, attempt, status, detail) "
        "SELECT j.id, e.time, e.type, e.attempt, e.status, e.detail "
        "FROM jobs AS j, job_events AS e WHERE e.job_id = :template AND j.id <> :template "
        # A job's events side by side, in the order of the jobs (as when jobs come and go over
        # time), not in the order of their random ids (a join may scan jobs by its id index).
        "ORDER BY j.seq, e.id"
    )
    logs = (
        "INSERT INTO job_logs (job_id, attempt, time, text) "
        "SELECT j.id, 1, j.create_time, 'a line of output\n' FROM jobs AS j "
        "WHERE j.id <> :template ORDER BY j.seq"
    )
    base_ms = (time.time_ns() // 1_000_000) - 61 * 86_400_000
    parameters = {"count": count, "template": template_id, "base": base_ms}
    began = time.perf_counter()
    with db.write_engine.begin() as connection:
        for statement in (jobs, events, logs):
            connection.execute(sa.text(statement), parameters)
    if db.is_postgres:
        with db.write_engine.connect() as connection:
            autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
            for name in ("jobs", "job_events", "job_logs"):
                autocommit.execute(sa.text(f"VACUUM (ANALYZE) {name}"))
    return time.perf_counter() - began


def time_submits(server: Any, count: int) -> list[float]:
    """Seconds per submit, ``count`` of them one after another."""
    times = []
    for _ in range(count):
        began = time.perf_counter()
        server.submit(definition=DEFINITION["name"])
        times.append(time.perf_counter() - began)
    return times


def expired_left(db: Database) -> bool:
    """Whether a job past 30 days is left (one probe of the index retention reads)."""
    probe = sa.text(
        "SELECT 1 FROM jobs WHERE project = 'default' AND finish_time < :cutoff LIMIT 1"
    )
    cutoff = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=30)
    with db.read_engine.connect() as connection:
        return connection.execute(probe, {"cutoff": cutoff}).first() is not None


def main() -> None:
    """Run the benchmark, print the table, write ``bench/results/retention.json``."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, help="finished jobs to load (default 1M; smoke 20k)")
    parser.add_argument("--batch", type=int, help="most jobs per batch (ORCH_GC_BATCH)")
    parser.add_argument(
        "--batch-time", type=float, help="seconds a batch aims to take (ORCH_GC_BATCH_TIME)"
    )
    args = parser.parse_args()
    record = machine()
    count = args.jobs or (20_000 if args.smoke else 1_000_000)
    submits = 100 if args.smoke else 1000
    kind = "postgres" if args.postgres else "sqlite"
    with (
        tempfile.TemporaryDirectory(prefix="bench-retention-") as tmpdir,
        postgres_database(args.postgres) as database_url,
        running_server(
            Path(tmpdir),
            database_url=database_url,
            runner_enabled="false",
            retention=0,
            gc_interval=0.5,
            gc_batch=args.batch,
            gc_batch_time=args.batch_time,
        ) as server,
    ):
        url = database_url or f"sqlite:///{server.data_dir / 'orchestrator.db'}"
        db = Database(url)
        try:
            server.register(DEFINITION)
            template = server.submit(definition=DEFINITION["name"])
            server.http.post(f"/v1/projects/default/jobs/{template['id']}/cancel")
            load_s = load_backlog(db, template["id"], count)
            print(f"  {count} finished jobs loaded in {load_s:.1f} s", flush=True)
            time_submits(server, 50)  # warm-up
            idle = time_submits(server, submits)
            began = time.perf_counter()
            server.http.patch("/v1/projects/default", json={"retention": "30d"}).raise_for_status()
            during: list[float] = []
            probed = began
            while True:
                during.extend(time_submits(server, 1))
                if time.perf_counter() - probed >= 0.25:
                    probed = time.perf_counter()
                    if not expired_left(db):
                        break
            seconds = probed - began
        finally:
            db.dispose()
    removed = count
    rate = removed / seconds
    idle_p99, during_p99 = percentile(idle, 99) * 1000, percentile(during, 99) * 1000
    ratio = during_p99 / idle_p99
    row = {
        "jobs": removed,
        "seconds": seconds,
        "jobs_per_s": rate,
        "submit_idle_p50_ms": percentile(idle, 50) * 1000,
        "submit_idle_p99_ms": idle_p99,
        "submit_during_p50_ms": percentile(during, 50) * 1000,
        "submit_during_p99_ms": during_p99,
        "submits_during": len(during),
        "p99_ratio": ratio,
    }
    settings = server.env
    print_table(
        f"Retention on {kind}: {count} finished jobs past retention, batch time "
        f"{settings.get('ORCH_GC_BATCH_TIME', 'default')} s, at most "
        f"{settings.get('ORCH_GC_BATCH', 'default')} jobs (machine: {record['cores']} cores, "
        f"load before {record['load_before']})",
        [row],
        list(row),
    )
    rate_met = "met" if rate >= RATE_GOAL else "MISSED"
    ratio_met = "met" if ratio <= LATENCY_GOAL else "MISSED"
    print(
        f"removed {rate:,.0f} jobs/s (goal >= {RATE_GOAL:,.0f}: {rate_met}); submit p99 "
        f"{during_p99:.1f} ms while collecting, {idle_p99:.1f} ms idle = {ratio:.2f}x "
        f"(goal <= {LATENCY_GOAL:g}x: {ratio_met})"
    )
    write_result(
        "retention",
        {
            "machine": record,
            "database": kind,
            "rows": [row],
            "summary": [
                summary_row(
                    f"jobs removed per second ({kind})",
                    rate,
                    unit="jobs/s",
                    goal=f">= {RATE_GOAL:,.0f}/s",
                    met=rate >= RATE_GOAL,
                ),
                summary_row(
                    f"submit p99 while collecting ({kind})",
                    during_p99,
                    unit="ms",
                    baseline=idle_p99,
                    ratio=ratio,
                    goal=f"<= {LATENCY_GOAL:g}x idle",
                    met=ratio <= LATENCY_GOAL,
                ),
            ],
        },
    )


if __name__ == "__main__":
    main()
