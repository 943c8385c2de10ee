"""``--idempotency-key`` on ``submit`` and ``schedules create``, against a live server (SQLite
and PostgreSQL): the command run again gets the first job or schedule back, another request with
the key is refused naming the header, and an answer lost on the way (a proxy that drops the
connection once the server has answered) is sent again with the key and makes one job."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing

import pytest

from ..conftest import LiveServer
from .test_cli import apply, as_json, cli


class AnswerLosingProxy:
    """A TCP proxy to ``upstream`` that, for its first ``lose`` connections, passes the request
    on, waits for the first byte of the answer (the server has committed by then) and closes the
    client's connection without it; later connections pass both ways."""

    def __init__(self, upstream: tuple[str, int], lose: int) -> None:
        self.upstream = upstream
        self.lose = lose
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                losing = self.connections <= self.lose
            threading.Thread(target=self._serve, args=(client, losing), daemon=True).start()

    def _serve(self, client: socket.socket, losing: bool) -> None:
        with closing(client), closing(socket.create_connection(self.upstream)) as server:
            threading.Thread(target=_pipe, args=(client, server), daemon=True).start()
            if losing:
                server.recv(1)  # the answer has started: drop it
                client.shutdown(socket.SHUT_RDWR)
                return
            _pipe(server, client)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        return


@pytest.fixture
def server(make_server: Callable[..., LiveServer]) -> LiveServer:
    """A server that runs nothing: these tests count the jobs made."""
    return make_server(runner_enabled=False)


@pytest.fixture
def losing_proxy(server: LiveServer) -> Iterator[Callable[[int], AnswerLosingProxy]]:
    made: list[AnswerLosingProxy] = []

    def make(lose: int) -> AnswerLosingProxy:
        host, _, port = server.url.removeprefix("http://").partition(":")
        proxy = AnswerLosingProxy((host, int(port)), lose)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


def job_ids(server: LiveServer) -> list[str]:
    return [job["id"] for job in server.http.get("/v1/projects/default/jobs").json()["items"]]


def test_a_submit_sent_again_with_its_key_gets_the_first_job(server: LiveServer) -> None:
    apply(server, "hello")
    key = str(uuid.uuid4())
    first = as_json(
        cli(server, "submit", "hello", "-p", "who=once", "--idempotency-key", key, "--json")
    )
    again = as_json(
        cli(server, "submit", "hello", "-p", "who=once", "--idempotency-key", key, "--json")
    )
    assert again == first
    assert job_ids(server) == [first["id"]]
    # The same key with another request is refused, naming the header, and makes nothing.
    other = cli(server, "submit", "hello", "-p", "who=twice", "--idempotency-key", key)
    assert other.exit_code == 1
    assert other.stderr.startswith("error: ") and "Idempotency-Key" in other.stderr
    # A key the server would refuse is a usage error, before any request.
    for bad_key in ("not ascii: é", "", "k" * 256):
        bad = cli(server, "submit", "hello", "--idempotency-key", bad_key)
        assert bad.exit_code == 2, bad.stderr
        assert bad.stderr.startswith("error: ") and "--idempotency-key" in bad.stderr
    assert job_ids(server) == [first["id"]]
    # Without a key each submit is a job of its own.
    plain = as_json(cli(server, "submit", "hello", "-p", "who=once", "--json"))
    assert job_ids(server) == [plain["id"], first["id"]]


def test_a_lost_answer_is_sent_again_and_makes_one_job(
    server: LiveServer, losing_proxy: Callable[[int], AnswerLosingProxy]
) -> None:
    apply(server, "hello")
    proxy = losing_proxy(1)
    key = str(uuid.uuid4())
    job = as_json(
        cli(
            proxy.url,
            "submit",
            "hello",
            "--idempotency-key",
            key,
            "--json",
            ORCH_DATA_DIR=str(server.settings.data_dir),
        )
    )
    assert proxy.connections == 2  # the first answer was lost; the second try got it
    assert job_ids(server) == [job["id"]]

    # Without a key the CLI cannot know whether the server made the job, so it does not try
    # again: it says the connection was lost, and the job it made is there all the same.
    unkeyed = losing_proxy(1)
    lost = cli(unkeyed.url, "submit", "hello", ORCH_DATA_DIR=str(server.settings.data_dir))
    assert lost.exit_code == 1 and "lost the connection" in lost.stderr
    assert unkeyed.connections == 1
    assert len(job_ids(server)) == 2


def test_a_schedule_created_again_with_its_key_is_not_a_conflict(server: LiveServer) -> None:
    apply(server, "hello")
    create = ("schedules", "create", "nightly", "--cron", "0 2 * * *", "--definition", "hello")
    key = str(uuid.uuid4())
    first = as_json(cli(server, *create, "--idempotency-key", key, "--json"))
    again = as_json(cli(server, *create, "--idempotency-key", key, "--json"))
    assert again == first
    # Without the key, the name is taken.
    taken = cli(server, *create)
    assert taken.exit_code == 1 and "nightly" in taken.stderr
