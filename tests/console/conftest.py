"""The console's browser tests: one live server (real runner, real containers) and one headless
Chromium (Debian's, driven by Playwright) for the module; a fresh browser context (its own
cookies) per test, whose console errors and page errors fail the test.

The server runs on SQLite only: the console has no database-specific code (it calls the
services the API's routes call, which the API tests run on both databases); its one new query,
the log tail, is checked on both in ``test_console_http.py``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from orchestrator.config import Settings
from tests.conftest import (
    LiveServer,
    free_port,
    installation_of,
    remove_installation,
    start_server,
    unavailable,
)

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
WIDTH, HEIGHT = 1280, 800


@pytest.fixture(scope="module")
def console_server(
    tmp_path_factory: pytest.TempPathFactory,
    busybox_image: str,
    docker_client: docker.DockerClient,
) -> Iterator[LiveServer]:
    """A live server with a runner, on SQLite, for the module's tests."""
    data = tmp_path_factory.mktemp("console")
    settings = Settings(
        data_dir=data / "data",
        database_url=f"sqlite:///{data / 'orchestrator.db'}",
        port=free_port(),
        runner_name=f"test-{uuid.uuid4().hex[:10]}",
        runner_capacity=4,
        poll_interval=2.0,
        engine_retry_interval=0.5,
        stop_grace_period=2.0,
        log_flush_interval=0.1,
        docker_host=None,
        # The queues page's chart has points a second after jobs end, not a minute.
        queue_sample_interval=1.0,
    )
    server = start_server(settings)
    yield server
    server.stop()
    remove_installation(docker_client, installation_of(settings))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium from the system's package (Playwright's own download is not used)."""
    if shutil.which(CHROMIUM) is None:
        unavailable(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[[], Any]]:
    """Make pages, each in a context of its own (no shared cookies); a console error or an
    uncaught script error on any of them fails the test."""
    errors: list[str] = []
    contexts: list[Any] = []

    def make() -> Any:
        context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.on("console", lambda message: _keep_error(errors, page, message))
        page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}"))
        return page

    yield make
    for context in contexts:
        context.close()
    assert errors == []


def _keep_error(errors: list[str], page: Any, message: Any) -> None:
    # The browser reports a page's own 4xx status as a console error; a test that opens such a
    # page checks its status itself. Any other error (a script's, a missing file) is kept.
    if message.type != "error":
        return
    own_status = message.text.startswith("Failed to load resource") and (
        message.location.get("url") == page.url
    )
    if not own_status:
        errors.append(f"{page.url}: {message.text}")


def screenshot(page: Any, name: str) -> None:
    """Take the page as ``name``.png (1280 px wide, the whole page): kept in docs/console when
    ``ORCH_TEST_SCREENSHOTS=1`` (how the README's pictures are made), else in a temporary
    folder, so a test run leaves the checkout as it was."""
    folder = SCREENSHOTS if os.environ.get("ORCH_TEST_SCREENSHOTS") == "1" else _scratch()
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def _scratch() -> Path:
    return Path(tempfile.gettempdir()) / "orchestrator-console-screenshots"
