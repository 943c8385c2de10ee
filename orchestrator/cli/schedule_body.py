"""The request body of ``orchestrator schedules create``: built from its flags, or read from a
YAML or JSON file holding the whole schedule.

Flag errors are usage errors (exit 2) naming the flags at fault; a secret value is never echoed.
"""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

import typer

from orchestrator.cli.options import input_option, key_value_pairs, secret_values
from orchestrator.rules.units import parse_duration

# The flags of each kind of target (--timeout belongs to both: a job's or a request's).
JOB_FLAGS = ("--definition", "--queue", "--param", "--env", "--secret-env", "--input")
HTTP_FLAGS = ("--url", "--method", "--header", "--secret-header", "--body", "--retry-delays")


def request_body(name: str, file: str | None, flags: dict[str, Any]) -> dict[str, Any]:
    """The schedule ``name`` from ``flags`` (keyed by option), or from ``file``, which holds the
    whole schedule: no flag may be given with it."""
    if file is None:
        return _body_from_flags(name, flags)
    given = [flag for flag, value in flags.items() if _given(value)]
    if given:
        raise _usage(["-f", "--file"], f"holds the whole schedule; drop {', '.join(given)}")
    return {**_read_body(file), "name": name}


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
    import yaml  # only here: ``--help`` does not need it

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
        "secret_env": secret_values(flags["--secret-env"], "--secret-env") or None,
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
