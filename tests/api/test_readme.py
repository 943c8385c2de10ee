"""The README's examples work as written, and it says truly which endpoints need no token.

Every fenced block is checked by its language: a YAML block is loaded the way the product loads
it (a definition by the definitions loader, a policy file as the server reads
``ORCH_POLICY_FILE``, a Compose file is ``compose.yaml`` word for word, Prometheus alert rules
name only metrics a live server declares), a JSON block parses,
every body a ``curl`` example in a shell block sends parses (a file it names exists and loads),
and a Python block compiles. A block this file cannot tell the kind of fails it: a new example
is checked, never skipped.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
import typer.main
import yaml
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Route
from typer._click.core import Command
from typer._click.exceptions import UsageError
from typer.core import TyperGroup

from orchestrator.api import create_app
from orchestrator.cli import app as cli_app
from orchestrator.config import Settings
from orchestrator.rules import definition_spec
from orchestrator.rules.policy import POLICY_FIELDS

from ..conftest import free_port, start_server

ROOT = Path(__file__).resolve().parents[2]
# A metric of ours in a PromQL expression.
METRIC_NAME = re.compile(r"\borchestrator_[a-z_]+")
README = ROOT / "README.md"
# Options of curl whose argument is the request body, and what stands in for `$(...)` in one
# (the README's one-shot schedule puts `$(date ...)` in its body).
CURL_DATA_OPTIONS = frozenset({"-d", "--data", "--data-raw", "--data-binary"})
COMMAND_SUBSTITUTION = re.compile(r"\$\([^()]*\)")
SUBSTITUTED = "2030-01-01T00:00:00Z"
# The README's statements of the endpoints that need no token, and the paths they name.
PUBLIC_STATEMENT = re.compile(r"Every endpoint but (.+?) needs a\s+token", re.DOTALL)
STATED_PATH = re.compile(r"`(?:GET )?(/[^`\s]*)`")
PATH_PARAMETER = re.compile(r"\{[^}]+\}")


@dataclass(frozen=True)
class Block:
    """A fenced block of the README: its language, the line of its opening fence, its text."""

    language: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.language or 'no language'})"


def readme_blocks() -> list[Block]:
    """Every fenced block of the README, in order."""
    lines = README.read_text().splitlines()
    blocks, opening = [], None
    for number, line in enumerate(lines, start=1):
        if not line.lstrip().startswith("```"):
            continue
        if opening is None:
            opening = (number, line.lstrip().removeprefix("```").strip())
        else:
            start, language = opening
            blocks.append(Block(language, start, "\n".join(lines[start : number - 1])))
            opening = None
    assert opening is None, f"README.md:{opening[0]}: a fence that is never closed"
    return blocks


BLOCKS = readme_blocks()


def yaml_kind(block: Block) -> str:
    """``definition``, ``policy`` or ``compose``, by the keys of the block's mapping; fails on
    anything else."""
    data = yaml.safe_load(block.text)
    if isinstance(data, dict) and "services" in data:
        return "compose"
    if isinstance(data, dict) and data and set(map(str, data)) <= set(POLICY_FIELDS):
        return "policy"
    if isinstance(data, dict) and "image" in data:
        return "definition"
    if isinstance(data, dict) and "scrape_configs" in data:
        return "scrape config"
    if isinstance(data, dict) and "groups" in data:
        return "alert rules"
    pytest.fail(f"{block}: neither a job definition nor a policy file; teach this test its kind")


def check_yaml(block: Block, tmp_path: Path) -> None:
    """Load a definition with the definitions loader, a policy file as the server does; a
    Compose file is the repository's ``compose.yaml``, word for word."""
    kind = yaml_kind(block)
    if kind == "definition":
        assert len(definition_spec.load_yaml(block.text, str(block))) == 1
        return
    if kind == "compose":
        assert block.text + "\n" == (ROOT / "compose.yaml").read_text(), (
            f"{block}: not compose.yaml"
        )
        return
    if kind == "scrape config":
        check_scrape_config(yaml.safe_load(block.text), block)
        return
    if kind == "alert rules":
        check_alert_rules(yaml.safe_load(block.text), block, tmp_path)
        return
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(block.text)
    Settings(data_dir=tmp_path, policy_file=policy_file).container_policy()


def check_scrape_config(config: dict[str, Any], block: Block) -> None:
    """A Prometheus scrape configuration scrapes /metrics with a token kept in a file."""
    for job in config["scrape_configs"]:
        assert job["metrics_path"] == "/metrics", f"{block}: scrapes {job['metrics_path']}"
        assert set(job["authorization"]) == {"credentials_file"}, f"{block}: a token in the text"


def check_alert_rules(rules: dict[str, Any], block: Block, tmp_path: Path) -> None:
    """Every metric an alert's expression names is one a live server's /metrics declares."""
    named = {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in METRIC_NAME.findall(rule["expr"])
    }
    assert named, f"{block}: no metric named"
    unknown = named - served_metric_names(tmp_path)
    assert not unknown, f"{block}: /metrics has no {sorted(unknown)}"


def served_metric_names(tmp_path: Path) -> set[str]:
    """The sample names a fresh server's /metrics declares (counters with ``_total``,
    histograms with their ``_count``, ``_sum`` and ``_bucket``)."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'orchestrator.db'}",
        port=free_port(),
        runner_enabled=False,
        docker_host=None,
        metrics_open=True,
    )
    server = start_server(settings)
    try:
        text = httpx.get(f"{server.url}/metrics", timeout=30).text
    finally:
        server.stop()
    suffixes = {
        "counter": ["_total"],
        "histogram": ["_count", "_sum", "_bucket"],
        "info": ["_info"],
    }
    return {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in suffixes.get(family.type, [""])
    }


def check_json(block: Block, tmp_path: Path) -> None:
    """A JSON block parses."""
    json.loads(block.text)


def curl_bodies(text: str) -> list[str]:
    """The body argument of every ``curl`` in a shell block, as the shell would pass it."""
    joined = COMMAND_SUBSTITUTION.sub(SUBSTITUTED, text.replace("\\\n", " "))
    words = shlex.split(joined, comments=True)
    return [words[i + 1] for i, word in enumerate(words[:-1]) if word in CURL_DATA_OPTIONS]


def check_shell(block: Block, tmp_path: Path) -> None:
    """Every body a ``curl`` sends parses: a JSON object, or a file of the repository that the
    definitions loader loads (the only files the README sends)."""
    for body in curl_bodies(block.text):
        if body.startswith("@"):
            path = ROOT / body.removeprefix("@")
            assert path.is_file(), f"{block}: curl sends {body}, which does not exist"
            definition_spec.load_yaml(path.read_text(), str(path))
        else:
            assert isinstance(json.loads(body), dict), f"{block}: not a JSON object: {body}"


def check_python(block: Block, tmp_path: Path) -> None:
    """A Python block compiles."""
    compile(block.text, str(block), "exec")


CHECKS: dict[str, Callable[[Block, Path], None]] = {
    "yaml": check_yaml,
    "json": check_json,
    "sh": check_shell,
    "python": check_python,
}


@pytest.mark.parametrize("block", BLOCKS, ids=str)
def test_readme_block_loads_as_the_product_loads_it(block: Block, tmp_path: Path) -> None:
    check = CHECKS.get(block.language)
    if check is None:
        pytest.fail(f"{block}: a block of a kind this test cannot check; teach it the kind")
    check(block, tmp_path)


def test_the_readme_shows_a_definition_a_policy_file_and_curl_bodies() -> None:
    # The blocks above were found: a fence this file misreads would otherwise pass unchecked.
    kinds = {yaml_kind(block) for block in BLOCKS if block.language == "yaml"}
    assert kinds == {"definition", "policy", "compose", "scrape config", "alert rules"}
    assert any(curl_bodies(block.text) for block in BLOCKS if block.language == "sh")


def stated_public_paths() -> set[str]:
    """The paths the README says answer without a token (every statement must agree)."""
    statements = PUBLIC_STATEMENT.findall(README.read_text())
    assert statements, "the README no longer says which endpoints need no token"
    stated = {frozenset(STATED_PATH.findall(statement)) for statement in statements}
    assert len(stated) == 1, f"the README's statements disagree: {sorted(map(sorted, stated))}"
    return set(stated.pop())


def test_only_the_endpoints_the_readme_names_answer_without_a_token(tmp_path: Path) -> None:
    # Every operation of the API's document, and the routes the app serves besides them (the
    # document itself and its pages), asked without a token.
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'orchestrator.db'}",
        port=free_port(),
        runner_enabled=False,
        docker_host=None,
    )
    server = start_server(settings)
    public: set[str] = set()
    unexpected: list[str] = []
    try:
        with httpx.Client(base_url=server.url, timeout=30) as anonymous:
            document = anonymous.get("/openapi.json").json()
            endpoints = [
                (method.upper(), path)
                for path, item in document["paths"].items()
                for method in item
            ]
            # The app's own routes; the API's are in routers, and in the document.
            for route in create_app(settings).routes:
                if isinstance(route, Route):
                    endpoints += [
                        (m, route.path) for m in sorted(route.methods or ()) if m != "HEAD"
                    ]
            for method, template in endpoints:
                # Any value: a token is asked for before a parameter is looked at.
                path = PATH_PARAMETER.sub("default", template)
                response = anonymous.request(method, path)
                if template == "/" or template.startswith(CONSOLE):
                    unexpected += console_refusal(method, template, response)
                    continue
                if response.status_code == 200:
                    public.add(template)
                elif response.status_code != 401:
                    unexpected.append(f"{method} {path} -> {response.status_code}")
    finally:
        server.stop()
    assert len(endpoints) > 50, endpoints
    assert not unexpected, "\n".join(unexpected)
    assert public == stated_public_paths()


# The web console's pages: signed out, each leads to the sign-in page (the only page served).
CONSOLE = "/ui/"
SIGN_IN = "/ui/signin"


def console_refusal(method: str, template: str, response: httpx.Response) -> list[str]:
    """What is wrong with the console's answer to a request without a session: a GET must be
    the sign-in page or a redirect towards it, a POST refused (403) or sent to sign in."""
    location = response.headers.get("location", "")
    if method == "GET" and template == SIGN_IN and response.status_code == 200:
        return []
    if response.status_code in (303, 307) and location.startswith(("/ui/", SIGN_IN)):
        return []
    if method == "POST" and response.status_code == 403:
        return []
    return [f"{method} {template} without a session -> {response.status_code} {location}"]


# Where a command line ends in a shell block: a comment, a pipe, a list, a redirection.
SHELL_END = {"#", "|", "||", "&&", ";", "&", ">", ">>", "2>", "<"}


def orchestrator_commands() -> list[tuple[Block, list[str]]]:
    """Every ``orchestrator ...`` command of the README's shell blocks, as its words (lines
    joined at a trailing backslash; what a shell would not pass to it left off)."""
    found = []
    for block in BLOCKS:
        if block.language not in ("sh", "bash", "console"):
            continue
        for line in block.text.replace("\\\n", " ").splitlines():
            command = line.strip().removeprefix("$ ")
            if not command.startswith("orchestrator "):
                continue
            # A command substitution is one word to the command: a time stands in for it.
            words = shlex.split(COMMAND_SUBSTITUTION.sub(SUBSTITUTED, command), comments=True)
            end = next((i for i, word in enumerate(words) if word in SHELL_END), len(words))
            found.append((block, words[1:end]))
    return found


COMMANDS = orchestrator_commands()


def test_the_readme_shows_the_cli() -> None:
    assert len(COMMANDS) > 40, len(COMMANDS)


@pytest.mark.parametrize(
    ("block", "words"),
    COMMANDS,
    ids=[f"{block.line}: {' '.join(words)[:60]}" for block, words in COMMANDS],
)
def test_every_readme_command_line_parses(block: Block, words: list[str]) -> None:
    """Each command, subcommand and option the README writes exists, with the values it takes:
    parsed as the CLI parses it, without running it."""
    command: Command = typer.main.get_command(cli_app)
    context = None
    args = words
    try:
        while True:
            context = command.make_context(
                command.name or "orchestrator", list(args), parent=context
            )
            if not isinstance(command, TyperGroup):
                break
            rest = [*context._protected_args, *context.args]
            name, found, args = command.resolve_command(context, rest)
            assert found is not None, f"{block}: no command {name!r}"
            command = found
    except typer.Exit:
        return  # an eager option (--version) answered
    except UsageError as exc:
        pytest.fail(f"{block}: orchestrator {' '.join(words)}: {exc.format_message()}")
