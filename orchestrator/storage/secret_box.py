"""Secret values: encryption at rest (Fernet, authenticated) under a key ring, and masking.

The key ring comes from ``ORCH_SECRET_KEY`` (comma-separated keys) or, failing that, the
``secret-key`` file in the data dir (one key a line, mode 0600, created on first use). The first
key encrypts; every key decrypts. Plain secret values exist only in memory and in the
container's environment; no error message here ever contains a key or a value.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cmp_to_key
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from orchestrator.errors import Conflict, OrchestratorError

MASK = "***"
# A shorter secret value cannot be masked without revealing it: every occurrence of its few
# characters in a log or an error would become ***, garbling the text and showing the value.
MIN_SECRET_CHARS = 4
KEY_FILE = "secret-key"
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


# A damaged character: Docker's json-file log driver stores each byte of a character it cut as
# U+FFFD, so a damaged form holds two to four of them in a row, and a text without two cannot
# hold one. Masking never adds a U+FFFD, so it cannot make such a run either.
_CUT = "\ufffd"
# Characters by their UTF-8 length (lone surrogates, which ``surrogatepass`` encodes, take 3).
_WIDTH = {
    2: re.compile("[\u0080-\u07ff]"),
    3: re.compile("[\u0800-\uffff]"),
    4: re.compile("[\U00010000-\U0010ffff]"),
}

# A form to mask: a part of a value (the value, or a non-blank line of it), whole or with the
# character at ``at`` damaged into ``width`` U+FFFD. Damaged forms stay descriptions until
# used: written out, the forms of a value of n non-ASCII characters would take n² characters.
_Form = tuple[str, int, int]  # (part, at, width); at == -1: the part whole


def _text(form: _Form) -> str:
    part, at, width = form
    return part if at < 0 else part[:at] + _CUT * width + part[at + 1 :]


def _length(form: _Form) -> int:
    part, at, width = form
    return len(part) if at < 0 else len(part) + width - 1


def _compare(one: _Form, other: _Form) -> int:
    """The order forms are masked in: longest first, then by their text."""
    if _length(one) != _length(other):
        return -1 if _length(one) > _length(other) else 1
    if one[0] is other[0] and one[1] >= 0 and other[1] >= 0:
        # One part damaged in two places: the texts first differ at the first of the two,
        # where one holds U+FFFD and the other the part's character (unless that is U+FFFD).
        first = min(one[1], other[1])
        if one[1] == other[1]:
            return 0
        if one[0][first] != _CUT:
            damaged_first = _CUT < one[0][first]
            return -1 if (one[1] == first) == damaged_first else 1
    a, b = _text(one), _text(other)
    return (a > b) - (a < b)


_ORDER = cmp_to_key(_compare)


def _damaged_in(part: str, text: str) -> Iterator[_Form]:
    """The damaged forms of ``part`` that masking ``text`` may come upon.

    Masking only ever puts ``***`` in the place of a text it removes, so where a form shows up
    at some step, its stretch without ``*`` around the damage (all of it, for a part without
    ``*``) was in ``text`` from the start, at a run of U+FFFD. Looked for around each such run.
    """
    size, starred = len(part), "*" in part
    for width, chars in _WIDTH.items():
        run = _CUT * width
        at_run = text.find(run)
        while at_run >= 0:
            after_run = len(text) - at_run - width
            # Without a '*' the whole form must fit around the run: only these places can.
            low = 0 if starred else max(0, size - 1 - after_run)
            high = size - 1 if starred else min(at_run, size - 1)
            for match in chars.finditer(part, low):
                at = match.start()
                if at > high:
                    break
                start = part.rfind("*", 0, at) + 1 if starred else 0
                end = part.find("*", at + 1) if starred else -1
                end = size if end < 0 else end
                before, after = at - start, end - at - 1
                if (
                    before <= at_run
                    and after <= after_run
                    and (before == 0 or part[at - 1] == text[at_run - 1])  # cheap test first
                    and text.startswith(part[start:at], at_run - before)
                    and text.startswith(part[at + 1 : end], at_run + width)
                ):
                    yield part, at, width
            at_run = text.find(run, at_run + 1)


class Masker:
    """Replaces every occurrence of some secret values in a text by ``***``; built once for a
    set of values (a job's), then called on each piece of its output.

    Two more forms of a value are masked, as logs may carry it so. Each line of a multi-line
    value (a PEM key): logs are masked a line at a time, so its lines may arrive apart (blank
    lines are no secret and are left alone). And the value (or line) with one non-ASCII
    character damaged: Docker's json-file log driver cuts a long line every 16 KiB, even inside
    a character, and stores each byte of the cut character as U+FFFD.

    Forms are replaced one after the other, longest first (a value that contains another is
    masked whole), ties by their text (the same text is always masked the same way). Memory
    and time are linear in the values' size: a damaged form is written out only for a text
    that holds U+FFFD where that form could be (see ``_damaged_in``).
    """

    __slots__ = ("_damageable", "_forms")

    def __init__(self, secret_values: Iterable[str]) -> None:
        """A masker of ``secret_values`` (empty ones mask nothing)."""
        parts: set[str] = set()
        for value in secret_values:
            parts.add(value)
            parts.update(line for line in value.splitlines() if line.strip())
        parts.discard("")
        self._forms = tuple(sorted(parts, key=lambda part: (-len(part), part)))
        self._damageable = tuple(part for part in self._forms if not part.isascii())

    def __call__(self, text: str) -> str:
        """``text`` with every form of every value replaced by ``***``."""
        if self._damageable and _CUT * 2 in text:
            damaged = [form for part in self._damageable for form in _damaged_in(part, text)]
            if damaged:
                return self._mask_with(text, damaged)
        forms = self._forms
        for first, form in enumerate(forms):
            if form in text:
                # The forms before this one are not in ``text``, and nothing was replaced yet.
                for later in forms[first:]:
                    text = text.replace(later, MASK)
                return text
        return text

    def _mask_with(self, text: str, damaged: list[_Form]) -> str:
        """``text`` masked of the whole parts and of ``damaged``, in order, each written out
        only when its turn comes (a form equal to the one before is masked once)."""
        forms = sorted([*((part, -1, 0) for part in self._forms), *damaged], key=_ORDER)
        previous = None
        for form in forms:
            pattern = _text(form)
            if pattern != previous:
                text = text.replace(pattern, MASK)
            previous = pattern
        return text


def mask(text: str, secret_values: Iterable[str]) -> str:
    """``text`` with every occurrence of a secret value replaced by ``***`` (see ``Masker``;
    for a one-off text: a masker used many times saves working out the values' forms)."""
    return Masker(secret_values)(text)


def public_url(url: str) -> str:
    """``url`` with its userinfo (which may hold a password) masked."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{MASK}@{host}"))
