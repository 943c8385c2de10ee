"""``orchestrator secrets``: rotate the key that encrypts secret values at rest.

The command only: its work (``secret_key``, on the database) is imported when it runs.
"""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.cli.output import AsJson

app = typer.Typer(help="Rotate the key that encrypts secret values.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Rotate the key that encrypts secret values at rest."""


@app.command("rotate-key")
def rotate_key(
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Drop the retired keys, once every stored ciphertext decrypts with the "
            "primary key (refused otherwise).",
        ),
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Re-encrypt every secret value under a new key (or the first key of ORCH_SECRET_KEY)."""
    from orchestrator.cli import secret_key

    secret_key.rotate(prune, as_json)
