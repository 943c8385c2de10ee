"""CLI startup (issue 19, item 8): the wall time of ``python -m orchestrator --help`` and of a
client command against nothing (``jobs ls`` with ``ORCH_URL`` on a closed port: it starts,
loads its settings and client, fails to connect and exits 1), beside ``python -c pass`` as the
baseline, all in the same run.

Each round runs every command once, in turn, so load on the machine falls on all of them
alike; the figures are medians over the rounds. With ``--before DIR`` the same commands also
run from another checkout (e.g. the main branch before this change) for a before/after in one
run. Each command runs with its checkout as the working directory, so ``-m orchestrator``
imports that checkout's package.

    python bench/cli_startup.py [--smoke] [--rounds N] [--before DIR]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    REPO_DIR,
    base_parser,
    free_port,
    machine,
    print_table,
    summary_row,
    write_result,
)

NAME = "cli_startup"
HELP_GOAL_SECONDS = 0.3  # the issue's: `orchestrator --help` starts in under 0.3 s


def commands(checkout: Path, label: str) -> list[tuple[str, list[str], Path]]:
    """(name, argv, working directory) of the commands timed from one checkout."""
    module = [sys.executable, "-m", "orchestrator"]
    return [
        (f"{label}--help", [*module, "--help"], checkout),
        (f"{label}submit --help", [*module, "submit", "--help"], checkout),
        (f"{label}jobs ls (no server)", [*module, "jobs", "ls"], checkout),
    ]


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Seconds from start to exit of one run (its output discarded)."""
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = base_parser(__doc__ or NAME)
    parser.add_argument("--rounds", type=int, default=30, help="runs of each command (30)")
    parser.add_argument("--before", type=Path, help="another checkout to time the same way")
    args = parser.parse_args()
    rounds = 5 if args.smoke else args.rounds
    record = machine()
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {**os.environ, "ORCH_URL": url, "ORCH_DATA_DIR": "/nonexistent"}
    env.pop("PYTHONPATH", None)
    timed_commands = [("python -c pass", [sys.executable, "-c", "pass"], REPO_DIR)]
    timed_commands += commands(REPO_DIR, "")
    if args.before is not None:
        timed_commands += commands(args.before.resolve(), "before: ")
    for _, argv, cwd in timed_commands:  # warm the file cache and .pyc files once
        timed(argv, cwd, env)
    samples: dict[str, list[float]] = {name: [] for name, _, _ in timed_commands}
    for _ in range(rounds):
        for name, argv, cwd in timed_commands:
            samples[name].append(timed(argv, cwd, env))

    baseline = statistics.median(samples["python -c pass"])
    rows: list[dict[str, Any]] = []
    for name, values in samples.items():
        median = statistics.median(values)
        rows.append(
            {
                "command": name,
                "median_s": round(median, 3),
                "min_s": round(min(values), 3),
                "max_s": round(max(values), 3),
                "over_baseline_s": round(median - baseline, 3),
            }
        )
    print_table(
        f"CLI startup, {rounds} rounds ({record['cores']} cores, load {record['load_before']})",
        rows,
        ["command", "median_s", "min_s", "max_s", "over_baseline_s"],
    )
    medians = {row["command"]: row["median_s"] for row in rows}
    summary = [
        summary_row(
            "cli --help",
            medians["--help"],
            unit="s",
            baseline=baseline,
            goal=f"< {HELP_GOAL_SECONDS} s",
            met=medians["--help"] < HELP_GOAL_SECONDS,
        ),
        summary_row("cli client command, no server", medians["jobs ls (no server)"], unit="s"),
    ]
    if args.before is not None:
        summary.append(
            summary_row("cli --help before", medians["before: --help"], unit="s"),
        )
    path = write_result(NAME, {"rounds": rounds, "rows": rows, "summary": summary})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
