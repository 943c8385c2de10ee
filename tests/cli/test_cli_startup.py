"""The command itself, with no server: what ``--help`` imports, ``--version``, shell completion
(installed and run by a real bash) and bad input as one line with exit 2.

How fast it starts is measured by ``bench/cli_startup.py``, not here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import orchestrator

from ..conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
# What a client command imports when it runs, and ``--help`` must not. (Not pydantic alone:
# typer converts parameters with it.)
HEAVY = (
    "fastapi",
    "starlette",
    "sqlalchemy",
    "sqlmodel",
    "docker",
    "pydantic_settings",
    "httpx",
    "rich",
    "yaml",
    "cryptography",
    "orchestrator.api",
    "orchestrator.config",
    "orchestrator.process",
    "orchestrator.services",
    "orchestrator.storage",
    "orchestrator.runner",
)
# Imports the CLI, shows a help page, and prints every module then loaded, as JSON.
SHOW_HELP_THEN_LIST_MODULES = """
import contextlib, io, json, sys
from orchestrator.cli import app
with contextlib.redirect_stdout(io.StringIO()) as shown:
    code = app(sys.argv[1:], prog_name="orchestrator", standalone_mode=False)
assert code == 0 and "Usage: orchestrator" in shown.getvalue(), (code, shown.getvalue())
print(json.dumps(sorted(sys.modules)))
"""


def python(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` from the worktree (its ``orchestrator`` package), with extra env."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        timeout=60,
    )


def heavy_modules(loaded: list[str]) -> list[str]:
    return [m for m in loaded if any(m == h or m.startswith(f"{h}.") for h in HEAVY)]


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["submit", "--help"],
        ["jobs", "ls", "--help"],
        ["definitions", "--help"],
        ["db", "upgrade", "--help"],
        ["serve", "--help"],
    ],
    ids=" ".join,
)
def test_help_imports_no_heavy_module(args: list[str]) -> None:
    done = python("-c", SHOW_HELP_THEN_LIST_MODULES, *args)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert "orchestrator.cli" in loaded  # the check can fail: it sees what was imported
    assert heavy_modules(loaded) == []


def test_a_client_command_imports_its_client_not_the_server() -> None:
    # The same check in reverse: a client command does load httpx and the settings (so the
    # list above is not vacuous), and still none of the server's parts.
    code = (
        "import json, sys\n"
        "from orchestrator.cli import app\n"
        "app(['queues', 'ls'], prog_name='orchestrator', standalone_mode=False)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = python("-c", code, ORCH_URL=f"http://127.0.0.1:{free_port()}")
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert {"httpx", "orchestrator.config"} <= set(loaded)
    assert not [m for m in loaded if m.split(".")[0] in ("fastapi", "docker", "uvicorn")]
    assert "orchestrator.api" not in loaded and "orchestrator.storage.db" not in loaded


def test_version() -> None:
    done = python("-m", "orchestrator", "--version")
    assert (done.returncode, done.stdout) == (0, f"orchestrator {orchestrator.__version__}\n")


def test_bad_input_is_one_line_and_exit_2() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: a request would exit 1
    for args, reason in (
        (["submit", "hello", "--timeout", "3x"], "'--timeout': '3x' is not a duration"),
        (["submit", "hello", "-p", "who"], "'who' is not KEY=VALUE"),
        (["submit", "hello", "--metadata", "n:=[1"], "'--metadata': n: not valid JSON"),
        (["submit", "hello", "--schedule-at", "soon"], "'soon' is neither an RFC 3339 time"),
        (["submit", "hello", "--schedule-at", "+3x"], "'--schedule-at': '3x' is not"),
        (["submit", "hello", "--bogus"], "No such option: --bogus"),
        (["jobs", "ls", "--limit", "0"], "'--limit'"),
        (["jobs", "ls", "--status", "done"], "'--status'"),
        (["jobs", "lx"], "No such command 'lx'"),
        (["queues", "update", "batch"], "give at least one field to change"),
        (["definitions", "get", "hello:latest"], "the version must be a number"),
    ):
        done = python("-m", "orchestrator", *args, ORCH_URL=url)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stdout == ""
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
        assert reason in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


@pytest.fixture
def on_path(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH has an ``orchestrator`` that runs this worktree's CLI, and
    whose HOME is the test's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    command = bin_dir / "orchestrator"
    command.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m orchestrator "$@"\n')
    command.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(home),
        "PYTHONPATH": str(ROOT),
    }


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_installs_and_completes(on_path: dict[str, str]) -> None:
    # Typed in bash, as the README says: typer finds the shell among the command's parents
    # (the trailing ``true`` keeps bash from exec'ing the command in its place).
    installed = subprocess.run(
        ["bash", "--norc", "-c", "orchestrator --install-completion; true"],
        capture_output=True,
        text=True,
        env={**os.environ, **on_path},
        timeout=60,
    )
    assert installed.stdout.startswith("bash completion installed"), installed
    script = Path(on_path["HOME"]) / ".bash_completions" / "orchestrator.sh"
    assert f"source '{script}'" in (Path(on_path["HOME"]) / ".bashrc").read_text()

    def complete(*words: str) -> list[str]:
        # What bash offers after the words typed (the last one partial), through the
        # installed script and the command on PATH.
        line = (
            f"source '{script}'; COMP_WORDS=({' '.join(words)}); "
            f"COMP_CWORD={len(words) - 1}; _orchestrator_completion orchestrator; "
            'printf "%s\\n" "${COMPREPLY[@]}"'
        )
        done = subprocess.run(
            ["bash", "--norc", "-c", line],
            capture_output=True,
            text=True,
            env={**os.environ, **on_path},
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("orchestrator", "jo") == ["jobs"]
    assert complete("orchestrator", "jobs", "l") == ["ls", "logs"]
    assert complete("orchestrator", "submit", "hello", "--sched") == ["--schedule-at"]
    assert complete("orchestrator", "projects", "") == ["ls", "create"]
