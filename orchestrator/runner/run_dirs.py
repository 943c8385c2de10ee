"""Each attempt's ``/run/orchestrator`` as a directory on the runner's disk, bind-mounted into
its container when the engine shares that disk.

Copying the input in with Docker's archive API makes dockerd mount the container's filesystem
for the copy, about 60 ms per container (a third of a short job's life), and reading the output
back costs another. A bind mount costs neither. It works only when the engine sees the runner's
files at the same path: a local engine, with the runner not in a container of its own (or with
its data directory mounted at the same path). That is found out, not assumed: the engine refuses
a bind mount whose source it does not have, and the runner then copies for the rest of its life.
An engine that labels files for SELinux would deny the container an unlabelled mount, so the
runner always copies there.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import stat
import threading
from collections.abc import Callable
from pathlib import Path

from orchestrator.errors import ContainerFailure
from orchestrator.rules.containers import INPUT_NAME, OUTPUT_NAME, OUTPUT_PATH

logger = logging.getLogger(__name__)


class RunDirs:
    """An installation's attempt directories on this disk, under ``<data dir>/runs/<id>``
    (shared by its runners here; another installation's are never touched).

    ``shared`` is whether the engine sees them: None until found out, then True or False for
    the runner's life.
    """

    def __init__(self, data_dir: Path, installation: str, *, enabled: bool) -> None:
        # Any text is safe: the directory keeps its readable part and a hash, so two ids never
        # share one.
        digest = hashlib.sha256(installation.encode()).hexdigest()[:12]
        readable = re.sub(r"[^A-Za-z0-9_.-]", "_", installation)[:40]
        self.root = data_dir / "runs" / f"{readable}-{digest}"
        self.shared: bool | None = None if enabled else False
        self._lock = threading.Lock()

    def worth_mounting(self, may_share: Callable[[], bool]) -> bool:
        """Whether to mount an attempt's directory: unless the engine is known not to see
        them, asking ``may_share`` while nothing is known."""
        if self.shared is None:
            answer = may_share()
            with self._lock:
                if self.shared is None:
                    self.shared = answer
        return bool(self.shared)

    def not_shared(self) -> bool:
        """Remember that the engine does not see these directories; True the first time."""
        with self._lock:
            first = self.shared is not False
            self.shared = False
            return first

    def path(self, name: str) -> Path:
        """The directory of the attempt whose container is called ``name``."""
        return self.root / name

    def create(self, name: str, input_data: bytes) -> Path:
        """A fresh directory holding ``input_data`` as the input; writable by any user in the
        container, so a job running as non-root can write its output there."""
        # Only the runner's user may look inside: the container reaches its directory through
        # the mount, whatever the permissions of the directories above it.
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory = self.path(name)
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir()
        directory.chmod(0o777)
        descriptor = os.open(directory / INPUT_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(input_data)
        return directory

    def read_output(self, name: str, max_bytes: int) -> bytes | None:
        """The output the container wrote; None when there is none or it is not a plain file.

        The container owns the directory's contents, so nothing in it is followed: an
        ``output.json`` that is a link to one of the runner's files is not read.
        """
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            descriptor = os.open(self.path(name) / OUTPUT_NAME, flags)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None
            raise
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                return None
            with os.fdopen(descriptor, "rb", closefd=False) as handle:
                # One byte more than allowed tells a file too large, even one still growing.
                data = handle.read(max_bytes + 1)
        finally:
            os.close(descriptor)
        if len(data) > max_bytes:
            raise ContainerFailure(f"{OUTPUT_PATH} is larger than {max_bytes} bytes")
        return data

    def remove(self, name: str) -> None:
        """Delete the attempt's directory and whatever the container left in it."""
        directory = self.path(name)
        try:
            shutil.rmtree(directory)
        except FileNotFoundError:
            return
        except OSError as exc:
            logger.warning(
                "could not remove the attempt directory %s: %s",
                directory,
                exc,
                extra={"action": "run_dir_remove_failed"},
            )

    def names(self) -> set[str]:
        """The names of the directories there now."""
        try:
            return {entry.name for entry in self.root.iterdir()}
        except FileNotFoundError:
            return set()

    def sweep(self, names: set[str]) -> None:
        """Delete the directories ``names``: those of attempts that ended while their runner
        was stopped before it could clean up, or that were taken back from it."""
        for name in names:
            self.remove(name)
