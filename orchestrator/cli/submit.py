"""``orchestrator submit``: submit a job from flags; with ``--follow``, stream its logs and exit
with its exit code."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from orchestrator.cli.depends_on import depends_on_option
from orchestrator.cli.options import (
    duration,
    idempotency_key,
    input_option,
    key_value_pairs,
    metadata,
    retry_option,
    schedule_time,
    secret_values,
)
from orchestrator.cli.output import EXIT_CANCELLED, AsJson, Project, connect, fail, print_json

if TYPE_CHECKING:
    from orchestrator.cli.client import Client


def _exit_code(job: dict[str, Any]) -> int:
    """The exit status of a finished job: its container's, 130 if cancelled, 1 if unknown."""
    if job["status"] == "cancelled":
        return EXIT_CANCELLED
    if job.get("exit_code") is not None:
        return int(job["exit_code"])
    return 0 if job["status"] == "succeeded" else 1


def _follow(api: Client, job_id: str, as_json: bool) -> NoReturn:
    """Stream the job's logs until it ends, then exit with its exit status."""
    try:
        for chunk in api.stream_text("jobs", job_id, "logs", params={"follow": "true"}):
            typer.echo(chunk, nl=False, err=as_json)
    except KeyboardInterrupt:
        fail(f"stopped following; job {job_id} keeps running", EXIT_CANCELLED)
    job = api.call("GET", "jobs", job_id)
    if as_json:
        print_json(job)
    if job.get("error"):
        typer.echo(f"error: {job['error']}", err=True)
    raise typer.Exit(_exit_code(job))


def _print_dry_run(plan: dict[str, Any], as_json: bool) -> None:
    """What a dry run answered: the JSON as it is, or its container for people."""
    if as_json:
        print_json(plan)
        return
    container = plan.get("container") or {}
    typer.echo(f"would wait in queue {plan.get('queue')}; nothing was stored")
    for key, value in container.items():
        typer.echo(f"{key}: {value}")


def submit(
    definition: Annotated[str, typer.Argument(help="A definition: name (latest) or name:version.")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", metavar="KEY=VALUE", help="A parameter (repeatable)."),
    ] = None,
    queue: Annotated[str | None, typer.Option(help="The queue (default: default).")] = None,
    input_: Annotated[
        str | None,
        typer.Option(
            "--input", metavar="JSON|@FILE", help="The job's input JSON, or a file of it."
        ),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", "-e", metavar="KEY=VALUE", help="An env var (repeatable)."),
    ] = None,
    secret: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY[=@FILE|=env:NAME]",
            help="A secret env var, never shown (repeatable). KEY alone: the value of $KEY, "
            "else typed at a hidden prompt; KEY=@FILE: the file's text (@-: stdin); "
            "KEY=env:NAME: $NAME. Never a value on the command line.",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="A name for the job.")] = None,
    metadata_: Annotated[
        list[str] | None,
        typer.Option(
            "--metadata",
            "-m",
            metavar="KEY=TEXT|KEY:=JSON",
            help="A metadata entry, kept with the job (repeatable).",
        ),
    ] = None,
    webhook: Annotated[
        str | None, typer.Option(metavar="URL", help="Where the job's JSON is sent when it ends.")
    ] = None,
    schedule_at: Annotated[
        str | None,
        typer.Option(
            metavar="TIME|+DURATION",
            help="Queue it at this RFC 3339 time (UTC without an offset), or this long from now.",
        ),
    ] = None,
    priority: Annotated[int | None, typer.Option(help="Higher runs first in its queue.")] = None,
    array: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="An array job: N children indexed 0..N-1, each with $ORCH_ARRAY_INDEX "
            "(and Param::array_index in its command); --follow follows the parent's end.",
        ),
    ] = None,
    timeout: Annotated[
        str | None, typer.Option(metavar="DURATION", help="Kill it after this long, e.g. 30s.")
    ] = None,
    retry: Annotated[
        str | None,
        typer.Option(
            metavar="JSON|@FILE",
            help="This job's own retry policy over its definition's, e.g. '{\"attempts\": 3, "
            '"on": [{"exit_codes": [2], "action": "fail"}]}\': the fields given replace the '
            "definition's, the others are kept.",
        ),
    ] = None,
    attempts: Annotated[
        int | None,
        typer.Option(metavar="N", help="At most N attempts (retry.attempts), 1 to 100."),
    ] = None,
    depends_on: Annotated[
        list[str] | None,
        typer.Option(
            "--depends-on",
            metavar="ID[:N_TO_N][:finished]",
            help="Wait, pending, until this job ends (repeatable, at most 20): it must succeed "
            "(else this job fails with dependency_failed), or with :finished any end will do. "
            "With --array: ID:N_TO_N makes child i wait for child i of array ID, and "
            "SEQUENTIAL makes each child wait for the one before it.",
        ),
    ] = None,
    key_text: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            metavar="KEY",
            help="Send it with this Idempotency-Key (e.g. a UUID): the same command run again "
            "with the same key gets the first job back instead of making another, and a lost "
            "answer is sent again by itself (up to 3 times).",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Check everything a submit checks and print the container that would run; "
            "store nothing.",
        ),
    ] = False,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Stream its logs until it ends and exit with its exit code (130: cancelled).",
        ),
    ] = False,
    project: Project = "default",
    as_json: AsJson = False,
) -> None:
    """Submit a job; print its id and status (with --follow, to stderr; stdout has the logs).

    With --follow --json the logs go to stderr and the finished job's JSON to stdout.
    """
    given: dict[str, Any] = {
        "definition": definition,
        "queue": queue,
        "parameters": key_value_pairs(param, "--param") or None,
        "env": key_value_pairs(env, "--env") or None,
        "name": name,
        "metadata": metadata(metadata_) or None,
        "webhook": webhook,
        "schedule_at": schedule_time(schedule_at),
        "priority": priority,
        "timeout": duration(timeout, "--timeout"),
        "array": {"size": array} if array is not None else None,
        "retry": retry_option(retry, attempts),
    }
    body = {field: value for field, value in given.items() if value is not None}
    key = idempotency_key(key_text)
    if input_ is not None:
        body["input"] = input_option(input_)  # may be a JSON null
    if depends_on:
        body["depends_on"] = depends_on_option(depends_on)
    # Last: every other flag is checked before a prompt asks for a value.
    if secret:
        body["secret_env"] = secret_values(secret)
    if dry_run and follow:
        fail("--dry-run runs nothing to follow: use one or the other", 2)
    with connect(project) as api:
        if dry_run:
            _print_dry_run(api.call("POST", "jobs", json=body, params={"dry_run": "true"}), as_json)
            return
        if key is None:
            job = api.call("POST", "jobs", json=body)
        else:
            job = api.create_once("jobs", json=body, key=key)
        if as_json and not follow:
            print_json(job)
        elif not as_json:
            typer.echo(f"{job['id']} {job['status']}", err=follow)
        if follow:
            _follow(api, job["id"], as_json)
