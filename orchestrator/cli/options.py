"""The values of client options that need parsing: ``KEY=VALUE`` pairs, JSON (inline or
``@FILE``), metadata, durations, times, idempotency keys and secret values.

Each parser raises ``typer.BadParameter`` naming the option, so bad input is a usage error
(exit 2) before any request; a secret's value is never in a message. Only the standard
library and typer here: ``--help`` imports this module.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer

from orchestrator.errors import InvalidRequest
from orchestrator.rules.idempotency import parse_key
from orchestrator.rules.units import parse_duration

# ``--secret KEY=env:NAME`` reads the environment variable NAME.
FROM_ENV = "env:"


def key_value_pairs(values: list[str] | None, option: str, secret: bool = False) -> dict[str, str]:
    """``KEY=VALUE`` options as a dict; a secret's text is never echoed in the error."""
    pairs: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            shown = "a value" if secret else repr(item)
            raise typer.BadParameter(f"{shown} is not KEY=VALUE", param_hint=f"'{option}'")
        pairs[key] = value
    return pairs


def _read_text(path: Path, option: str) -> str:
    """A UTF-8 file's text; a usage error naming the file (never its content) otherwise."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise typer.BadParameter(f"{path}: cannot read: {reason}", param_hint=option) from None
    except UnicodeDecodeError:
        raise typer.BadParameter(f"{path}: not UTF-8 text", param_hint=option) from None


def input_option(text: str) -> Any:
    """The ``--input`` JSON, given inline or as ``@path``."""
    return json_option(text, "--input")


def json_option(text: str, option: str) -> Any:
    """An option's JSON value, given inline or as ``@path``; a usage error naming the option
    (and the file) when it is not JSON."""
    where = ""
    if text.startswith("@"):
        path = Path(text[1:])
        where = f"{path}: "
        text = _read_text(path, f"'{option}'")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        reason = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        raise typer.BadParameter(
            f"{where}not valid JSON ({reason})", param_hint=f"'{option}'"
        ) from None


def retry_option(text: str | None, attempts: int | None) -> dict[str, Any] | None:
    """A job's own retry policy from ``--retry`` (a JSON object, inline or ``@path``) and
    ``--attempts`` (its ``attempts``, over the object's); None when neither is given."""
    retry: dict[str, Any] = {}
    if text is not None:
        given = json_option(text, "--retry")
        if not isinstance(given, dict):
            raise typer.BadParameter(
                'a JSON object, e.g. {"attempts": 3, "on": [...]}', param_hint="'--retry'"
            )
        retry = given
    if attempts is not None:
        retry["attempts"] = attempts
    return retry if text is not None or attempts is not None else None


def metadata(values: list[str] | None) -> dict[str, Any]:
    """``--metadata KEY=TEXT`` (a string) or ``KEY:=JSON`` (any JSON value), as HTTPie spells
    them."""
    pairs: dict[str, Any] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key or key == ":":
            raise typer.BadParameter(
                f"{item!r} is not KEY=TEXT or KEY:=JSON", param_hint="'--metadata'"
            )
        if not key.endswith(":"):
            pairs[key] = value
            continue
        try:
            pairs[key[:-1]] = json.loads(value)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(
                f"{key[:-1]}: not valid JSON ({exc.msg} at column {exc.colno})",
                param_hint="'--metadata'",
            ) from None
    return pairs


def idempotency_key(text: str | None) -> str | None:
    """An ``--idempotency-key`` as the server takes it (1 to 255 printable ASCII characters),
    checked before any request."""
    if text is None:
        return None
    try:
        return parse_key([text])
    except InvalidRequest as exc:
        reason = exc.message.removeprefix("Idempotency-Key: ")
        raise typer.BadParameter(reason, param_hint="'--idempotency-key'") from None


def duration(text: str | None, option: str) -> float | None:
    """Seconds from ``30s``, ``10m``, ``1h30m`` or a number of seconds."""
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=f"'{option}'") from None


def schedule_time(text: str | None) -> str | None:
    """``--schedule-at``: an RFC 3339 time (UTC when it has no offset, as the server reads it),
    or ``+DURATION`` from now; the time to send, in RFC 3339."""
    if text is None:
        return None
    if text.startswith("+"):
        seconds = duration(text[1:], "--schedule-at")
        assert seconds is not None
        moment = datetime.now(UTC) + timedelta(seconds=seconds)
        return moment.isoformat()
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither an RFC 3339 time (2030-01-01T09:00:00Z) nor +DURATION (+10m)",
            param_hint="'--schedule-at'",
        ) from None
    return text


def secret_values(values: list[str] | None, option: str = "--secret") -> dict[str, str]:
    """``--secret`` (or ``option``) values, read where neither the shell's history nor ``ps``
    shows them.

    ``KEY`` takes the value of the environment variable ``KEY``, else asks for it (hidden);
    ``KEY=env:NAME`` takes the variable ``NAME``; ``KEY=@FILE`` the file's text without its
    final newline (``@-``: standard input). A value written on the command line is refused.
    """
    pairs: dict[str, str] = {}
    for item in values or []:
        key, sep, source = item.partition("=")
        if not key.isidentifier():
            # Never echoed: a mistaken --secret may be the value itself.
            raise typer.BadParameter(
                "a value is not KEY, KEY=@FILE or KEY=env:NAME (KEY: letters, digits, _)",
                param_hint=f"'{option}'",
            )
        if not sep:
            pairs[key] = os.environ[key] if key in os.environ else _ask(key, option)
        elif source.startswith("@"):
            pairs[key] = _secret_file(key, source[1:], option)
        elif source.startswith(FROM_ENV):
            name = source.removeprefix(FROM_ENV)
            if name not in os.environ:
                raise typer.BadParameter(
                    f"{key}: the environment variable {name!r} is not set",
                    param_hint=f"'{option}'",
                )
            pairs[key] = os.environ[name]
        else:
            raise typer.BadParameter(
                f"{key}: a secret value is not taken from the command line (ps and the shell's "
                f"history would show it): give {key} alone (reads ${key}, else asks), "
                f"{key}=@FILE or {key}=env:NAME",
                param_hint=f"'{option}'",
            )
    return pairs


def _ask(key: str, option: str) -> str:
    """The secret ``key``'s value typed at a hidden prompt (on stderr: stdout may be JSON),
    when there is a terminal to ask on."""
    if not sys.stdin.isatty():
        # The KEY is not named: given alone by mistake, it may be the value itself.
        raise typer.BadParameter(
            "KEY alone reads the environment variable KEY, which is not set, and there is no "
            "terminal to ask on: set it, or give KEY=@FILE or KEY=env:NAME",
            param_hint=f"'{option}'",
        )
    try:
        value: str = typer.prompt(f"value of secret {key}", hide_input=True, err=True)
    except typer.Abort:  # Ctrl-D or Ctrl-C at the prompt
        raise typer.BadParameter(
            f"{key}: no value typed; set ${key}, or give {key}=@FILE or {key}=env:NAME",
            param_hint=f"'{option}'",
        ) from None
    return value


def _secret_file(key: str, name: str, option: str) -> str:
    text = sys.stdin.read() if name == "-" else _read_text(Path(name), f"'{option}'")
    if text.endswith("\n"):
        text = text[:-1].removesuffix("\r")
    if not text:
        raise typer.BadParameter(f"{key}: {name or '-'} is empty", param_hint=f"'{option}'")
    return text
