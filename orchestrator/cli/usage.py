"""How the ``orchestrator`` command ends on bad input: one line on stderr and exit 2, never a
usage dump, a framed panel or a traceback."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import typer

# Typer (0.28 on) vendors click; this one of its errors is not re-exported.
from typer._click.exceptions import NoArgsIsHelpError
from typer.core import TyperGroup

PROG = "orchestrator"


class Commands(TyperGroup):
    """The root group: its ``main`` turns click's usage errors into one ``error:`` line."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command line; in standalone mode (a real run, or a test runner's) exit with
        the command's status."""
        prog_name = prog_name or PROG
        if not standalone_mode:
            return super().main(
                args, prog_name, complete_var, standalone_mode, windows_expand_args, **extra
            )
        try:
            # Not standalone: click raises its errors here instead of printing them its way.
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except NoArgsIsHelpError as exc:
            exc.show()  # ``orchestrator jobs`` alone: the group's help
            sys.exit(exc.exit_code)
        except typer.TyperException as exc:  # click's errors (usage: exit 2)
            _fail(exc)
        except typer.Abort:
            print("error: aborted", file=sys.stderr)
            sys.exit(1)
        # Click returns the code of an explicit exit, else the command's return value (None).
        sys.exit(code if isinstance(code, int) else 0)


def _fail(exc: typer.TyperException) -> NoReturn:
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    print(f"error: {message}{hint}", file=sys.stderr)
    sys.exit(exc.exit_code)
