"""Pending dependents (issue 20, item 4): claim and finish latency with 100k jobs pending on
a dependency that has not ended, against none; flat figures mean a job's end reads only its
own dependents (``ix_job_dependencies_dependency``) and the claim never sees pending jobs.

Two servers (runner off), each with its own database. Each has the same jobs to claim and
finish, each with one dependent of its own (so every finish releases one job, into a paused
queue). The deep one also holds 100k pending jobs, all waiting for one job held back in a
paused queue, bulk-loaded as copies of one pending job submitted through the API (every column
what ``jobs.submit`` writes) with their ``job_dependencies`` rows. The claim and the finish
run in-process as the runner calls them (``attempts.claim``, ``attempts.finish``, each in its
write transaction), on the two databases in alternation (the order swapped every pair).

    python bench/dependents.py [--smoke] [--postgres URL]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
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

from orchestrator.services import attempts
from orchestrator.storage.db import Database
from orchestrator.storage.models import Job

DEFINITION = {"name": "bench-noop", "image": "busybox:1.36", "command": ["true"]}
CLAIMER = "bench-claimer"
GOAL_RATIO = 1.2
QUEUES = "/v1/projects/default/queues"


def prepare(server: Server, database_url: str | None, jobs: int) -> tuple[Database, str, int]:
    """Register the definition; submit ``jobs`` queued jobs, each with one dependent (in the
    paused queue ``released``), and a job held in the paused queue ``held`` with one pending
    dependent, the template of the bulk load. The database, the held job's id and the
    template's seq."""
    server.register(DEFINITION)
    for name in ("held", "released"):
        server.http.post(QUEUES, json={"name": name, "paused": True}).raise_for_status()
    for _ in range(jobs):
        job = server.submit(definition=DEFINITION["name"])
        server.submit(
            definition=DEFINITION["name"], queue="released", depends_on=[{"job": job["id"]}]
        )
    held = server.submit(definition=DEFINITION["name"], queue="held")["id"]
    template = server.submit(
        definition=DEFINITION["name"], queue="held", depends_on=[{"job": held}]
    )
    db = Database(database_url or f"sqlite:///{server.data_dir / 'orchestrator.db'}")
    with db.write_engine.connect() as connection:
        template_seq = connection.execute(
            sa.text("SELECT seq FROM jobs WHERE id = :id"), {"id": template["id"]}
        ).scalar_one()
    return db, held, int(template_seq)


def bulk_load(db: Database, held: str, template_seq: int, count: int) -> float:
    """Add ``count`` copies of the pending job ``template_seq``, each linked to ``held``;
    seconds taken."""
    table = Job.__table__  # type: ignore[attr-defined]
    columns = [c.name for c in table.columns if c.name not in ("seq", "id")]
    names = ", ".join(f'"{name}"' for name in columns)
    copied = ", ".join(f't."{name}"' for name in columns)
    if db.is_postgres:
        copy = (
            f'INSERT INTO jobs ("id", {names}) SELECT gen_random_uuid()::text, {copied} '
            "FROM generate_series(1, :count) AS n, jobs AS t WHERE t.seq = :template"
        )
    else:
        copy = (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count) "
            f'INSERT INTO jobs ("id", {names}) SELECT lower(hex(randomblob(16))), {copied} '
            "FROM n, jobs AS t WHERE t.seq = :template"
        )
    link = (
        "INSERT INTO job_dependencies (job_id, dependency_id, position, release_on) "
        "SELECT id, :held, 0, 'succeeded' FROM jobs WHERE seq > :template"
    )
    began = time.perf_counter()
    with db.write_engine.begin() as connection:
        connection.execute(sa.text(copy), {"count": count, "template": template_seq})
        connection.execute(sa.text(link), {"held": held, "template": template_seq})
    if db.is_postgres:
        with db.write_engine.connect() as connection:
            autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
            autocommit.execute(sa.text("VACUUM (ANALYZE) jobs"))
            autocommit.execute(sa.text("VACUUM (ANALYZE) job_dependencies"))
    return time.perf_counter() - began


def pending(db: Database) -> int:
    with db.write_engine.connect() as connection:
        query = sa.text("SELECT count(*) FROM jobs WHERE status = 'pending'")
        return int(connection.execute(query).scalar_one())


def time_jobs(base: Database, deep: Database, count: int) -> dict[str, list[float]]:
    """Claim and finish ``count`` jobs on each database, alternately; seconds per claim and
    per finish of each side (``base_claim``, ``claim``, ``base_finish``, ``finish``)."""
    times: dict[str, list[float]] = {"base_claim": [], "claim": [], "base_finish": [], "finish": []}
    for number in range(count):
        for db in (base, deep) if number % 2 else (deep, base):
            side = "base_" if db is base else ""
            began = time.perf_counter()
            with db.transaction() as session:
                job = attempts.claim(session, CLAIMER)
                if job is None:
                    raise RuntimeError("nothing to claim: the queue ran dry")
                job_id, attempt = job.id, job.attempt
            claimed = time.perf_counter()
            with db.transaction() as session:
                attempts.mark_running(session, None, job_id, CLAIMER, attempt, "bench")
            running = time.perf_counter()
            with db.transaction() as session:
                done = attempts.finish(
                    session, None, job_id, CLAIMER, attempt, attempts.AttemptResult(exit_code=0)
                )
                if done is None:
                    raise RuntimeError("the finish was fenced out")
            finished = time.perf_counter()
            times[f"{side}claim"].append(claimed - began)
            times[f"{side}finish"].append(finished - running)
    return times


def main() -> None:
    """Run the benchmark, print the table, write ``bench/results/dependents.json``."""
    args = base_parser(__doc__.splitlines()[0]).parse_args()
    record = machine()
    count = 10_000 if args.smoke else 100_000
    jobs = 40 if args.smoke else 200
    warm = 5
    kind = "postgres" if args.postgres else "sqlite"
    with (
        tempfile.TemporaryDirectory(prefix="bench-dependents-") as tmpdir,
        postgres_database(args.postgres) as deep_url,
        postgres_database(args.postgres) as base_url,
        running_server(Path(tmpdir, "deep"), database_url=deep_url, runner_enabled="false") as deep,
        running_server(Path(tmpdir, "base"), database_url=base_url, runner_enabled="false") as base,
    ):
        deep_db, held, template = prepare(deep, deep_url, jobs + warm)
        base_db, _, _ = prepare(base, base_url, jobs + warm)
        try:
            load_seconds = bulk_load(deep_db, held, template, count)
            waiting = pending(deep_db)
            print(f"  {waiting} pending (loaded in {load_seconds:.1f} s)", flush=True)
            time_jobs(base_db, deep_db, warm)  # caches, statement compilation
            times = time_jobs(base_db, deep_db, jobs)
            base_waiting = pending(base_db)
        finally:
            deep_db.dispose()
            base_db.dispose()
    row: dict[str, Any] = {"pending": waiting, "base_pending": base_waiting, "jobs": jobs}
    for name, values in times.items():
        row[f"{name}_p50_ms"] = percentile(values, 50) * 1000
        row[f"{name}_p99_ms"] = percentile(values, 99) * 1000
    claim_ratio = row["claim_p50_ms"] / row["base_claim_p50_ms"]
    finish_ratio = row["finish_p50_ms"] / row["base_finish_p50_ms"]
    row["claim_x"] = claim_ratio
    row["finish_x"] = finish_ratio
    title = (
        f"Pending dependents on {kind}: {jobs} claims and finishes (machine: "
        f"{record['cores']} cores, load before {record['load_before']})"
    )
    columns = [
        "pending",
        "base_pending",
        "claim_p50_ms",
        "base_claim_p50_ms",
        "claim_x",
        "finish_p50_ms",
        "finish_p99_ms",
        "base_finish_p50_ms",
        "finish_x",
    ]
    print_table(title, [row], columns)
    claim_met = claim_ratio <= GOAL_RATIO
    finish_met = finish_ratio <= GOAL_RATIO
    print(
        f"\nwith {waiting} pending / with {base_waiting}: claim p50 {claim_ratio:.2f}x, finish p50 "
        f"{finish_ratio:.2f}x (goal <= {GOAL_RATIO}x)"
    )
    path = write_result(
        "dependents",
        {
            "database": kind,
            "smoke": args.smoke,
            "figures": row,
            "summary": [
                summary_row(
                    f"claim p50 with {waiting} pending dependents ({kind})",
                    row["claim_p50_ms"],
                    unit="ms",
                    baseline=row["base_claim_p50_ms"],
                    goal=f"<= {GOAL_RATIO}x with none",
                    met=claim_met,
                ),
                summary_row(
                    f"finish p50 with {waiting} pending dependents ({kind})",
                    row["finish_p50_ms"],
                    unit="ms",
                    baseline=row["base_finish_p50_ms"],
                    goal=f"<= {GOAL_RATIO}x with none",
                    met=finish_met,
                ),
            ],
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
