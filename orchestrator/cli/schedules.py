"""``orchestrator schedules``: create, list, inspect, pause, resume, trigger, preview and delete
schedules, and read their runs.

It sends requests (a new schedule's body is built in ``schedule_body``) and prints replies;
every rule on a schedule is the server's.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from orchestrator.cli.options import idempotency_key
from orchestrator.cli.output import AsJson, Project, cell, connect, print_json, table
from orchestrator.cli.schedule_body import request_body

app = typer.Typer(
    help="Run jobs or HTTP requests on a cron schedule or once at a time.", no_args_is_help=True
)

SCHEDULE_COLUMNS = (
    ("name", "NAME"),
    ("when", "WHEN"),
    ("timezone", "TZ"),
    ("target", "TARGET"),
    ("status", "STATUS"),
    ("next_run_time", "NEXT RUN"),
    ("last_outcome", "LAST OUTCOME"),
)
PREVIEW_COLUMNS = (("local", "LOCAL"), ("utc", "UTC"))

ScheduleName = Annotated[str, typer.Argument(help="The schedule's name.")]


class Overlap(StrEnum):
    ALLOW = "allow"
    SKIP = "skip"
    REPLACE = "replace"


class OnMissed(StrEnum):
    SKIP = "skip"
    RUN_ONCE = "run_once"


# --- output ----------------------------------------------------------------------------------


def _target_text(target: dict[str, Any]) -> str:
    """``job nightly`` or ``http POST https://...``."""
    if "http" in target:
        return f"http {target['http']['method']} {target['http']['url']}"
    job = target.get("job", {})
    return f"job {job.get('definition') or '(queue ' + job.get('queue', 'default') + ')'}"


def _show_schedules(schedules: list[dict[str, Any]], as_json: bool, raw: Any) -> None:
    if as_json:
        print_json(raw)
        return
    rows = [
        {
            "name": s["name"],
            "when": s["cron"] or f"at {cell('time', s['run_at'])}",
            "timezone": s["timezone"],
            "target": _target_text(s["target"]),
            "status": s["status"],
            "next_run_time": s["next_run_at"],
            "last_outcome": s["last_outcome"],
        }
        for s in schedules
    ]
    table(rows, SCHEDULE_COLUMNS)


def _run_detail(run: dict[str, Any]) -> str | None:
    """Why a run is as it is: its error, its missed ticks, the run it skipped or replaced."""
    if run.get("error"):
        return str(run["error"])
    detail = run.get("detail") or {}
    if run["status"] == "missed" and "count" in detail:
        count = f"{detail['count']}{'' if detail.get('count_is_exact', True) else '+'}"
        span = f"{cell('time', detail.get('first'))} to {cell('time', detail.get('last'))}"
        return f"{count} tick(s) missed, {span}"
    if detail.get("still_going"):
        return f"still going: {', '.join(detail['still_going'])}"
    if detail.get("replaced"):
        return f"replaced {', '.join(detail['replaced'])}"
    return None


def _show_runs(runs: list[dict[str, Any]], schedule: dict[str, Any]) -> None:
    """Runs as a table; the result column is the job's id or the HTTP status code."""
    http = "http" in schedule["target"]
    rows = [
        {
            **run,
            "result": run["status_code"] if http else run["job_id"],
            # ATTEMPTS counts HTTP requests; a job's attempts are the job's.
            "attempts": run["attempts"] or None,
            "detail": _run_detail(run),
        }
        for run in runs
    ]
    columns = (
        ("fire_time", "TIME"),
        ("trigger", "TRIGGER"),
        ("status", "STATUS"),
        ("result", "HTTP" if http else "JOB"),
        ("attempts", "ATTEMPTS"),
        ("detail", "DETAIL"),
    )
    table(rows, columns)


# --- commands --------------------------------------------------------------------------------


@app.command("ls")
def schedules_ls(project: Project = "default", as_json: AsJson = False) -> None:
    """The project's schedules by name: when, target, status, next run and last outcome."""
    with connect(project) as api:
        page = api.call("GET", "schedules")
    _show_schedules(page["items"], as_json, page)


@app.command("show")
def schedules_show(
    name: ScheduleName, project: Project = "default", as_json: AsJson = False
) -> None:
    """One schedule as JSON (secret values shown as ***); --json changes nothing."""
    with connect(project) as api:
        print_json(api.call("GET", "schedules", name))


@app.command("create")
def schedules_create(
    name: ScheduleName,
    file: Annotated[
        str | None,
        typer.Option(
            "--file", "-f", metavar="FILE", help="The whole schedule in YAML or JSON (-: stdin)."
        ),
    ] = None,
    cron: Annotated[str | None, typer.Option(metavar="EXPR", help="e.g. '0 2 * * *'.")] = None,
    at: Annotated[str | None, typer.Option(metavar="TIME", help="Once, at this time.")] = None,
    tz: Annotated[str | None, typer.Option(metavar="ZONE", help="e.g. Europe/Paris.")] = None,
    definition: Annotated[str | None, typer.Option(help="Job target: its definition.")] = None,
    queue: Annotated[str | None, typer.Option(help="Job target: its queue.")] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", metavar="KEY=VALUE", help="A job parameter (repeatable)."),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", "-e", metavar="KEY=VALUE", help="A job env var (repeatable)."),
    ] = None,
    secret_env: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY[=@FILE|=env:NAME]",
            help="A secret job env var, never shown (repeatable). KEY alone: the value of "
            "$KEY, else typed at a hidden prompt; KEY=@FILE: the file's text; KEY=env:NAME: "
            "$NAME. Never a value on the command line.",
        ),
    ] = None,
    input_: Annotated[
        str | None, typer.Option("--input", metavar="JSON|@FILE", help="The job's input JSON.")
    ] = None,
    url: Annotated[str | None, typer.Option(help="HTTP target: the URL to call.")] = None,
    method: Annotated[str | None, typer.Option(help="HTTP target: the method (POST).")] = None,
    header: Annotated[
        list[str] | None, typer.Option(metavar="NAME:VALUE", help="A header (repeatable).")
    ] = None,
    secret_header: Annotated[
        list[str] | None,
        typer.Option(metavar="NAME:VALUE", help="A header stored encrypted (repeatable)."),
    ] = None,
    body: Annotated[str | None, typer.Option(help="HTTP target: the body, sent as is.")] = None,
    timeout: Annotated[
        str | None, typer.Option(metavar="DURATION", help="The job's or request's time limit.")
    ] = None,
    retry_delays: Annotated[
        str | None, typer.Option(metavar="0,5s,1m", help="HTTP target: delays between tries.")
    ] = None,
    overlap: Annotated[
        Overlap | None, typer.Option(help="When the previous run still goes (allow).")
    ] = None,
    on_missed: Annotated[
        OnMissed | None, typer.Option(help="Ticks missed while down (skip).")
    ] = None,
    missed_window: Annotated[
        str | None, typer.Option(metavar="DURATION", help="run_once only this late (1h).")
    ] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    key_text: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            metavar="KEY",
            help="Send it with this Idempotency-Key: run again with the same key, it gets the "
            "schedule it made back (not a 409), and a lost answer is sent again by itself.",
        ),
    ] = None,
    project: Project = "default",
    as_json: AsJson = False,
) -> None:
    """Create a schedule from flags, or from a file (-f) holding the whole body.

    Flags: --cron or --at, and a job target (--definition ...) or an HTTP target (--url ...).
    """
    flags: dict[str, Any] = {
        "--cron": cron,
        "--at": at,
        "--tz": tz,
        "--definition": definition,
        "--queue": queue,
        "--param": param,
        "--env": env,
        "--secret-env": secret_env,
        "--input": input_,
        "--url": url,
        "--method": method,
        "--header": header,
        "--secret-header": secret_header,
        "--body": body,
        "--timeout": timeout,
        "--retry-delays": retry_delays,
        "--overlap": overlap and overlap.value,
        "--on-missed": on_missed and on_missed.value,
        "--missed-window": missed_window,
        "--paused": paused,
    }
    from orchestrator.cli.client import ApiError

    key = idempotency_key(key_text)
    request = request_body(name, file, flags)
    with connect(project) as api:
        try:
            if key is None:
                schedule = api.call("POST", "schedules", json=request)
            else:
                schedule = api.create_once("schedules", json=request, key=key)
        except ApiError as exc:
            if file is None:
                raise
            # The server refused the file's content: say which file.
            raise ApiError(exc.status, exc.code, f"{file}: {exc.message}", exc.field) from None
    _show_schedules([schedule], as_json, schedule)


def _set_paused(name: str, paused: bool, project: str, as_json: bool) -> None:
    with connect(project) as api:
        schedule = api.call("POST", "schedules", name, "pause" if paused else "resume")
    _show_schedules([schedule], as_json, schedule)


@app.command("pause")
def schedules_pause(
    name: ScheduleName, project: Project = "default", as_json: AsJson = False
) -> None:
    """Pause a schedule: no ticks fire (none are counted as missed); runs going on go on."""
    _set_paused(name, True, project, as_json)


@app.command("resume")
def schedules_resume(
    name: ScheduleName, project: Project = "default", as_json: AsJson = False
) -> None:
    """Resume a paused schedule from its next tick after now."""
    _set_paused(name, False, project, as_json)


@app.command("trigger")
def schedules_trigger(
    name: ScheduleName, project: Project = "default", as_json: AsJson = False
) -> None:
    """Run a schedule now (its overlap policy holds); print the run."""
    with connect(project) as api:
        schedule = api.call("GET", "schedules", name)
        run = api.call("POST", "schedules", name, "trigger")
    if as_json:
        print_json(run)
    else:
        _show_runs([run], schedule)


@app.command("runs")
def schedules_runs(
    name: ScheduleName,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many.")] = 20,
    project: Project = "default",
    as_json: AsJson = False,
) -> None:
    """The schedule's runs, newest first: job or HTTP outcome, missed and skipped ticks."""
    with connect(project) as api:
        schedule = api.call("GET", "schedules", name)
        page = api.call("GET", "schedules", name, "runs", params={"limit": limit})
    if as_json:
        print_json(page)
        return
    _show_runs(page["items"], schedule)
    if page.get("next_cursor"):
        typer.echo(f"(more runs than --limit {limit})", err=True)


@app.command("preview")
def schedules_preview(
    name: ScheduleName,
    count: Annotated[int, typer.Option(min=1, max=100, help="How many fire times.")] = 10,
    project: Project = "default",
    as_json: AsJson = False,
) -> None:
    """The next fire times, in the schedule's time zone and in UTC."""
    with connect(project) as api:
        preview = api.call("GET", "schedules", name, "preview", params={"count": count})
    if as_json:
        print_json(preview)
    else:
        table(preview["items"], PREVIEW_COLUMNS)


@app.command("delete")
def schedules_delete(
    name: ScheduleName, project: Project = "default", as_json: AsJson = False
) -> None:
    """Delete a schedule and its run history; the jobs it submitted stay."""
    with connect(project) as api:
        api.request("DELETE", "schedules", name)
    if as_json:
        print_json({"name": name, "deleted": True})
    else:
        typer.echo(f"deleted schedule {name}")
