"""Console pages at depth (issue 21): the server time of the jobs page, of the fragment it
polls, and of a job's page, with 1M finished jobs in the project, against the same pages with
1k; flat figures mean the pages read indexes, never the whole table.

Finished jobs are bulk-loaded straight into the database as copies of one job submitted through
the API (every column as ``jobs.submit`` writes it, the status ``succeeded``), one
``INSERT ... SELECT`` per step (as ``queue_depth.py`` does; ``VACUUM (ANALYZE)`` after it on
PostgreSQL). Both servers (``orchestrator serve``, runner off) are asked in alternation, the
order swapped every pair, so the machine's other work weighs on both alike. A request carries
the console's session cookie, as a signed-in browser's does; the time is the whole request
over loopback.

    python bench/console_pages.py [--smoke] [--postgres URL]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
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

from orchestrator.storage.db import Database
from orchestrator.storage.models import Job

NAME = "console_pages"
DEFINITION = {"name": "bench-noop", "image": "busybox:1.36", "command": ["true"]}
HELD = "bench-held"
GOAL_RATIO = 1.5
BASE_JOBS = 1_000


def bulk_load(db: Database, template_seq: int, count: int) -> float:
    """Add ``count`` succeeded copies of job ``template_seq`` in the default queue; seconds."""
    if count <= 0:
        return 0.0
    table = Job.__table__  # type: ignore[attr-defined]
    skip = ("seq", "id", "queue", "status")
    columns = [c.name for c in table.columns if c.name not in skip]
    names = ", ".join(f'"{name}"' for name in columns)
    copied = ", ".join(f't."{name}"' for name in columns)
    if db.is_postgres:
        rows = "FROM generate_series(1, :count) AS n, jobs AS t WHERE t.seq = :template"
        new_id = "gen_random_uuid()::text"
        prefix = ""
    else:
        prefix = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count) "
        rows = "FROM n, jobs AS t WHERE t.seq = :template"
        new_id = "lower(hex(randomblob(16)))"
    statement = (
        f'{prefix}INSERT INTO jobs ("id", "queue", "status", {names}) '
        f"SELECT {new_id}, 'default', 'succeeded', {copied} {rows}"
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


def prepare(server: Server, database_url: str | None, jobs: int) -> tuple[httpx.Client, str]:
    """Register the definition, submit the template (held in a paused queue), load ``jobs``
    copies; a client signed in to the console, and the template's id."""
    server.register(DEFINITION)
    server.http.post("/v1/projects/default/queues", json={"name": HELD, "paused": True})
    template = server.submit(definition=DEFINITION["name"], queue=HELD)
    db = Database(database_url or f"sqlite:///{server.data_dir / 'orchestrator.db'}")
    try:
        with db.write_engine.connect() as connection:
            seq = connection.execute(
                sa.text("SELECT seq FROM jobs WHERE id = :id"), {"id": template["id"]}
            ).scalar_one()
        seconds = bulk_load(db, int(seq), jobs - 1)
    finally:
        db.dispose()
    print(f"  {jobs} jobs loaded in {seconds:.1f} s", flush=True)
    console = httpx.Client(
        base_url=server.url, timeout=60, headers={"Cookie": f"orch_session={server.token}"}
    )
    return console, str(template["id"])


def time_pages(
    clients: list[tuple[httpx.Client, str]], rounds: int
) -> dict[str, list[list[float]]]:
    """Each page's seconds per request on each server, asked alternately (after a warm-up)."""
    pages = {
        "jobs page": lambda job_id: "/ui/jobs",
        "jobs poll": lambda job_id: "/ui/jobs/rows",
        "job page": lambda job_id: f"/ui/projects/default/jobs/{job_id}",
    }
    times: dict[str, list[list[float]]] = {page: [[], []] for page in pages}
    for number in range(rounds + 5):
        order = [0, 1] if number % 2 else [1, 0]
        for page, path in pages.items():
            for side in order:
                client, job_id = clients[side]
                began = time.perf_counter()
                response = client.get(path(job_id))
                elapsed = time.perf_counter() - began
                if response.status_code != 200:
                    raise RuntimeError(f"{path(job_id)}: {response.status_code}")
                if number >= 5:
                    times[page][side].append(elapsed)
    return times


def main() -> None:
    """Run the benchmark, print the table, write ``bench/results/console_pages.json``."""
    args = base_parser(__doc__.splitlines()[0]).parse_args()
    record = machine()
    deep_jobs = 20_000 if args.smoke else 1_000_000
    rounds = 20 if args.smoke else 100
    kind = "postgres" if args.postgres else "sqlite"
    with (
        tempfile.TemporaryDirectory(prefix="bench-console-") as tmpdir,
        postgres_database(args.postgres) as deep_url,
        postgres_database(args.postgres) as base_url,
        running_server(Path(tmpdir, "deep"), database_url=deep_url, runner_enabled="false") as deep,
        running_server(Path(tmpdir, "base"), database_url=base_url, runner_enabled="false") as base,
    ):
        clients = [prepare(base, base_url, BASE_JOBS), prepare(deep, deep_url, deep_jobs)]
        try:
            times = time_pages(clients, rounds)
        finally:
            for client, _ in clients:
                client.close()
    rows: list[dict[str, Any]] = []
    for page, (base_times, deep_times) in times.items():
        base_p50 = percentile(base_times, 50) * 1000
        deep_p50 = percentile(deep_times, 50) * 1000
        rows.append(
            {
                "page": page,
                "base_p50_ms": base_p50,
                "deep_p50_ms": deep_p50,
                "deep_p99_ms": percentile(deep_times, 99) * 1000,
                "x_1k": deep_p50 / base_p50,
            }
        )
    title = (
        f"Console pages on {kind}: {deep_jobs} jobs against {BASE_JOBS}, {rounds} requests each "
        f"(machine: {record['cores']} cores, load before {record['load_before']})"
    )
    print_table(title, rows, ["page", "base_p50_ms", "deep_p50_ms", "deep_p99_ms", "x_1k"])
    path = write_result(
        NAME,
        {
            "database": kind,
            "smoke": args.smoke,
            "pages": rows,
            "summary": [
                summary_row(
                    f"{row['page']} p50 at {deep_jobs} jobs ({kind})",
                    row["deep_p50_ms"],
                    unit="ms",
                    baseline=row["base_p50_ms"],
                    goal=f"<= {GOAL_RATIO}x at 1k",
                    met=row["x_1k"] <= GOAL_RATIO,
                )
                for row in rows
            ],
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
