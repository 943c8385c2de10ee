"""The files of a GA4GH TES task on the runner's host: where each container path lives in the
task's directory, the mounts every executor gets, the inputs staged before the executors and
the outputs delivered after them.

Every path a task names inside its containers maps to the same path under the task's host
directory (``/data/x`` is ``<task dir>/data/x``), so what one executor writes in a volume is
there for the next. The executors write into that directory, so nothing in it is trusted: it is
read and written only through paths whose every component is checked not to be a symbolic
link (the executors have exited by then, so nothing changes it meanwhile), and files are opened
without following one. A ``file://`` input must resolve inside an allowed input root and an
output inside the output root; ``..`` is refused everywhere.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import unquote, urlsplit

import httpx

from orchestrator.rules.tes_storage import S3Location, TesStorage, s3_location
from orchestrator.runner.tes_s3 import S3Error, S3Store, S3TooLarge

# Bytes copied at a time.
_BLOCK = 1024 * 1024
_WILDCARDS = frozenset("*?[")


class TesFileError(Exception):
    """A task's file could not be staged or delivered; the text is its system log line (it
    never quotes a URL's query or credentials)."""


@dataclass(frozen=True)
class TesFileSettings:
    """Where a TES task's files may come from and go to.

    ``input_roots``: host directories ``file://`` inputs may come from (none: such inputs are
    refused). ``output_root``: the host directory ``file://`` outputs are written under (made
    when missing). ``http_input_max_bytes``: the largest ``http(s)://`` input. ``http_transport``:
    makes the transport downloads go through; the server's is guarded by the outbound rule
    (``background.outbound.guarded_transport``), so an input URL cannot reach internal
    addresses. ``http_timeout``: seconds a download may wait for the other side at any step.
    ``storage``: the schemes and S3 buckets allowed (checked again here: a task may have been
    posted under other settings). ``s3``: the store ``s3://`` URLs name; ``http_input_max_bytes``
    bounds each object downloaded from it too.
    """

    input_roots: tuple[Path, ...]
    output_root: Path
    http_input_max_bytes: int
    http_transport: Callable[[], httpx.BaseTransport]
    http_timeout: float = 30.0
    storage: TesStorage = field(default_factory=TesStorage)
    s3: S3Store | None = None


@dataclass(frozen=True)
class OutputFile:
    """One file a task's outputs delivered."""

    url: str  # where it was written, file://... or s3://...
    path: str  # the path inside the container
    size_bytes: int


# --- container paths on the host -------------------------------------------------------------


def container_parts(path: str, what: str) -> tuple[str, ...]:
    """The components of an absolute container path; ``..`` is refused (``what`` names the
    field in the error)."""
    if not path.startswith("/"):
        raise TesFileError(f"{what}: {path!r} is not an absolute path")
    parts = tuple(part for part in path.split("/") if part not in ("", "."))
    if ".." in parts:
        raise TesFileError(f"{what}: {path!r} has a '..' component")
    return parts


def _no_link(path: Path) -> os.stat_result | None:
    """``path``'s status without following it (None: it does not exist); a symbolic link is
    refused."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(found.st_mode):
        raise TesFileError(f"{path.name} is a symbolic link, which is never followed")
    return found


def host_path(task_dir: Path, parts: tuple[str, ...], *, make_parents: bool = False) -> Path:
    """The host path of a container path under ``task_dir``, none of whose components (below
    ``task_dir``) is a symbolic link; ``make_parents``: its missing parent directories are
    made, writable by any user (an executor may run as any user)."""
    current = task_dir
    for index, part in enumerate(parts):
        current = current / part
        found = _no_link(current)
        last = index == len(parts) - 1
        if found is None and make_parents and not last:
            current.mkdir()
            os.chmod(current, 0o777)
        elif found is not None and not last and not stat.S_ISDIR(found.st_mode):
            raise TesFileError(f"{current.name} is not a directory")
    return current


def make_dir(task_dir: Path, parts: tuple[str, ...]) -> Path:
    """The directory at the container path (made, writable by any user, if missing)."""
    path = host_path(task_dir, parts, make_parents=True)
    found = _no_link(path)
    if found is None:
        path.mkdir()
        os.chmod(path, 0o777)
    elif not stat.S_ISDIR(found.st_mode):
        raise TesFileError(f"{'/' + '/'.join(parts)} is not a directory")
    return path


def open_for_writing(path: Path) -> BinaryIO:
    """``path`` created or truncated, never through a symbolic link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.fdopen(os.open(path, flags, 0o666), "wb")


def open_regular(path: Path) -> BinaryIO | None:
    """A regular file opened for reading, never through a symbolic link; None when it does not
    exist."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TesFileError(f"{path.name} cannot be opened ({_os_reason(exc)})") from None
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode):
        os.close(fd)
        raise TesFileError(f"{path.name} is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _os_reason(exc: OSError) -> str:
    if exc.errno is not None and exc.errno == getattr(os, "ELOOP", None):
        return "a symbolic link"
    return exc.strerror or type(exc).__name__


def _copy(source: BinaryIO, target: BinaryIO, limit: int | None = None) -> int:
    size = 0
    while block := source.read(_BLOCK):
        size += len(block)
        if limit is not None and size > limit:
            raise TesFileError(f"larger than {limit} bytes")
        target.write(block)
    return size


# --- mounts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mounts:
    """The bind mounts every executor of a task gets: container path -> host path."""

    read_write: dict[str, str]
    read_only: dict[str, str]


def plan_mounts(task: dict[str, Any], task_dir: Path) -> Mounts:
    """Make the host side of every volume, input and output, and the mounts that show them
    to the executors at their container paths.

    Volumes, output directories and the directories outputs are written in are read-write;
    inputs are read-only, unless they are inside one of those (then they are files there, as
    the executors may change them). A mount inside another one of the same kind is the same
    host path already: it is left out.
    """
    wanted: dict[tuple[str, ...], bool] = {}  # parts -> writable

    def want(parts: tuple[str, ...], writable: bool) -> None:
        wanted[parts] = wanted.get(parts, False) or writable

    for index, volume in enumerate(task.get("volumes") or []):
        parts = container_parts(volume, f"volumes[{index}]")
        make_dir(task_dir, parts)
        want(parts, True)
    for index, output in enumerate(task.get("outputs") or []):
        parts = _output_dir_parts(output, f"outputs[{index}]")
        make_dir(task_dir, parts)
        want(parts, True)
    for index, item in enumerate(task.get("inputs") or []):
        parts = container_parts(item["path"], f"inputs[{index}].path")
        if item.get("type") == "DIRECTORY":
            make_dir(task_dir, parts)
        else:
            host_path(task_dir, parts, make_parents=True)
        want(parts, False)

    def covered(parts: tuple[str, ...], writable: bool) -> bool:
        # Under a read-write mount anything is visible as it is; under a read-only one, only
        # what is read-only too.
        return any(
            other != parts and parts[: len(other)] == other and (other_rw or not writable)
            for other, other_rw in wanted.items()
        )

    mounts = Mounts(read_write={}, read_only={})
    for parts, writable in sorted(wanted.items()):
        if not parts:
            # An output directly under '/' would need the container's root mounted.
            raise TesFileError("'/' cannot be a volume, an input or an output's directory")
        if covered(parts, writable):
            continue
        target = mounts.read_write if writable else mounts.read_only
        target["/" + "/".join(parts)] = str(task_dir.joinpath(*parts))
    return mounts


def _output_dir_parts(output: dict[str, Any], what: str) -> tuple[str, ...]:
    """The directory an output's executors write in: the output itself for a directory, the
    ``path_prefix`` for a wildcard path, else the file's directory."""
    path = output["path"]
    if _has_wildcards(path):
        return container_parts(_prefix_of(output, what), f"{what}.path_prefix")
    parts = container_parts(path, f"{what}.path")
    return parts if output.get("type") == "DIRECTORY" else parts[:-1]


def _has_wildcards(path: str) -> bool:
    return any(c in _WILDCARDS for c in path)


def _prefix_of(output: dict[str, Any], what: str) -> str:
    prefix = output.get("path_prefix")
    if not prefix:
        raise TesFileError(f"{what}: a path with wildcards needs a path_prefix")
    return str(prefix)


# --- inputs ----------------------------------------------------------------------------------


def shown_url(url: str) -> str:
    """A URL as logs may show it: without credentials, query or fragment (they may carry a
    token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else parts.path


def stage_input(
    item: dict[str, Any], index: int, task_dir: Path, settings: TesFileSettings
) -> None:
    """Put one input at its path in the task's directory."""
    what = f"inputs[{index}]"
    parts = container_parts(item["path"], f"{what}.path")
    directory = item.get("type") == "DIRECTORY"
    content = item.get("content")
    if content:
        if directory:
            raise TesFileError(f"{what}: a DIRECTORY input cannot have content")
        with open_for_writing(host_path(task_dir, parts, make_parents=True)) as target:
            target.write(str(content).encode())
        return
    url = str(item.get("url") or "")
    scheme = urlsplit(url).scheme.lower()
    try:
        refusal = settings.storage.refusal(url, output=False)
        if refusal is not None:
            raise TesFileError(refusal)
        if scheme in ("file", ""):
            source = _local_source(url, what, settings.input_roots)
            if directory:
                _copy_tree_in(source, make_dir(task_dir, parts), settings.input_roots, set())
            else:
                _copy_file_in(source, host_path(task_dir, parts, make_parents=True))
        elif scheme in ("http", "https"):
            if directory:
                raise TesFileError("a DIRECTORY input cannot come from http(s)")
            _download(url, host_path(task_dir, parts, make_parents=True), settings)
        else:
            _s3_in(url, task_dir, parts, directory, settings)
    except TesFileError as exc:
        raise TesFileError(f"{what} ({shown_url(url)}): {exc}") from None
    except OSError as exc:
        raise TesFileError(f"{what} ({shown_url(url)}): {_os_reason(exc)}") from None


def _inside(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def _real_roots(roots: tuple[Path, ...]) -> tuple[str, ...]:
    return tuple(os.path.realpath(root) for root in roots)


def _local_source(url: str, what: str, roots: tuple[Path, ...]) -> str:
    """The real path of a ``file://`` (or bare path) input, inside an allowed root."""
    if not roots:
        raise TesFileError("file:// inputs are not allowed on this server (no input roots)")
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise TesFileError("a file:// URL must name no host")
    path = unquote(parts.path)
    container_parts(path, f"{what}.url")  # absolute, no '..'
    real = os.path.realpath(path)
    if not _inside(real, _real_roots(roots)):
        raise TesFileError("outside the allowed input roots")
    return real


def _copy_file_in(source: str, target: Path) -> None:
    opened = open_regular(Path(source))
    if opened is None:
        raise TesFileError("does not exist")
    with opened as reader, open_for_writing(target) as writer:
        _copy(reader, writer)


def _copy_tree_in(source: str, target: Path, roots: tuple[Path, ...], seen: set[str]) -> None:
    """Copy the directory ``source`` (a real path inside a root) into ``target``: symbolic
    links are followed only to what resolves inside a root; anything neither a file nor a
    directory is refused."""
    if not os.path.isdir(source):
        raise TesFileError("is not a directory")
    if source in seen:
        raise TesFileError("a symbolic link loops back into the directory")
    seen = seen | {source}
    real_roots = _real_roots(roots)
    with os.scandir(source) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            real = os.path.realpath(entry.path)
            if not _inside(real, real_roots):
                raise TesFileError(f"{entry.name} leads outside the allowed input roots")
            if os.path.isdir(real):
                child = target / entry.name
                child.mkdir()
                os.chmod(child, 0o777)
                _copy_tree_in(real, child, roots, seen)
            else:
                _copy_file_in(real, target / entry.name)


def _download(url: str, target: Path, settings: TesFileSettings) -> None:
    """Download ``url`` (no redirect followed) through the settings' transport."""
    limit = settings.http_input_max_bytes
    try:
        with (
            httpx.Client(
                transport=settings.http_transport(),
                timeout=settings.http_timeout,
                follow_redirects=False,
            ) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise TesFileError(f"the server answered HTTP {response.status_code}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise TesFileError(f"larger than {limit} bytes")
            size = 0
            with open_for_writing(target) as writer:
                for block in response.iter_bytes(_BLOCK):
                    size += len(block)
                    if size > limit:
                        raise TesFileError(f"larger than {limit} bytes")
                    writer.write(block)
    except httpx.HTTPError as exc:
        raise TesFileError(f"the download failed ({type(exc).__name__})") from None
    except (TesFileError, OSError):
        raise
    except Exception as exc:
        # The outbound guard refuses with its own error (of ``background``, which the runner
        # does not import), whose text says why and names no address a name resolved to.
        raise TesFileError(f"the download failed: {exc}") from None


def _s3_store(settings: TesFileSettings) -> S3Store:
    if settings.s3 is None:
        raise TesFileError("s3:// is not configured on this runner")
    return settings.s3


def _s3_in(
    url: str, task_dir: Path, parts: tuple[str, ...], directory: bool, settings: TesFileSettings
) -> None:
    """Download the object (or every object under the prefix) an ``s3://`` URL names."""
    store, location = _s3_store(settings), s3_location(url)
    limit = settings.http_input_max_bytes
    try:
        if not directory:
            with open_for_writing(host_path(task_dir, parts, make_parents=True)) as target:
                store.download(location, target, limit)
            return
        make_dir(task_dir, parts)
        left = limit  # a directory's objects together, as one input
        found = False
        for relative, key in store.objects_under(location):
            found = True
            path = host_path(task_dir, parts + relative, make_parents=True)
            with open_for_writing(path) as target:
                try:
                    left -= store.download(replace(location, key=key), target, left)
                except S3TooLarge:
                    raise TesFileError(f"larger than {limit} bytes together") from None
        if not found:  # S3 has no directories: a mistyped prefix is only an empty listing
            raise TesFileError("no object has this prefix")
    except S3Error as exc:
        raise TesFileError(str(exc)) from None


# --- outputs ---------------------------------------------------------------------------------


class _Destination(Protocol):
    """Where an output's file (or, below it, a directory's files) is written."""

    def child(self, *names: str) -> _Destination:
        """The destination of a file below this one."""
        ...

    def write(self, source: BinaryIO) -> tuple[str, int]:
        """Write ``source`` here; the URL written and its size."""
        ...


@dataclass(frozen=True)
class _FileDestination:
    path: Path
    output_root: Path

    def child(self, *names: str) -> _FileDestination:
        return _FileDestination(self.path.joinpath(*names), self.output_root)

    def write(self, source: BinaryIO) -> tuple[str, int]:
        target = _writable(self.path, self.output_root)
        with open_for_writing(target) as writer:
            return target.as_uri(), _copy(source, writer)


@dataclass(frozen=True)
class _S3Destination:
    store: S3Store
    location: S3Location

    def child(self, *names: str) -> _S3Destination:
        key = "/".join((self.location.key.rstrip("/"), *names))
        return _S3Destination(self.store, replace(self.location, key=key))

    def write(self, source: BinaryIO) -> tuple[str, int]:
        size = os.fstat(source.fileno()).st_size  # the executors have exited: it stays so
        try:
            self.store.upload(source, self.location)
        except S3Error as exc:
            raise TesFileError(str(exc)) from None
        return f"s3://{self.location.bucket}/{self.location.key}", size


def deliver_output(
    output: dict[str, Any], index: int, task_dir: Path, settings: TesFileSettings
) -> list[OutputFile]:
    """Copy one output from the task's directory to its URL: a ``file://`` one under the
    output root, or an ``s3://`` one; every file written, with its size."""
    what = f"outputs[{index}]"
    url = str(output.get("url") or "")
    try:
        destination = _destination(url, settings)
        path = output["path"]
        if _has_wildcards(path):
            prefix = _prefix_of(output, what)
            prefix_parts = container_parts(prefix, f"{what}.path_prefix")
            delivered: list[OutputFile] = []
            for parts in _matches(task_dir, container_parts(path, f"{what}.path")):
                if parts[: len(prefix_parts)] != prefix_parts:
                    raise TesFileError(f"{'/'.join(parts)} is not under the path_prefix")
                relative = parts[len(prefix_parts) :]
                delivered += _deliver(task_dir, parts, destination.child(*relative))
            return delivered
        parts = container_parts(path, f"{what}.path")
        source = host_path(task_dir, parts)
        found = _no_link(source)
        if found is None:
            raise TesFileError(f"{path} does not exist")
        if output.get("type") == "DIRECTORY" and not stat.S_ISDIR(found.st_mode):
            raise TesFileError(f"{path} is not a directory")
        if output.get("type") != "DIRECTORY" and stat.S_ISDIR(found.st_mode):
            raise TesFileError(f"{path} is a directory (type FILE)")
        return _deliver(task_dir, parts, destination)
    except TesFileError as exc:
        raise TesFileError(f"{what} ({shown_url(url)}): {exc}") from None
    except OSError as exc:
        raise TesFileError(f"{what} ({shown_url(url)}): {_os_reason(exc)}") from None


def _destination(url: str, settings: TesFileSettings) -> _Destination:
    """Where an output URL's files go: a ``file://`` (or bare) path inside the output root, or
    an allowed ``s3://`` bucket."""
    refusal = settings.storage.refusal(url, output=True)
    if refusal is not None:
        raise TesFileError(refusal)
    if urlsplit(url).scheme.lower() == "s3":
        return _S3Destination(_s3_store(settings), s3_location(url))
    return _FileDestination(_file_destination(url, settings.output_root), settings.output_root)


def _file_destination(url: str, output_root: Path) -> Path:
    """The host path of a ``file://`` (or bare) output URL, inside the output root."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise TesFileError("a file:// URL must name no host")
    path = container_parts(unquote(parts.path), "url")
    # The root as configured or as it resolves: either spelling of a path under it is.
    roots = (os.path.abspath(output_root), os.path.realpath(output_root))
    target = Path("/", *path)
    if not _inside(str(target), roots) or str(target) in roots:
        raise TesFileError(f"outside the output root {output_root}")
    return target


def _writable(target: Path, output_root: Path) -> Path:
    """``target``'s parent directories made, and checked to resolve inside the output root."""
    root = os.path.realpath(output_root)
    os.makedirs(root, exist_ok=True)
    # Before making the directories (a link on the way would make them elsewhere) and after.
    for _ in range(2):
        if not _inside(os.path.realpath(target.parent), (root,)):
            raise TesFileError("leads outside the output root")
        target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _deliver(task_dir: Path, parts: tuple[str, ...], destination: _Destination) -> list[OutputFile]:
    """Copy the file or directory at the container path ``parts`` to ``destination``."""
    source = host_path(task_dir, parts)
    found = _no_link(source)
    if found is None:
        raise TesFileError(f"{'/' + '/'.join(parts)} does not exist")
    if stat.S_ISDIR(found.st_mode):
        delivered: list[OutputFile] = []
        for relative in _tree_files(source):
            delivered += _deliver(task_dir, parts + relative, destination.child(*relative))
        return delivered
    opened = open_regular(source)
    if opened is None:
        raise TesFileError(f"{'/' + '/'.join(parts)} does not exist")
    with opened as reader:
        url, size = destination.write(reader)
    return [OutputFile(url=url, path="/" + "/".join(parts), size_bytes=size)]


def _tree_files(directory: Path) -> Iterator[tuple[str, ...]]:
    """The files under ``directory`` (relative parts), in name order, not following links: a
    symbolic link anywhere in an output is refused."""
    with os.scandir(directory) as listed:
        entries = sorted(listed, key=lambda e: e.name)
    for entry in entries:
        if entry.is_symlink():
            raise TesFileError(f"{entry.name} is a symbolic link, which is never followed")
        if entry.is_dir(follow_symlinks=False):
            for relative in _tree_files(Path(entry.path)):
                yield (entry.name, *relative)
        else:
            yield (entry.name,)


def _matches(task_dir: Path, pattern: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The container paths matching a POSIX wildcard pattern (``*``, ``?``, ``[...]`` within a
    component; a leading dot matched only by a leading dot), in name order. Symbolic links are
    not followed, nor matched."""
    found: list[tuple[str, ...]] = [()]
    for depth, component in enumerate(pattern):
        last = depth == len(pattern) - 1
        following: list[tuple[str, ...]] = []
        for parts in found:
            directory = task_dir.joinpath(*parts)
            if not _has_wildcards(component):
                candidates = [component]
            else:
                try:
                    names = sorted(os.listdir(directory))
                except (FileNotFoundError, NotADirectoryError):
                    continue
                candidates = [
                    name
                    for name in names
                    if fnmatch.fnmatchcase(name, component)
                    and (not name.startswith(".") or component.startswith("."))
                ]
            for name in candidates:
                try:
                    entry = os.lstat(directory / name)
                except FileNotFoundError:
                    continue
                if stat.S_ISLNK(entry.st_mode):
                    continue
                if last or stat.S_ISDIR(entry.st_mode):
                    following.append((*parts, name))
        found = following
    return found
