"""200 browsers watching the console while nothing changes (issue 21): the server's CPU with
them, against the same server with none.

One ``orchestrator serve`` (runner off) with about 1k jobs, one of them held queued in a paused
queue (so its page stays live). Each simulated browser is an httpx client with the console's
session cookie that does what the page's scripts do: half keep the jobs page open (its
fragment polled every 3 s), half a job's page (its fragment polled every 2 s, and its log
followed on one open stream). A browser sends back the ETag of its last copy, as Chromium does
for the fragments (``Cache-Control: private, no-cache``); with ``--no-etag`` it does not (the
pages before ETags, for comparison). Nothing is submitted while they watch. The server's CPU is
read from ``/proc/<pid>/stat`` over the stretch; the machine is shared, so the load average
during each stretch is printed with it.

    python bench/console_watchers.py [--smoke] [--postgres URL] [--watchers N] [--seconds S]
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import (
    CpuMeter,
    base_parser,
    machine,
    postgres_database,
    print_table,
    running_server,
    summary_row,
    write_result,
)
from console_pages import prepare

NAME = "console_watchers"
GOAL_CORES = 0.2
JOBS_POLL, JOB_POLL = 3.0, 2.0  # the pages' hx-trigger intervals


class Browser:
    """One simulated browser on one console page."""

    def __init__(self, url: str, token: str, page: str, poll: str, every: float, log: str | None):
        self.client = httpx.AsyncClient(
            base_url=url, timeout=60, headers={"Cookie": f"orch_session={token}"}
        )
        self.page, self.poll, self.every, self.log = page, poll, every, log
        self.statuses: dict[int, int] = {}
        self.tag: str | None = None

    async def watch(self, etag: bool, stop: asyncio.Event) -> None:
        """Open the page, then poll its fragment until ``stop`` (and follow its log)."""
        await asyncio.sleep(random.uniform(0, self.every))  # browsers do not poll in step
        opened = await self.client.get(self.page)
        opened.raise_for_status()
        follow = asyncio.create_task(self._follow(stop)) if self.log else None
        while not stop.is_set():
            headers = {"HX-Request": "true"}
            if etag and self.tag:
                headers["If-None-Match"] = self.tag
            answer = await self.client.get(self.poll, headers=headers)
            self.statuses[answer.status_code] = self.statuses.get(answer.status_code, 0) + 1
            self.tag = answer.headers.get("etag", self.tag)
            try:
                await asyncio.wait_for(stop.wait(), self.every)
            except TimeoutError:
                pass
        if follow is not None:
            follow.cancel()
        await self.client.aclose()

    async def _follow(self, stop: asyncio.Event) -> None:
        assert self.log is not None
        async with self.client.stream("GET", self.log) as stream:
            async for _ in stream.aiter_bytes():
                if stop.is_set():
                    return


async def watched(
    url: str, token: str, job_id: str, watchers: int, seconds: float, pid: int, etag: bool
) -> dict[str, Any]:
    """Run ``watchers`` browsers; the server's cores over ``seconds`` once all are watching."""
    base = f"/ui/projects/default/jobs/{job_id}"
    browsers = [
        Browser(url, token, "/ui/jobs", "/ui/jobs/rows?project=default", JOBS_POLL, None)
        if n % 2 == 0
        else Browser(url, token, base, f"{base}/live", JOB_POLL, f"{base}/log/follow?after=0")
        for n in range(watchers)
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(browser.watch(etag, stop)) for browser in browsers]
    await asyncio.sleep(max(JOBS_POLL, JOB_POLL) + 2)  # every page opened, its first poll made
    for browser in browsers:
        browser.statuses.clear()
    meter = CpuMeter(pid)
    load_before = os.getloadavg()[0]
    began = time.monotonic()
    await asyncio.sleep(seconds)
    cores = meter.read()
    elapsed = time.monotonic() - began
    load_after = os.getloadavg()[0]
    stop.set()
    await asyncio.gather(*tasks)
    statuses: dict[int, int] = {}
    for browser in browsers:
        for status, count in browser.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    bad = {status: count for status, count in statuses.items() if status not in (200, 304)}
    if bad:
        raise RuntimeError(f"polls answered {bad}")
    return {
        "watchers": watchers,
        "etag": etag,
        "cores": cores,
        "polls_per_s": sum(statuses.values()) / elapsed,
        "not_modified": statuses.get(304, 0),
        "rendered": statuses.get(200, 0),
        "load": f"{load_before:.2f}-{load_after:.2f}",
    }


def idle(pid: int, seconds: float) -> dict[str, Any]:
    """The server's cores with no browser, over ``seconds``."""
    meter = CpuMeter(pid)
    load_before = os.getloadavg()[0]
    time.sleep(seconds)
    cores = meter.read()
    return {
        "watchers": 0,
        "etag": "-",
        "cores": cores,
        "polls_per_s": 0.0,
        "not_modified": 0,
        "rendered": 0,
        "load": f"{load_before:.2f}-{os.getloadavg()[0]:.2f}",
    }


def main() -> None:
    """Run the benchmark, print the table, write ``bench/results/console_watchers.json``."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--no-etag", action="store_true", help="also measure without ETags")
    args = parser.parse_args()
    record = machine()
    watchers = args.watchers or (20 if args.smoke else 200)
    seconds = args.seconds or (4.0 if args.smoke else 30.0)
    jobs = 1_000
    kind = "postgres" if args.postgres else "sqlite"
    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-watchers-") as tmpdir,
        postgres_database(args.postgres) as url,
        running_server(
            Path(tmpdir),
            database_url=url,
            runner_enabled="false",
            # Each job page follows its log on a stream; one token serves every browser here.
            max_streams_per_token=watchers + 10,
        ) as server,
    ):
        console, job_id = prepare(server, url, jobs)
        console.close()
        rows.append(idle(server.pid, seconds))
        modes = [True, False] if args.no_etag else [True]
        for etag in modes:
            rows.append(
                asyncio.run(
                    watched(server.url, server.token, job_id, watchers, seconds, server.pid, etag)
                )
            )
        rows.append(idle(server.pid, seconds))
    title = (
        f"Console watchers on {kind}: {jobs} jobs, {seconds:.0f} s each "
        f"(machine: {record['cores']} cores, load before {record['load_before']})"
    )
    columns = ["watchers", "etag", "cores", "polls_per_s", "rendered", "not_modified", "load"]
    print_table(title, rows, columns)
    watched_row = next(row for row in rows if row["etag"] is True)
    baseline = min(row["cores"] for row in rows if row["watchers"] == 0)
    path = write_result(
        NAME,
        {
            "database": kind,
            "smoke": args.smoke,
            "rows": rows,
            "summary": [
                summary_row(
                    f"server cores, {watchers} browsers watching, nothing changing ({kind})",
                    watched_row["cores"],
                    unit="cores",
                    baseline=baseline,
                    goal=f"< {GOAL_CORES}",
                    met=watched_row["cores"] < GOAL_CORES,
                )
            ],
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
