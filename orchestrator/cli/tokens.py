"""``orchestrator tokens``: create, list and revoke API tokens (needs an admin token)."""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.cli.output import AsJson, connect, fields, print_json, table
from orchestrator.rules.roles import Role

app = typer.Typer(help="Create, list and revoke API tokens (admin only).", no_args_is_help=True)

TOKEN_COLUMNS = (
    ("id", "ID"),
    ("name", "NAME"),
    ("role", "ROLE"),
    ("project", "PROJECT"),
    ("prefix", "PREFIX"),
    ("create_time", "CREATED"),
    ("revoke_time", "REVOKED"),
)


@app.command("create")
def tokens_create(
    role: Annotated[Role, typer.Option(help="admin, write or read.")],
    project: Annotated[
        str | None, typer.Option(help="The project of a write or read token.")
    ] = None,
    name: Annotated[str, typer.Option(help="A name to recognise it by.")] = "cli",
    as_json: AsJson = False,
) -> None:
    """Create a token and print it: this is the only time it is shown."""
    body = {"name": name, "role": role.value, "project": project}
    with connect(None) as api:
        token = api.call("POST", "tokens", json=body)
    if as_json:
        print_json(token)
        return
    fields({k: token[k] for k in ("id", "name", "role", "project")})
    typer.echo(f"token: {token['token']}")
    typer.echo("Keep it now: it is not shown again.", err=True)


@app.command("ls")
def tokens_ls(as_json: AsJson = False) -> None:
    """Every token (never its value)."""
    with connect(None) as api:
        page = api.call("GET", "tokens")
    if as_json:
        print_json(page)
    else:
        table(page["items"], TOKEN_COLUMNS)


@app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id.")], as_json: AsJson = False
) -> None:
    """Revoke a token: it stops working at once."""
    with connect(None) as api:
        token = api.call("DELETE", "tokens", token_id)
    if as_json:
        print_json(token)
    else:
        typer.echo(f"revoked token {token['id']} ({token['name']})")
