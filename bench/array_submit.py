"""Issue 20, item 3: an array job of 10,000 children is accepted in under a second.

One server (no runner): ``POST /v1/projects/default/jobs`` with ``array: {size: N}`` is timed
end to end (the request, the parent and its N children and their 2N events inserted in one
transaction, the answer), a few times; each array is then cancelled (timed: a figure of its
own) and deleted, so every submit meets the same table. Beside it, in the same run, a single
submit's time: the baseline a child is compared with (time per child against a single job's).
SQLite by default, PostgreSQL with ``--postgres URL`` (a fresh database beside it).
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

DEFINITION = {
    "name": "bench-shard",
    "image": "busybox:1.36",
    "command": ["echo", "Param::array_index"],
}
GOAL_SECONDS = 1.0


def main() -> None:
    """Run the benchmark, print the table, write ``bench/results/array_submit.json``."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, help="children per array (default 10,000)")
    args = parser.parse_args()
    record = machine()
    size = args.size or (1_000 if args.smoke else 10_000)
    rounds = 2 if args.smoke else 5
    kind = "postgres" if args.postgres else "sqlite"
    with (
        tempfile.TemporaryDirectory(prefix="bench-array-") as tmpdir,
        postgres_database(args.postgres) as database_url,
        running_server(Path(tmpdir), database_url=database_url, runner_enabled="false") as server,
    ):
        server.register(DEFINITION)
        singles = []
        for _ in range(20 if args.smoke else 100):
            began = time.perf_counter()
            server.submit(definition=DEFINITION["name"], command=["echo", "0"])
            singles.append(time.perf_counter() - began)
        arrays: list[float] = []
        cancels: list[float] = []
        for _ in range(rounds):
            began = time.perf_counter()
            job = server.submit(definition=DEFINITION["name"], array={"size": size})
            arrays.append(time.perf_counter() - began)
            assert job["children"]["queued"] == size, job["children"]
            path = f"/v1/projects/default/jobs/{job['id']}"
            # Cancelling ends each waiting child through the job's one transition (its event,
            # its hooks): seconds for 10,000, timed as a figure of its own.
            began = time.perf_counter()
            server.http.post(f"{path}/cancel", timeout=600).raise_for_status()
            cancels.append(time.perf_counter() - began)
            server.http.delete(path, timeout=600).raise_for_status()
    single = percentile(singles, 50)
    worst = max(arrays)
    row = {
        "database": kind,
        "size": size,
        "array_p50_s": percentile(arrays, 50),
        "array_max_s": worst,
        "per_child_us": percentile(arrays, 50) / size * 1e6,
        "single_p50_ms": single * 1000,
        "child_vs_single": percentile(arrays, 50) / size / single,
        "cancel_p50_s": percentile(cancels, 50),
    }
    print_table(
        f"Array submit on {kind}: {rounds} arrays of {size} (machine: {record['cores']} cores, "
        f"load before {record['load_before']})",
        [row],
        list(row),
    )
    met = worst < GOAL_SECONDS
    print(
        f"an array of {size} accepted in {worst:.3f} s at worst "
        f"(goal < {GOAL_SECONDS:g} s: {'met' if met else 'MISSED'})"
    )
    write_result(
        "array_submit",
        {
            "machine": record,
            "database": kind,
            "rows": [row],
            "summary": [
                summary_row(
                    f"array of {size} accepted ({kind})",
                    worst,
                    unit="s",
                    goal=f"< {GOAL_SECONDS:g} s",
                    met=met,
                ),
            ],
        },
    )


if __name__ == "__main__":
    main()
