"""``orchestrator definitions``: register definitions from YAML files; list them, read one
and its versions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator.cli.output import AsJson, Project, connect, fail, fields, print_json, table
from orchestrator.errors import DefinitionInvalid

if TYPE_CHECKING:
    from orchestrator.cli.client import ApiError
    from orchestrator.rules.definition_spec import DefinitionSpec

app = typer.Typer(help="Register, list and read job definitions.", no_args_is_help=True)
# Where the server's error about one definition of a batch names it: by its index.
BATCH_INDEX = re.compile(r"^definitions\[(\d+)\]")


def _definition_files(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        fail(f"{path}: no *.yaml or *.yml files in this directory")
    return files


def _load_specs(paths: list[Path]) -> list[tuple[Path, DefinitionSpec]]:
    """Every spec in the files (with its file), validated; on any error print them all and
    exit 1."""
    # The definition model (pydantic, YAML): imported by the commands that load files.
    from orchestrator.rules import definition_spec

    specs: list[tuple[Path, DefinitionSpec]] = []
    errors: list[str] = []
    for file in (f for p in paths for f in _definition_files(p)):
        try:
            text = file.read_text(encoding="utf-8")
            specs += [(file, spec) for spec in definition_spec.load_yaml(text, source=str(file))]
        except DefinitionInvalid as exc:
            errors.append(exc.message)
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(f"{file}: cannot read: {exc}")
    for message in errors:
        typer.echo(f"error: {message}", err=True)
    if errors:
        raise typer.Exit(1)
    return specs


def _naming_the_file(exc: ApiError, specs: list[tuple[Path, DefinitionSpec]]) -> ApiError:
    """The server's error about one definition of the batch (``definitions[2]: ...``), naming
    its file instead of its index."""
    from orchestrator.cli.client import ApiError

    match = BATCH_INDEX.match(exc.field or "")
    if match is None or int(match[1]) >= len(specs):
        return exc
    file = specs[int(match[1])][0]
    message = exc.message.removeprefix(f"{match[0]}: ")
    field = (exc.field or "")[match.end() :].lstrip(".") or None
    return ApiError(exc.status, exc.code, f"{file}: {message}", field)


@app.command("apply")
def definitions_apply(
    paths: Annotated[
        list[Path], typer.Argument(exists=True, help="YAML files, or directories of them.")
    ],
    project: Project = "default",
    as_json: AsJson = False,
) -> None:
    """Register definitions from YAML: a changed spec makes a new version, an equal one is kept.

    Every file is validated first; if any has an error, or the server refuses any definition,
    nothing is registered.
    """
    from orchestrator.cli.client import ApiError

    specs = _load_specs(paths)
    bodies = [spec.model_dump(mode="json", exclude_unset=True) for _, spec in specs]
    with connect(project) as api:
        try:
            # One request, one transaction: a definition the server refuses (its container
            # policy, a limit) leaves none registered.
            results = api.call("POST", "definitions:batch", json={"definitions": bodies})["items"]
        except ApiError as exc:
            raise _naming_the_file(exc, specs) from None
    if as_json:
        print_json(results)
        return
    for definition in results:
        state = "new" if definition["created"] else "unchanged"
        typer.echo(f"{definition['name']}: version {definition['version']} ({state})")


DEFINITION_COLUMNS = (
    ("name", "NAME"),
    ("version", "VERSION"),
    ("image", "IMAGE"),
    ("description", "DESCRIPTION"),
)
VERSION_COLUMNS = (
    ("version", "VERSION"),
    ("image", "IMAGE"),
    ("create_time", "CREATED"),
    ("description", "DESCRIPTION"),
)


def _rows(definitions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            **d,
            "image": d["spec"].get("image"),
            "description": d["spec"].get("description"),
        }
        for d in definitions
    ]


@app.command("ls")
def definitions_ls(project: Project = "default", as_json: AsJson = False) -> None:
    """The latest version of every definition."""
    with connect(project) as api:
        page = api.call("GET", "definitions")
    if as_json:
        print_json(page)
        return
    table(_rows(page["items"]), DEFINITION_COLUMNS)


@app.command("get")
def definitions_get(
    reference: Annotated[
        str, typer.Argument(metavar="NAME[:VERSION]", help="A definition (no version: the latest).")
    ],
    project: Project = "default",
    as_json: AsJson = False,
) -> None:
    """One version of a definition, with its spec as YAML."""
    name, sep, version = reference.partition(":")
    if sep and not version.isdigit():
        raise typer.BadParameter(
            f"{reference!r}: the version must be a number", param_hint="'NAME[:VERSION]'"
        )
    parts = ("definitions", name, "versions", version) if sep else ("definitions", name)
    with connect(project) as api:
        definition = api.call("GET", *parts)
    if as_json:
        print_json(definition)
        return
    import yaml  # only here: ``--help`` does not need it

    fields({key: value for key, value in definition.items() if key != "spec"})
    typer.echo("spec:")
    text = yaml.safe_dump(definition["spec"], sort_keys=False, allow_unicode=True)
    typer.echo("".join(f"  {line}" for line in text.splitlines(keepends=True)), nl=False)


@app.command("versions")
def definitions_versions(
    name: Annotated[str, typer.Argument(help="The definition's name.")],
    project: Project = "default",
    as_json: AsJson = False,
) -> None:
    """Every version of a definition, oldest first."""
    with connect(project) as api:
        page = api.call("GET", "definitions", name, "versions")
    if as_json:
        print_json(page)
        return
    table(_rows(page["items"]), VERSION_COLUMNS)
