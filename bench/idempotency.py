"""What an ``Idempotency-Key`` costs a submit (issue 19, item 3): ``POST
/v1/projects/default/jobs`` under ``CONNECTIONS`` concurrent connections without a key, and with
a new key per request (the key kept with its answer: one statement more in the submit's
transaction), on one server, the runner idle (its queue paused), interleaved in one run. A
request sent again with its key (its create run and rolled back, the kept answer sent) is
measured too, for information.

Goal: a submit with a key costs at most 10% more than one without (ratio of their throughputs,
same run). Each target gets a warm-up, then ``ROUNDS`` measured phases, the order rotating each
round so drift on the shared machine hits them all alike. The cost is the median of the rounds'
own ratios (each round's two phases ran seconds apart), so one phase that a burst of other work
on the machine slowed does not decide it; the ratio of the pooled rates is shown beside it.

    python bench/idempotency.py [--smoke] [--postgres URL]
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from common import (
    CpuMeter,
    back_to_back,
    base_parser,
    machine,
    percentile,
    postgres_database,
    print_table,
    running_server,
    summary_row,
    write_result,
)

CONNECTIONS = 16
ROUNDS = 15
PHASE_SECONDS = 3.0
GOAL_COST = 1.10  # a keyed submit's time over a plain one's, at most
PATH = "/v1/projects/default/jobs"
DEFINITION = {"name": "bench-noop", "image": "busybox:1.36", "command": ["true"]}
BODY = {"definition": "bench-noop"}
REPLAYED_KEYS = 64  # keys the replay target cycles through, each made once before it runs


@dataclass
class Target:
    """One way of submitting, and what its phases measured."""

    name: str
    status: int
    # The headers of the next request (a new key, a kept key, none).
    headers: Callable[[], dict[str, str]]
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: int = 0
    server_cores: list[float] = field(default_factory=list)
    # Each measured phase's rate (jobs/s), in round order.
    round_rates: list[float] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        """The target's table row (latencies in ms)."""
        return {
            "target": self.name,
            "requests": len(self.latencies),
            "errors": self.errors,
            "jobs_per_s": len(self.latencies) / self.seconds if self.seconds else None,
            "p50_ms": percentile(self.latencies, 50) * 1000,
            "p99_ms": percentile(self.latencies, 99) * 1000,
            "server_cores": sum(self.server_cores) / max(len(self.server_cores), 1),
        }


async def _load(
    target: Target, base_url: str, auth: dict[str, str], pid: int, seconds: float, record: bool
) -> None:
    """``CONNECTIONS`` clients posting back to back for ``seconds``."""
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(
        base_url=base_url, headers=auth, limits=limits, timeout=60
    ) as client:
        meter = CpuMeter(pid)
        latencies, errors, elapsed = await back_to_back(
            CONNECTIONS,
            seconds,
            lambda: client.post(PATH, json=BODY, headers=target.headers()),
            target.status,
        )
    if record:
        target.latencies += latencies
        target.seconds += elapsed
        target.errors += errors
        target.server_cores.append(meter.read())
        target.round_rates.append(len(latencies) / elapsed)


def main() -> None:
    """Run the benchmark, print the table, write ``bench/results/idempotency.json``."""
    args = base_parser(__doc__.splitlines()[0]).parse_args()
    record = machine()
    rounds, phase, warmup = (1, 3.0, 1.0) if args.smoke else (ROUNDS, PHASE_SECONDS, 2.0)
    kind = "postgres" if args.postgres else "sqlite"
    with tempfile.TemporaryDirectory(prefix="bench-idempotency-") as tmpdir:
        with (
            postgres_database(args.postgres) as database_url,
            running_server(Path(tmpdir), database_url=database_url) as server,
        ):
            server.register(DEFINITION)
            paused = server.http.patch("/v1/projects/default/queues/default", json={"paused": True})
            paused.raise_for_status()
            kept = [f"bench-replay-{n}" for n in range(REPLAYED_KEYS)]
            for key in kept:
                server.http.post(
                    PATH, json=BODY, headers={"Idempotency-Key": key}
                ).raise_for_status()
            cycle = itertools.cycle(kept)
            targets = [
                Target("no key", 201, dict),
                Target("new key", 201, lambda: {"Idempotency-Key": str(uuid.uuid4())}),
                Target("key sent again", 201, lambda: {"Idempotency-Key": next(cycle)}),
            ]
            auth = {"Authorization": f"Bearer {server.token}"}

            def load(target: Target, seconds: float, measured: bool) -> None:
                asyncio.run(_load(target, server.url, auth, server.pid, seconds, measured))

            for target in targets:
                load(target, warmup, False)
            for number in range(rounds):
                shift = number % len(targets)
                for target in targets[shift:] + targets[:shift]:
                    load(target, phase, True)
                    print(f"  round {number + 1}: {target.name} done", flush=True)
    rows = [target.row() for target in targets]
    plain, keyed, replayed = rows
    pooled_cost = plain["jobs_per_s"] / keyed["jobs_per_s"]
    for target, row in zip(targets, rows, strict=True):
        row["pooled_cost"] = plain["jobs_per_s"] / row["jobs_per_s"] if row["jobs_per_s"] else None
        row["round_costs"] = [
            base / rate
            for base, rate in zip(targets[0].round_rates, target.round_rates, strict=True)
        ]
        row["cost"] = statistics.median(row["round_costs"])
    cost = keyed["cost"]
    title = (
        f"Submit with and without Idempotency-Key on {kind}: {CONNECTIONS} connections, "
        f"{rounds} x {phase:g} s interleaved (machine: {record['cores']} cores, load before "
        f"{record['load_before']})"
    )
    columns = ["target", "requests", "errors", "jobs_per_s", "p50_ms", "p99_ms"]
    print_table(title, rows, [*columns, "cost", "pooled_cost", "server_cores"])
    met = cost <= GOAL_COST
    print(
        f"\na keyed submit costs {cost:.3f}x a plain one, the median of {rounds} rounds "
        f"(rounds {min(keyed['round_costs']):.3f}-{max(keyed['round_costs']):.3f}x, pooled "
        f"{pooled_cost:.3f}x; goal <= {GOAL_COST}x: {'met' if met else 'MISSED'}); a replay "
        f"costs {replayed['cost']:.3f}x"
    )
    path = write_result(
        "idempotency",
        {
            "database": kind,
            "smoke": args.smoke,
            "connections": CONNECTIONS,
            "rounds": rounds,
            "phase_seconds": phase,
            "targets": rows,
            "summary": [
                summary_row(
                    f"keyed submit jobs/s ({kind})",
                    keyed["jobs_per_s"],
                    unit="jobs/s",
                    baseline=plain["jobs_per_s"],
                    ratio=1 / cost,
                    goal=f"cost <= {GOAL_COST}x a submit without key",
                    met=met,
                ),
            ],
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
