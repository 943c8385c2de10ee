"""Secret values: encryption at rest (Fernet, authenticated) under a key ring (masking is
``rules.masking``).

The key ring comes from ``ORCH_SECRET_KEY`` (comma-separated keys) or, failing that, the
``secret-key`` file in the data dir (one key a line, mode 0600, created on first use). The first
key encrypts; every key decrypts. Plain secret values exist only in memory and in the
container's environment; no error message here ever contains a key or a value.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import secrets
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from orchestrator.errors import Conflict, OrchestratorError

KEY_FILE = "secret-key"
# What a digest key is derived for: a key of the ring never signs anything but Fernet tokens
# itself, so a digest cannot be mistaken for (or help forge) one.
_DIGEST_CONTEXT = b"orchestrator.request-digest.v1"
KEY_SETTING = "ORCH_SECRET_KEY"
_KEY_FORMAT = "each key must be 32 url-safe base64-encoded bytes (Fernet.generate_key())"


def generate_key() -> bytes:
    """A new random Fernet key."""
    return Fernet.generate_key()


def _fernet(key: bytes, where: str) -> Fernet:
    try:
        return Fernet(key)
    except ValueError:
        # ``from None``: the chained binascii error may describe the key's text.
        raise OrchestratorError(f"{where} is not a valid key: {_KEY_FORMAT}") from None


def parse_setting(value: str) -> list[bytes]:
    """The keys of ``ORCH_SECRET_KEY`` (comma-separated, first = primary), each checked."""
    keys = [item.strip().encode() for item in value.split(",") if item.strip()]
    if not keys:
        raise OrchestratorError(f"{KEY_SETTING} holds no key: {_KEY_FORMAT}")
    for number, key in enumerate(keys, start=1):
        _fernet(key, f"{KEY_SETTING}: key {number} of {len(keys)}")
    return keys


def _parse_key_file(text: str, path: Path) -> list[bytes]:
    keys: list[bytes] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            key = line.strip().encode()
            _fernet(key, f"{path}, line {number}")
            keys.append(key)
    if not keys:
        raise OrchestratorError(f"the key file {path} holds no key")
    return keys


def _stamp(info: os.stat_result) -> tuple[int, ...]:
    """What identifies one version of the key file."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _read(path: Path) -> tuple[list[bytes], tuple[int, ...]]:
    try:
        # Stamp and content from one open file, so they always belong together.
        with path.open("rb") as handle:
            stamp = _stamp(os.fstat(handle.fileno()))
            text = handle.read().decode("ascii", errors="replace")
    except OSError as exc:
        raise OrchestratorError(f"the key file {path} cannot be read: {exc.strerror}") from None
    return _parse_key_file(text, path), stamp


def read_key_file(path: Path) -> list[bytes]:
    """The keys of a key file, first = primary, each checked."""
    return _read(path)[0]


def _write_temp(path: Path, keys: Sequence[bytes]) -> Path:
    """A new 0600 file beside ``path`` holding ``keys``, flushed to disk."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)  # exactly 0600, whatever the umask
            handle.write(b"".join(key + b"\n" for key in keys))
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_key_file(path: Path, keys: Sequence[bytes]) -> None:
    """Replace the key file atomically: readers see the old file or the new one, never a part."""
    temp = _write_temp(path, keys)
    os.replace(temp, path)
    _sync_dir(path.parent)


def create_key_file(path: Path) -> None:
    """Create the key file with one new key unless it exists (safe if two processes race)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _write_temp(path, [generate_key()])
    try:
        # link() never replaces an existing file: the process that loses the race keeps the
        # winner's key instead of overwriting it.
        os.link(temp, path)
        _sync_dir(path.parent)
    except FileExistsError:
        pass
    finally:
        temp.unlink()


@contextmanager
def key_file_lock(path: Path) -> Iterator[None]:
    """Hold the key file's change lock: key changes (rotate, prune) happen one at a time."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(
                f"another key rotation holds {lock_path}; wait for it to finish"
            ) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class _Ring:
    """One loaded generation of keys; replaced whole, never changed."""

    def __init__(self, keys: Sequence[bytes], stamp: tuple[int, ...] | None = None) -> None:
        fernets = [Fernet(key) for key in keys]
        self.digest_keys = [hmac.new(key, _DIGEST_CONTEXT, hashlib.sha256).digest() for key in keys]
        self.primary = fernets[0]
        self.all = MultiFernet(fernets)
        self.size = len(keys)
        self.stamp = stamp


class SecretBox:
    """Encrypts a job's secret env (a name -> value mapping) under the key ring's first key and
    decrypts under any of its keys.

    A box over a key file follows the file: before each use it compares the file's identity
    (inode, size, mtime) with the one it loaded, and reloads on a change. Checking before use,
    rather than reloading only when a decryption fails, is what keeps *encryption* right during
    a rotation: a process that only retried on failure would go on encrypting under the old
    primary key, and once ``--prune`` dropped that key nobody could read those rows. The key
    file is only ever replaced by a rename, so a change always shows in the inode, and a reader
    sees either the whole old file or the whole new one. The check is one ``stat`` (microseconds).
    """

    def __init__(self, keys: Sequence[bytes] = (), *, key_file: Path | None = None) -> None:
        """A box over ``keys`` (fixed), or over the keys of ``key_file`` (followed)."""
        self._path = key_file
        self._reload_lock = threading.Lock()
        if key_file is not None:
            self._ring = self._load()
            return
        if not keys:
            raise OrchestratorError("a key ring needs at least one key")
        for number, key in enumerate(keys, start=1):
            _fernet(key, f"key {number} of {len(keys)}")
        self._ring = _Ring(keys)

    def _load(self) -> _Ring:
        assert self._path is not None
        keys, stamp = _read(self._path)
        return _Ring(keys, stamp)

    def _current(self) -> _Ring:
        ring = self._ring
        if self._path is None:
            return ring
        try:
            stamp = _stamp(os.stat(self._path))
        except OSError as exc:
            # A vanished key file is an error, not a reason to go on with keys held only in
            # memory: what this process encrypted would be lost at its next start.
            raise OrchestratorError(
                f"the key file {self._path} cannot be read: {exc.strerror}"
            ) from None
        if stamp == ring.stamp:
            return ring
        with self._reload_lock:
            if self._ring.stamp != stamp:  # unless another thread just reloaded
                self._ring = self._load()
            return self._ring

    @property
    def key_count(self) -> int:
        """How many keys the ring holds now (the first encrypts)."""
        return self._current().size

    def encrypt(self, values: dict[str, str]) -> str:
        """Ciphertext of the mapping, under the primary key."""
        return self._current().primary.encrypt(json.dumps(values).encode()).decode()

    def decrypt(self, ciphertext: str) -> dict[str, str]:
        """The mapping back; a wrong key is an error that names no value."""
        try:
            return dict(json.loads(self._current().all.decrypt(ciphertext.encode())))
        except InvalidToken:
            raise OrchestratorError(
                "secret values cannot be decrypted with any key of the key ring"
            ) from None

    def digests(self, data: bytes) -> list[str]:
        """Keyed digests of ``data`` (HMAC-SHA256, hex), one under each key of the ring, the
        primary's first: two requests can be told apart by a stored digest while the database
        holds nothing a guess at a secret value in them could be checked against. A digest
        stored under a retired key still matches while that key is in the ring."""
        ring = self._current()
        return [hmac.new(key, data, hashlib.sha256).hexdigest() for key in ring.digest_keys]

    def under_primary(self, ciphertext: str) -> bool:
        """True when the primary key decrypts ``ciphertext`` (no retired key needed)."""
        try:
            self._current().primary.decrypt(ciphertext.encode())
        except InvalidToken:
            return False
        return True

    def reencrypt(self, ciphertext: str) -> str | None:
        """``ciphertext`` re-encrypted under the primary key; None if it already is."""
        ring = self._current()
        try:
            ring.primary.decrypt(ciphertext.encode())
            return None
        except InvalidToken:
            pass
        try:
            return ring.all.rotate(ciphertext.encode()).decode()
        except InvalidToken:
            raise OrchestratorError(
                "secret values cannot be decrypted with any key of the key ring"
            ) from None


def open_box(data_dir: Path, configured: str | None, *, create: bool = True) -> SecretBox:
    """The process's box: over ``ORCH_SECRET_KEY`` if set, else over the data dir's key file
    (created, 0600, on first use, unless ``create`` is False: a runner must use the key the
    servers use, never make one of its own)."""
    if configured:
        return SecretBox(parse_setting(configured))
    path = data_dir / KEY_FILE
    if not path.exists():
        if not create:
            raise OrchestratorError(
                f"no secret key: set ORCH_SECRET_KEY to the key the servers use (the "
                f"'{KEY_FILE}' file in their data dir), or put that file at {path}"
            )
        create_key_file(path)
    return SecretBox(key_file=path)
