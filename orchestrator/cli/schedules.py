"""``orchestrator schedules``: create, list, inspect, pause, resume, trigger, preview and delete
schedules, and read their runs.

It builds request bodies and prints replies; every rule on a schedule is the server's.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from orchestrator.cli.client import ApiError
from orchestrator.cli.jobs import input_option, key_value_pairs
from orchestrator.cli.output import AsJson, Project, cell, connect, print_json, table
from orchestrator.rules.units import parse_duration

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
# The flags of each kind of target (--timeout belongs to both: a job's or a request's).
JOB_FLAGS = ("--definition", "--queue", "--param", "--env", "--secret-env", "--input")
HTTP_FLAGS = ("--url", "--method", "--header", "--secret-header", "--body", "--retry-delays")

ScheduleName = Annotated[str, typer.Argument(help="The schedule's name.")]


class Overlap(StrEnum):
    ALLOW = "allow"
    SKIP = "skip"
    REPLACE = "replace"


class OnMissed(StrEnum):
    SKIP = "skip"
    RUN_ONCE = "run_once"


# --- parsing of flags and files --------------------------------------------------------------


def _secret_env(values: list[str] | None) -> dict[str, str]:
    """``KEY=VALUE``, or ``KEY`` alone to take the value of the environment variable ``KEY``
    (so it is not in the shell's history); a value is never echoed in an error."""
    pairs: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep:
            if not key.isidentifier() or key not in os.environ:
                raise typer.BadParameter(
                    "a value is neither KEY=VALUE nor the name of a set environment variable",
                    param_hint="'--secret-env'",
                )
            value = os.environ[key]
        elif not key:
            raise typer.BadParameter("a value is not KEY=VALUE", param_hint="'--secret-env'")
        pairs[key] = value
    return pairs


def _headers(values: list[str] | None, option: str, secret: bool = False) -> dict[str, str]:
    """``NAME:VALUE`` options as a dict (the value's leading blanks dropped, as in HTTP)."""
    headers: dict[str, str] = {}
    for item in values or []:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            shown = "a value" if secret else repr(item)
            raise typer.BadParameter(f"{shown} is not NAME:VALUE", param_hint=f"'{option}'")
        headers[name.strip()] = value.lstrip()
    return headers


def _duration(text: str, option: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=f"'{option}'") from None


def _seconds(text: str | None, option: str) -> float | None:
    return None if text is None else _duration(text, option)


def _delays(text: str | None) -> list[float] | None:
    """``0,5s,1m``: the delays before each retry; 0 retries at once."""
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    return [0.0 if part in ("0", "0s") else _duration(part, "--retry-delays") for part in parts]


def _jsonable(value: Any) -> str:
    # YAML reads an unquoted time (run_at: 2030-01-01T09:00:00Z) as a datetime.
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _read_body(file: str) -> dict[str, Any]:
    """The schedule held in a YAML or JSON file (``-``: standard input)."""
    hint = "'-f' / '--file'"
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise typer.BadParameter(f"{file}: cannot read: {reason}", param_hint=hint) from None
    except UnicodeDecodeError:
        raise typer.BadParameter(f"{file}: not UTF-8 text", param_hint=hint) from None
    try:
        # JSON first: YAML refuses the tabs a JSON file may be indented with.
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = yaml.safe_load(text)
        except yaml.MarkedYAMLError as exc:
            line = f":{exc.problem_mark.line + 1}" if exc.problem_mark is not None else ""
            raise typer.BadParameter(
                f"{file}{line}: invalid YAML: {exc.problem}", param_hint=hint
            ) from None
        except yaml.YAMLError as exc:
            raise typer.BadParameter(f"{file}: invalid YAML: {exc}", param_hint=hint) from None
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{file}: a schedule must be a mapping of fields", param_hint=hint)
    return dict(json.loads(json.dumps(data, default=_jsonable)))


def _usage(options: list[str], message: str) -> typer.BadParameter:
    """A usage error (exit 2) naming the options at fault."""
    return typer.BadParameter(message, param_hint=" / ".join(f"'{o}'" for o in options))


def _given(value: Any) -> bool:
    return value is not None and value != [] and value is not False


def _target(flags: dict[str, Any]) -> dict[str, Any]:
    """The ``target`` of the flags: a job or an HTTP request, never both, never neither."""
    job = [flag for flag in JOB_FLAGS if _given(flags[flag])]
    http = [flag for flag in HTTP_FLAGS if _given(flags[flag])]
    if job and http:
        raise _usage([*job, *http], "give the flags of one target: a job or an HTTP request")
    timeout = _seconds(flags["--timeout"], "--timeout")
    if http:
        if flags["--url"] is None:
            raise _usage(["--url"], f"required with {', '.join(http)}")
        request = {
            "url": flags["--url"],
            "method": flags["--method"],
            "headers": _headers(flags["--header"], "--header") or None,
            "secret_headers": _headers(flags["--secret-header"], "--secret-header", True) or None,
            "body": flags["--body"],
            "timeout": timeout,
            "retry_delays": _delays(flags["--retry-delays"]),
        }
        return {"http": {key: value for key, value in request.items() if value is not None}}
    if not job:
        raise _usage(["--definition", "--url"], "give a job or an HTTP target (or -f FILE)")
    submission = {
        "definition": flags["--definition"],
        "queue": flags["--queue"],
        "parameters": key_value_pairs(flags["--param"], "--param") or None,
        "env": key_value_pairs(flags["--env"], "--env") or None,
        "secret_env": _secret_env(flags["--secret-env"]) or None,
        "input": input_option(flags["--input"]) if flags["--input"] is not None else None,
        "timeout": timeout,
    }
    return {"job": {key: value for key, value in submission.items() if value is not None}}


def _body_from_flags(name: str, flags: dict[str, Any]) -> dict[str, Any]:
    if flags["--cron"] is not None and flags["--at"] is not None:
        raise _usage(["--cron", "--at"], "give one: a cron schedule or a one-shot time")
    if flags["--cron"] is None and flags["--at"] is None:
        raise _usage(["--cron", "--at"], "give one (or -f FILE)")
    body = {
        "name": name,
        "cron": flags["--cron"],
        "run_at": flags["--at"],
        "timezone": flags["--tz"],
        "target": _target(flags),
        "overlap": flags["--overlap"],
        "on_missed": flags["--on-missed"],
        "missed_window": _seconds(flags["--missed-window"], "--missed-window"),
        "paused": flags["--paused"] or None,
    }
    return {key: value for key, value in body.items() if value is not None}


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
            metavar="KEY[=VALUE]",
            help="A secret job env var (repeatable; KEY alone: the value of $KEY).",
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
    if file is None:
        request = _body_from_flags(name, flags)
    else:
        given = [flag for flag, value in flags.items() if _given(value)]
        if given:
            raise _usage(["-f", "--file"], f"holds the whole schedule; drop {', '.join(given)}")
        request = {**_read_body(file), "name": name}
    with connect(project) as api:
        try:
            schedule = api.call("POST", "schedules", json=request)
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
