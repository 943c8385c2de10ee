"""Queue depth (issue 7, item 2d): claim latency and submit latency with 1k, 100k and 1M
waiting jobs; flat figures mean the claim walks an index instead of scanning the queue.

Waiting jobs are bulk-loaded straight into the database as copies of one job submitted through
the API (so every column is what ``jobs.submit`` writes), with one ``INSERT ... SELECT`` per
step: a recursive CTE on SQLite, ``generate_series`` on PostgreSQL, followed there by
``VACUUM (ANALYZE)``, as autovacuum does after so many inserts. Claimed straight after a
one-transaction load of 1M rows, before any vacuum, the claim is 2.1-2.2x slower than at 1k
(measured in alternation; with the vacuum, 1.03x): the cost of a freshly loaded table, not of
its depth, and one that jobs arriving over time never see all at once. Their events are not
copied: the claim never reads them.
The claim is measured in-process, as the runner calls it (``attempts.claim`` in a write
transaction); the submit over the API of an ``orchestrator serve`` whose runner is off.

Each depth is compared with a second server and database holding 1k waiting jobs, claimed and
submitted to in alternation with the deep one (the order swapped every pair): a bulk load's
after-effects (WAL, checkpoints) and other work on the machine weigh on both alike, where
timing 1k first and 1M a minute later would charge them to the depth.

    python bench/queue_depth.py [--smoke] [--postgres URL]
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
from sqlmodel import Session

from orchestrator.services import attempts
from orchestrator.storage.db import Database
from orchestrator.storage.models import Job

DEFINITION = {"name": "bench-noop", "image": "busybox:1.36", "command": ["true"]}
CLAIMER = "bench-claimer"
TEMPLATE_QUEUE = "bench-template"
GOAL_RATIO = 2.0
# A slow claim (a scan) would make 200 of them take minutes: stop after this many seconds.
CLAIM_BUDGET = 30.0
MIN_CLAIMS = 10


def bulk_load(db: Database, template_seq: int, count: int) -> float:
    """Add ``count`` copies of job ``template_seq`` (fresh ids, later seqs), queued in the
    default queue; seconds taken."""
    if count <= 0:
        return 0.0
    table = Job.__table__  # type: ignore[attr-defined]
    columns = [c.name for c in table.columns if c.name not in ("seq", "id", "queue")]
    names = ", ".join(f'"{name}"' for name in columns)
    copied = ", ".join(f't."{name}"' for name in columns)
    if db.is_postgres:
        statement = (
            f'INSERT INTO jobs ("id", "queue", {names}) '
            f"SELECT gen_random_uuid()::text, 'default', {copied} "
            "FROM generate_series(1, :count) AS n, jobs AS t WHERE t.seq = :template"
        )
    else:
        statement = (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count) "
            f'INSERT INTO jobs ("id", "queue", {names}) '
            f"SELECT lower(hex(randomblob(16))), 'default', {copied} "
            "FROM n, jobs AS t WHERE t.seq = :template"
        )
    began = time.perf_counter()
    with db.write_engine.begin() as connection:
        connection.execute(sa.text(statement), {"count": count, "template": template_seq})
    if db.is_postgres:
        with db.write_engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                sa.text("VACUUM (ANALYZE) jobs")
            )
    return time.perf_counter() - began


def waiting(db: Database) -> int:
    """How many jobs are queued in the default queue."""
    with db.write_engine.connect() as connection:
        query = sa.text("SELECT count(*) FROM jobs WHERE status = 'queued' AND queue = 'default'")
        return int(connection.execute(query).scalar_one())


def time_claims(
    base: Database, deep: Database, count: int, budget: float = CLAIM_BUDGET
) -> tuple[list[float], list[float]]:
    """Claim up to ``count`` jobs from each database as the runner does, alternately, the order
    swapped every pair (fewer, but at least ``MIN_CLAIMS``, when they take longer than
    ``budget`` seconds); each side's seconds per claim."""
    times: dict[int, list[float]] = {id(base): [], id(deep): []}
    began_all = time.perf_counter()
    for number in range(count):
        for db in (base, deep) if number % 2 else (deep, base):
            began = time.perf_counter()
            with db.transaction() as session:
                job = attempts.claim(session, CLAIMER)
            times[id(db)].append(time.perf_counter() - began)
            if job is None:
                raise RuntimeError("nothing to claim: the queue ran dry")
        if number + 1 >= MIN_CLAIMS and time.perf_counter() - began_all > budget:
            break
    return times[id(base)], times[id(deep)]


def claim_plan(db: Database) -> list[str]:
    """The database's plan of the claim's SELECT of the next job (the one that reads the
    waiting jobs), taken from one real claim (rolled back)."""
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM jobs" in statement and "LIMIT" in statement and statement.startswith("SELECT"):
            captured.append((statement, parameters))

    sa.event.listen(db.write_engine, "before_cursor_execute", capture)
    try:
        with db.write_engine.connect() as connection:
            with Session(bind=connection) as session:
                attempts.claim(session, CLAIMER)
                session.rollback()
    finally:
        sa.event.remove(db.write_engine, "before_cursor_execute", capture)
    statement, parameters = captured[0]
    explain = "EXPLAIN " if db.is_postgres else "EXPLAIN QUERY PLAN "
    with db.write_engine.connect() as connection:
        rows = connection.exec_driver_sql(explain + statement, parameters).all()
        connection.rollback()
    if db.is_postgres:
        return [str(row[0]) for row in rows]
    return [f"{row[1]:>3} {row[3]}" for row in rows]


def time_submits(base: Server, deep: Server, count: int) -> tuple[list[float], list[float]]:
    """``count`` submits over each server's API, alternately (after a short warm-up); each
    side's seconds per submit."""
    times: dict[int, list[float]] = {id(base): [], id(deep): []}
    for number in range(count + 10):
        for server in (base, deep) if number % 2 else (deep, base):
            began = time.perf_counter()
            server.submit(definition=DEFINITION["name"])
            if number >= 10:
                times[id(server)].append(time.perf_counter() - began)
    return times[id(base)], times[id(deep)]


def prepare(server: Server, database_url: str | None) -> tuple[Database, int]:
    """Register the definition and submit the template job; the server's database and the
    template's seq."""
    server.register(DEFINITION)
    # The template waits in a paused queue of its own: never claimed, so always queued.
    server.http.post(
        "/v1/projects/default/queues", json={"name": TEMPLATE_QUEUE, "paused": True}
    ).raise_for_status()
    template = server.submit(definition=DEFINITION["name"], queue=TEMPLATE_QUEUE)
    db = Database(database_url or f"sqlite:///{server.data_dir / 'orchestrator.db'}")
    with db.write_engine.connect() as connection:
        template_seq = connection.execute(
            sa.text("SELECT seq FROM jobs WHERE id = :id"), {"id": template["id"]}
        ).scalar_one()
    return db, int(template_seq)


def main() -> None:
    """Run the benchmark, print the table, write ``bench/results/queue_depth.json``."""
    args = base_parser(__doc__.splitlines()[0]).parse_args()
    record = machine()
    depths = [1_000, 10_000] if args.smoke else [1_000, 100_000, 1_000_000]
    claims, submits = (50, 30) if args.smoke else (200, 100)
    kind = "postgres" if args.postgres else "sqlite"
    rows: list[dict[str, Any]] = []
    plans: dict[int, list[str]] = {}
    base_depth = depths[0]
    with (
        tempfile.TemporaryDirectory(prefix="bench-depth-") as tmpdir,
        postgres_database(args.postgres) as deep_url,
        postgres_database(args.postgres) as base_url,
        running_server(Path(tmpdir, "deep"), database_url=deep_url, runner_enabled="false") as deep,
        running_server(Path(tmpdir, "base"), database_url=base_url, runner_enabled="false") as base,
    ):
        deep_db, deep_template = prepare(deep, deep_url)
        base_db, base_template = prepare(base, base_url)
        try:
            for depth in depths:
                # Top both up (the previous step's claims and submits moved the counts).
                load_seconds = bulk_load(deep_db, deep_template, max(depth - waiting(deep_db), 0))
                bulk_load(base_db, base_template, max(base_depth - waiting(base_db), 0))
                actual = waiting(deep_db)
                print(f"  {actual} waiting (loaded in {load_seconds:.1f} s)", flush=True)
                plans[depth] = claim_plan(deep_db)
                time_claims(base_db, deep_db, 5)  # warm-up: caches, statement compilation
                base_claim, claim = time_claims(base_db, deep_db, claims)
                if len(claim) < claims:
                    print(f"  only {len(claim)} claims within {CLAIM_BUDGET:g} s", flush=True)
                base_submit, submit = time_submits(base, deep, submits)
                rows.append(
                    {
                        "waiting": actual,
                        "load_s": load_seconds,
                        "claims": len(claim),
                        "claim_p50_ms": percentile(claim, 50) * 1000,
                        "claim_p99_ms": percentile(claim, 99) * 1000,
                        "base_claim_p50_ms": percentile(base_claim, 50) * 1000,
                        "submit_p50_ms": percentile(submit, 50) * 1000,
                        "submit_p99_ms": percentile(submit, 99) * 1000,
                        "base_submit_p50_ms": percentile(base_submit, 50) * 1000,
                    }
                )
        finally:
            deep_db.dispose()
            base_db.dispose()
    last = rows[-1]
    for row in rows:
        row["claim_x_1k"] = row["claim_p50_ms"] / row["base_claim_p50_ms"]
        row["submit_x_1k"] = row["submit_p50_ms"] / row["base_submit_p50_ms"]
    claim_ratio = last["claim_x_1k"]
    submit_ratio = last["submit_x_1k"]
    title = (
        f"Queue depth on {kind}: up to {claims} claims and {submits} submits per depth "
        f"(machine: {record['cores']} cores, load before {record['load_before']})"
    )
    columns = [
        "waiting",
        "load_s",
        "claims",
        "claim_p50_ms",
        "claim_p99_ms",
        "base_claim_p50_ms",
        "claim_x_1k",
        "submit_p50_ms",
        "submit_p99_ms",
        "base_submit_p50_ms",
        "submit_x_1k",
    ]
    print_table(title, rows, columns)
    print(f"\nclaim plan at {rows[-1]['waiting']} waiting:")
    for line in plans[depths[-1]]:
        print(f"  {line}")
    met = claim_ratio <= GOAL_RATIO
    print(
        f"\nclaim p50 at the largest depth / at 1k in the same window = {claim_ratio:.2f}x "
        f"(goal <= {GOAL_RATIO}x: "
        f"{'met' if met else 'MISSED'}); submit p50 = {submit_ratio:.2f}x"
    )
    path = write_result(
        "queue_depth",
        {
            "database": kind,
            "smoke": args.smoke,
            "depths": rows,
            "claim_plans": {str(depth): plan for depth, plan in plans.items()},
            "summary": [
                summary_row(
                    f"claim p50 at {last['waiting']} waiting ({kind})",
                    last["claim_p50_ms"],
                    unit="ms",
                    baseline=last["base_claim_p50_ms"],
                    goal=f"<= {GOAL_RATIO}x at 1k",
                    met=met,
                ),
                summary_row(
                    f"submit p50 at {last['waiting']} waiting ({kind})",
                    last["submit_p50_ms"],
                    unit="ms",
                    baseline=last["base_submit_p50_ms"],
                ),
            ],
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
