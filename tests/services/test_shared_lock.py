"""``Database.shared_lock``: one holder at a time among every handle on one database (each
handle stands for a process: its own connections, its own open lock file)."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

from orchestrator.storage import private_files
from orchestrator.storage.db import Database


def test_a_second_handle_waits_for_the_first_to_release(database_url: str) -> None:
    first, second = Database(database_url), Database(database_url)
    held = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def hold() -> None:
        with first.shared_lock("docker-network:x"):
            order.append("first in")
            held.set()
            release.wait(30)
            order.append("first out")

    def wait_turn() -> None:
        held.wait(30)
        with second.shared_lock("docker-network:x"):
            order.append("second in")

    holder = threading.Thread(target=hold)
    waiter = threading.Thread(target=wait_turn)
    try:
        holder.start()
        waiter.start()
        held.wait(30)
        waiter.join(1.0)
        assert waiter.is_alive(), "the second handle took the lock while the first held it"
        release.set()
        holder.join(30)
        waiter.join(30)
        assert order == ["first in", "first out", "second in"]
        # Released for good: taken again at once.
        with first.shared_lock("docker-network:x"):
            pass
    finally:
        release.set()
        first.dispose()
        second.dispose()


def test_a_failing_step_releases_the_lock(database_url: str) -> None:
    first, second = Database(database_url), Database(database_url)
    try:
        try:
            with first.shared_lock("k"):
                raise ValueError("the step failed")
        except ValueError:
            pass
        taken = threading.Event()

        def take() -> None:
            with second.shared_lock("k"):
                taken.set()

        thread = threading.Thread(target=take)
        thread.start()
        thread.join(30)
        assert taken.is_set()
    finally:
        first.dispose()
        second.dispose()


def test_the_sqlite_lock_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator.db"
    database = Database(f"sqlite:///{path}")
    try:
        with database.shared_lock("k"):
            lock_file = Path(f"{path}{private_files.LOCK_FILE_SUFFIX}")
            assert stat.S_IMODE(lock_file.stat().st_mode) == 0o600
        assert lock_file in private_files.database_files(path)
    finally:
        database.dispose()
