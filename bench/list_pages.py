"""Lists stay small (issue 18, item 8): the server's resident memory while 8 clients list jobs
whose inputs are large, all at once.

A server (no runner) holds ``--jobs`` waiting jobs, each with an input of ``--input-kib`` KiB.
Each scenario resets the server's peak RSS (``/proc/<pid>/clear_refs``), then 8 clients walk
the whole list at the same time (every page, following the cursor or the page number),
``--rounds`` times; the row gives the peak RSS over the scenario and its growth over the RSS
before it. Scenarios:

- ``summaries``: ``GET /v1/projects/default/jobs?limit=500``, each job its summary;
- ``fields=input``: the same with every job's input, pages bounded by
  ``ORCH_LIST_PAGE_MAX_BYTES``;
- ``salad``: SaladCloud's ``GET .../queues/default/jobs?page_size=100`` (input included, as
  documented), streamed a batch at a time.

Run it from a checkout of an older commit (copy this file into its ``bench/``) for the figures
before the change: there every list page embeds every job's input.

    python bench/list_pages.py [--smoke] [--postgres URL] [--jobs N] [--input-kib K]
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from common import (
    IMAGE,
    Server,
    base_parser,
    postgres_database,
    print_table,
    running_server,
    summary_row,
    write_result,
)

NAME = "list_pages"
MB = 1024 * 1024
CLIENTS = 8
SETTLE = 2.0  # seconds for the heap to settle before a baseline is read
SALAD = "/api/public/organizations/bench/projects/default/queues/default/jobs"


def status_bytes(pid: int) -> dict[str, int]:
    """The ``kB`` fields of /proc/<pid>/status, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            fields[key] = int(parts[0]) * 1024
    return fields


def reset_peak(pid: int) -> None:
    """Start the process's peak RSS (VmHWM) again from its RSS now."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def walk_native(http: httpx.Client, params: dict[str, Any]) -> tuple[int, int]:
    """Every page of the native list; (jobs seen, bytes received)."""
    seen = size = 0
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = http.get("/v1/projects/default/jobs", params=query)
        response.raise_for_status()
        size += len(response.content)
        body = response.json()
        seen += len(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return seen, size


def walk_salad(http: httpx.Client, token: str) -> tuple[int, int]:
    """Every page of SaladCloud's list; (jobs seen, bytes received)."""
    seen = size = 0
    page = 1
    while True:
        response = http.get(
            SALAD, params={"page": page, "page_size": 100}, headers={"Salad-Api-Key": token}
        )
        response.raise_for_status()
        size += len(response.content)
        items = response.json()["items"]
        seen += len(items)
        if not items:
            return seen, size
        page += 1


def scenario(server: Server, name: str, walk: Any, jobs: int, rounds: int) -> dict[str, Any]:
    """Reset the peak, let ``CLIENTS`` clients walk the list ``rounds`` times at once; a row."""
    time.sleep(SETTLE)
    before = status_bytes(server.pid)["VmRSS"]
    reset_peak(server.pid)
    began = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(lambda _: [walk() for _ in range(rounds)], range(CLIENTS)))
    seconds = time.monotonic() - began
    status = status_bytes(server.pid)
    walks = [result for client in results for result in client]
    if any(seen != jobs for seen, _ in walks):
        raise RuntimeError(f"{name}: a walk saw {[seen for seen, _ in walks]} jobs, not {jobs}")
    row = {
        "scenario": name,
        "rss_before_mb": before / MB,
        "peak_mb": status["VmHWM"] / MB,
        "growth_mb": (status["VmHWM"] - before) / MB,
        "rss_after_mb": status["VmRSS"] / MB,
        "mb_per_walk": walks[0][1] / MB,
        "seconds": seconds,
    }
    print(f"  {name}: peak {row['peak_mb']:.0f} MB (+{row['growth_mb']:.0f})", flush=True)
    return row


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="waiting jobs (default 200)")
    parser.add_argument("--input-kib", type=int, default=240, help="KiB of input per job")
    parser.add_argument("--rounds", type=int, default=2, help="walks per client (default 2)")
    args = parser.parse_args()
    jobs, rounds = (20, 1) if args.smoke else (args.jobs, args.rounds)
    blob = "x" * (args.input_kib * 1024)
    with (
        tempfile.TemporaryDirectory(prefix="bench-lists-") as tmp,
        postgres_database(args.postgres) as database_url,
        running_server(
            tmp, database_url=database_url, runner_enabled="false", salad_organization="bench"
        ) as server,
    ):
        server.register({"name": "bench-lists", "image": IMAGE, "command": ["true"]})
        for n in range(jobs):
            server.submit(definition="bench-lists", input={"n": n, "blob": blob})
        http = server.http
        rows = [
            scenario(server, "summaries", lambda: walk_native(http, {"limit": 500}), jobs, rounds),
            scenario(
                server,
                "fields=input",
                lambda: walk_native(http, {"limit": 500, "fields": "input"}),
                jobs,
                rounds,
            ),
            scenario(server, "salad", lambda: walk_salad(http, server.token), jobs, rounds),
        ]
    kind = "PostgreSQL" if args.postgres else "SQLite"
    print_table(
        f"{CLIENTS} clients listing {jobs} jobs of {args.input_kib} KiB input ({kind})",
        rows,
        ["scenario", "rss_before_mb", "peak_mb", "growth_mb", "rss_after_mb", "mb_per_walk"],
    )
    path = write_result(
        NAME,
        {
            "smoke": args.smoke,
            "database": kind,
            "jobs": jobs,
            "input_kib": args.input_kib,
            "clients": CLIENTS,
            "rounds": rounds,
            "rows": rows,
            "summary": [
                summary_row(
                    f"peak RSS growth, {CLIENTS} parallel lists ({row['scenario']}, {kind})",
                    row["growth_mb"],
                    unit="MB",
                )
                for row in rows
            ],
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
