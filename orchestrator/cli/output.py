"""What every client command shares: options, the connection to the server, and output.

``--help`` imports this module: the settings, the HTTP client and pydantic are imported by
``connect`` and the functions that use them, not here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from pydantic import ValidationError

    from orchestrator.cli.client import Client

Project = Annotated[str, typer.Option("--project", help="The project to act in.")]
AsJson = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout, for scripts.")
]


JOB_COLUMNS = (
    ("id", "ID"),
    ("name", "NAME"),
    ("definition", "DEFINITION"),
    ("queue", "QUEUE"),
    ("status", "STATUS"),
    ("attempt", "ATTEMPT"),
    ("exit_code", "EXIT"),
    ("runner", "RUNNER"),
    ("create_time", "CREATED"),
    ("children", "CHILDREN"),
)
QUEUE_COLUMNS = (
    ("name", "NAME"),
    ("priority", "PRIORITY"),
    ("max_concurrency", "MAX_CONCURRENCY"),
    ("paused", "PAUSED"),
    ("current_queue_length", "WAITING"),
    ("running", "RUNNING"),
)
EVENT_COLUMNS = (
    ("time", "TIME"),
    ("type", "TYPE"),
    ("status", "STATUS"),
    ("attempt", "ATTEMPT"),
    ("detail", "DETAIL"),
)
ATTEMPT_COLUMNS = (
    ("attempt", "ATTEMPT"),
    ("outcome", "OUTCOME"),
    ("exit_code", "EXIT"),
    ("reason", "REASON"),
    ("runner", "RUNNER"),
    ("start_time", "STARTED"),
    ("end_time", "ENDED"),
    ("error", "ERROR"),
)
EXIT_CANCELLED = 130  # what a shell reports for a process ended by Ctrl-C


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def setting_errors(exc: ValidationError) -> str:
    """``ORCH_NAME: reason`` for each bad setting (never its value: it may be a secret)."""
    from orchestrator.config import variable_name

    return "; ".join(
        f"{variable_name(e['loc'])}: {str(e['msg']).removeprefix('Value error, ')}"
        for e in exc.errors(include_input=False)
        if e["loc"]
    )


@contextmanager
def connect(project: str | None) -> Iterator[Client]:
    """A client of the server at ``ORCH_URL`` with the token of ``ORCH_TOKEN`` (else the data
    dir's ``admin-token``); any client error ends the command with exit 1."""
    from pydantic import ValidationError

    from orchestrator.cli.client import ApiError, Client, ClientError
    from orchestrator.config import Settings

    try:
        settings = Settings()
        url, token = settings.url, settings.api_token()
    except ValidationError as exc:
        fail(f"invalid setting in the environment: {setting_errors(exc)}")
    try:
        with Client(url, project, token) as client:
            yield client
    except ApiError as exc:
        hint = " (set ORCH_TOKEN, or ORCH_DATA_DIR to the server's data dir)"
        fail(exc.message + (hint if exc.status == 401 else ""))
    except ClientError as exc:
        fail(exc.message)


def children_cell(counts: dict[str, Any]) -> str:
    """An array job's children: ``3: 2 succeeded, 1 running`` (size, then each status held)."""
    size = counts.get("size")
    parts = [f"{n} {status}" for status, n in counts.items() if status != "size" and n]
    return f"{size}: " + ", ".join(parts) if parts else f"{size}"


def cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "children" and isinstance(value, dict):
        return children_cell(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if key.endswith("time") and isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def table(rows: list[dict[str, Any]], columns: tuple[tuple[str, str], ...]) -> None:
    """Plain aligned columns with a header line."""
    lines = [[label for _, label in columns]]
    lines += [[cell(key, row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    for line in lines:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


def fields(item: dict[str, Any]) -> None:
    """``key: value`` lines, values aligned."""
    width = max(len(key) for key in item) + 1
    for key, value in item.items():
        typer.echo(f"{key + ':':<{width}} {cell(key, value)}")


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def configure_logging() -> None:
    """INFO lines with time and source for the long-running commands (serve, runner); a URL's
    userinfo masked in every line, whichever library logs it."""
    from orchestrator.cli import log_masking

    log_masking.install()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Alembic announces its plugins at INFO when it is imported; only its warnings matter here.
    logging.getLogger("alembic").setLevel(logging.WARNING)
