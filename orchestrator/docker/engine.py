"""Everything that talks to Docker; the only module that imports ``docker``.

Calls are blocking and fallible: the caller runs them in its own threads. Docker and requests
errors are translated here into the product's errors, so no caller sees a docker exception.
The client is created lazily, so a server starts while its engine is down.
"""

from __future__ import annotations

import functools
import http.client
import io
import struct
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import docker
import docker.errors
import requests.exceptions
from docker.transport.unixconn import UnixHTTPAdapter
from docker.types import DeviceRequest, Mount

from orchestrator.errors import (
    ContainerFailure,
    ContainerMissing,
    EngineUnavailable,
    ImageUnavailable,
    MountSourceMissing,
)

LABEL_PREFIX = "orchestrator."
# Every container an installation makes carries its id (``installation`` table): nothing an
# installation does touches another's containers, even on one engine under one runner name.
INSTALLATION_LABEL = f"{LABEL_PREFIX}installation"

# The stream numbers of Docker's multiplexed output.
STDOUT = 1
STDERR = 2
_FRAME_HEADER = struct.Struct(">BxxxL")  # stream, 3 bytes of padding, payload length
_MAX_CHUNK_LINE = 4096  # bytes of a chunk-size line, extensions included, before it is refused
# Bytes read from a logs response at once, at most: whatever the socket has, across chunks.
_READ_SIZE = 256 * 1024


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create one attempt's container; built by the runner."""

    name: str
    image: str
    command: list[str] | None
    env: dict[str, str]
    labels: dict[str, str]
    working_dir: str | None = None
    user: str | None = None
    network: str = "bridge"
    volumes: list[str] = field(default_factory=list)
    privileged: bool = False
    cap_add: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    pid: str | None = None
    ipc: str | None = None
    userns: str | None = None
    cpus: float | None = None
    memory: int | None = None
    pids: int | None = None
    shm_size: int | None = None
    gpus: int | str | None = None
    # The runner's own read-write bind mounts: path in the container -> path on the engine's
    # host. Not the job's ``volumes``, which the policy rules.
    mounts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerState:
    """What Docker says about a container."""

    id: str
    running: bool
    exit_code: int | None
    oom_killed: bool
    labels: dict[str, str]
    # Docker's word: created (never started), running, paused, restarting, removing, exited
    # or dead.
    status: str = "unknown"
    # When it last started; None if it never did.
    started_at: datetime | None = None

    @property
    def never_started(self) -> bool:
        """Whether the container was created and never started."""
        return self.status == "created"


@dataclass(frozen=True, slots=True)
class LogFrame:
    """One message of a container's output as Docker's log driver stored it.

    A message is one line with its newline, or a 16 KiB piece of a longer line, or what the
    container wrote last without a newline; never more than one line. ``time`` is Docker's clock
    in nanoseconds since the epoch: within one stream it never goes back, and every piece of a
    long line carries the time of its first piece.
    """

    stream: int
    time: int
    data: bytes


class FrameDecoder:
    """Splits Docker's multiplexed stream into (stream, payload) frames, however it is chunked.

    Each frame is an 8-byte header (stream number, 3 zero bytes, big-endian payload length)
    followed by the payload. An incomplete frame is held until the rest of it arrives; the
    pieces of a large one are gathered without copying what came before at each piece.
    """

    def __init__(self) -> None:
        self._held = bytearray()
        self._needed = 0  # bytes the held frame needs before it can be split out

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The frames completed by ``data``, in order."""
        buffer = data
        if self._held:
            self._held += data
            if len(self._held) < self._needed:
                return []
            buffer = bytes(self._held)
            self._held.clear()
        frames: list[tuple[int, bytes]] = []
        at = 0
        size = len(buffer)
        while size - at >= _FRAME_HEADER.size:
            kind, length = _FRAME_HEADER.unpack_from(buffer, at)
            end = at + _FRAME_HEADER.size + length
            if end > size:
                self._needed = end - at
                break
            frames.append((kind, buffer[at + _FRAME_HEADER.size : end]))
            at = end
        else:
            self._needed = _FRAME_HEADER.size
        self._held += memoryview(buffer)[at:]
        return frames


class ChunkDecoder:
    """Undoes HTTP/1.1 chunked transfer coding (RFC 9112, 7.1), however the bytes are split:
    the body's bytes, and ``done`` once the last chunk has come (its trailers are not read)."""

    def __init__(self) -> None:
        self._held = b""  # the start of a chunk-size line
        self._left = 0  # bytes of the current chunk's data still to come
        self._crlf = 0  # bytes of the CRLF after the current chunk's data still to come
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """The body's bytes in ``data``."""
        buffer = self._held + data
        self._held = b""
        body: list[bytes] = []
        at = 0
        size = len(buffer)
        while at < size and not self.done:
            if self._left or self._crlf:
                at = self._finish_chunk(buffer, at, body)
                continue
            eol = buffer.find(b"\r\n", at)
            if eol < 0:
                if size - at > _MAX_CHUNK_LINE:
                    raise ValueError("a chunk-size line is too long")
                self._held = buffer[at:]
                break
            length = _chunk_size(buffer[at:eol])
            start, end = eol + 2, eol + 2 + length
            self.done = not length
            if end + 2 <= size:
                # The usual case: the whole chunk is here.
                if buffer[end : end + 2] != b"\r\n":
                    raise ValueError("a chunk's data is not followed by CRLF")
                body.append(buffer[start:end])
                at = end + 2
            else:
                self._left, self._crlf, at = length, 2, start
        return b"".join(body)

    def _finish_chunk(self, buffer: bytes, at: int, body: list[bytes]) -> int:
        """Take what ``buffer`` has, from ``at``, of a chunk begun in an earlier ``feed``."""
        if self._left:
            end = min(at + self._left, len(buffer))
            body.append(buffer[at:end])
            self._left -= end - at
            return end
        end = min(at + self._crlf, len(buffer))
        if buffer[at:end] != b"\r\n"[2 - self._crlf : 2 - self._crlf + end - at]:
            raise ValueError("a chunk's data is not followed by CRLF")
        self._crlf -= end - at
        return end


def _chunk_size(line: bytes) -> int:
    """The size a chunk-size line gives (hex digits, then any extensions, which are ignored)."""
    if not line.isalnum():
        line = line.partition(b";")[0].rstrip(b" \t")
    # isalnum() of bytes is ASCII only; it keeps out the sign and underscores int() would take.
    if not line.isalnum():
        raise ValueError(f"a bad chunk size {line!r}")
    return int(line, 16)


def log_frame(kind: int, payload: bytes) -> LogFrame:
    """The frame whose payload starts with Docker's timestamp (``timestamps=1``) and a space."""
    if kind not in (STDOUT, STDERR):
        raise ContainerFailure(f"container logs failed: a log frame of stream {kind}")
    # RFC 3339 in UTC with up to nine decimals: 2024-05-01T12:00:00.123456789Z
    stamp, space, data = payload.partition(b" ")
    whole, _, fraction = stamp[:-1].partition(b".")
    try:
        if not space or not stamp.endswith(b"Z") or len(fraction) > 9:
            raise ValueError(stamp)
        # isdigit() of bytes is ASCII digits only: no sign, space or underscore as int() takes.
        if fraction and not fraction.isdigit():
            raise ValueError(stamp)
        seconds = _epoch_seconds(whole)
    except ValueError as exc:
        raise ContainerFailure("container logs failed: a log frame without a timestamp") from exc
    nanoseconds = int(fraction.ljust(9, b"0")) if fraction else 0
    return LogFrame(stream=kind, time=seconds * 1_000_000_000 + nanoseconds, data=data)


@functools.lru_cache(maxsize=16)
def _epoch_seconds(whole: bytes) -> int:
    """``YYYY-MM-DDTHH:MM:SS`` (UTC) as seconds since the epoch. Cached: consecutive frames
    share their second, and parsing it costs most of reading a short frame."""
    return int(datetime.fromisoformat(whole.decode("ascii")).replace(tzinfo=UTC).timestamp())


def since_parameter(time_ns: int) -> str:
    """``time_ns`` as the logs API's ``since`` ("seconds.nanoseconds"), to the nanosecond."""
    seconds, nanoseconds = divmod(time_ns, 1_000_000_000)
    return f"{seconds}.{nanoseconds:09d}"


def _body(response: requests.Response) -> Iterator[bytes]:
    """A streamed response's body in blocks, each what the connection has when it is read.

    Docker sends each log message as its own HTTP chunk, and urllib3 hands them over one at a
    time, at a cost per chunk well above that of the frame inside it. So when the response is
    plainly chunked and nothing of its body was read yet, its chunks are read here, straight
    from the connection's buffered reader (a private attribute, as docker-py's own attach
    reads it): anything else goes through ``iter_content``.
    """
    raw = getattr(response.raw, "_fp", None)
    reader = getattr(raw, "fp", None)
    if not (
        isinstance(raw, http.client.HTTPResponse)
        and raw.chunked
        and raw.chunk_left is None
        and isinstance(reader, io.BufferedReader)
        and "Content-Encoding" not in response.headers
    ):
        yield from response.iter_content(chunk_size=None)
        return
    chunks = ChunkDecoder()
    while not chunks.done:
        # read1: what the buffer holds, else one read of the socket; it never waits for more.
        block = reader.read1(_READ_SIZE)
        if not block:
            raise requests.exceptions.ChunkedEncodingError("the logs response ended early")
        try:
            body = chunks.feed(block)
        except ValueError as exc:
            raise ContainerFailure(f"container logs failed: {exc}") from exc
        if body:
            yield body


def _unavailable(exc: Exception) -> EngineUnavailable:
    return EngineUnavailable(f"the Docker engine cannot be reached: {type(exc).__name__}")


def _is_connection_error(exc: Exception) -> bool:
    # ChunkedEncodingError: the connection broke in the middle of a streamed response.
    return isinstance(
        exc,
        requests.exceptions.ConnectionError
        | requests.exceptions.Timeout
        | requests.exceptions.ChunkedEncodingError
        | ConnectionError,
    )


class _SocketAdapter(UnixHTTPAdapter):
    """docker-py's Unix socket adapter with one connection pool for the socket.

    docker-py keys its pools by the whole URL, so every call about another container got a
    pool, and a connection, of its own, opened for that call and closed soon after. Every URL
    leads to the same socket, so one pool serves them all.
    """

    def get_connection(self, url: str, proxies: Any = None) -> Any:
        return super().get_connection("http+docker://localhost", proxies)


def _pool_socket_connections(client: docker.DockerClient, pool_size: int) -> None:
    """Give a client of a Unix socket one pool of ``pool_size`` connections for all its calls,
    and spare it the proxy and ``.netrc`` lookups requests makes per request (no proxy or
    password applies to a socket)."""
    api = client.api
    adapter = api.get_adapter(api.base_url)
    if not isinstance(adapter, UnixHTTPAdapter):
        return
    pooled = _SocketAdapter(
        f"http+unix://{adapter.socket_path}", timeout=adapter.timeout, max_pool_size=pool_size
    )
    api.mount("http+docker://", pooled)
    adapter.close()
    api.trust_env = False


class DockerEngine:
    """One Docker engine, shared by a runner's attempts (the client is thread-safe)."""

    def __init__(self, base_url: str | None, *, timeout: float, pool_size: int) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.pool_size = pool_size
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()

    def _docker(self) -> docker.DockerClient:
        with self._lock:
            if self._client is None:
                try:
                    if self.base_url:
                        self._client = docker.DockerClient(
                            base_url=self.base_url,
                            timeout=int(self.timeout),
                            max_pool_size=self.pool_size,
                        )
                    else:
                        self._client = docker.from_env(
                            timeout=int(self.timeout), max_pool_size=self.pool_size
                        )
                except docker.errors.DockerException as exc:
                    raise EngineUnavailable(f"the Docker engine cannot be reached: {exc}") from exc
                _pool_socket_connections(self._client, self.pool_size)
            return self._client

    def _call(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one Docker call, translating its errors."""
        try:
            return func(*args, **kwargs)
        except docker.errors.NotFound as exc:
            raise ContainerMissing(f"{what} failed: {exc.explanation or exc}") from exc
        except docker.errors.APIError as exc:
            raise ContainerFailure(f"{what} failed: {exc.explanation or exc}") from exc
        except docker.errors.DockerException as exc:
            raise ContainerFailure(f"{what} failed: {exc}") from exc
        except Exception as exc:
            if _is_connection_error(exc):
                raise _unavailable(exc) from exc
            raise

    def ping(self) -> str:
        """The engine's version; EngineUnavailable when it does not answer."""
        try:
            client = self._docker()
            return str(client.version()["Version"])
        except EngineUnavailable:
            raise
        except Exception as exc:
            raise _unavailable(exc) from exc

    def ensure_image(self, image: str) -> None:
        """Make sure ``image`` is present, pulling it when it is not."""
        client = self._docker()
        try:
            self._call("image inspect", client.images.get, image)
            return
        except ContainerMissing:
            pass
        try:
            repository, tag = _split_image(image)
            self._call("image pull", client.images.pull, repository, tag=tag)
        except ContainerFailure as exc:
            raise ImageUnavailable(
                f"image '{image}' is not on the Docker engine and could not be pulled "
                f"({exc.message})"
            ) from exc

    def create(self, spec: ContainerSpec) -> str:
        """Create (not start) the container, pulling its image first when the engine lacks it
        (as ``docker run`` does: no image check per container); returns its id."""
        try:
            return self._create(spec)
        except ImageUnavailable:
            self.ensure_image(spec.image)
        return self._create(spec)

    def _create(self, spec: ContainerSpec) -> str:
        api = self._docker().api
        host_config: dict[str, Any] = {
            "network_mode": spec.network,
            "binds": spec.volumes or None,
            "privileged": spec.privileged,
            "cap_add": spec.cap_add or None,
            "devices": spec.devices or None,
            "pid_mode": spec.pid,
            "ipc_mode": spec.ipc,
            "userns_mode": spec.userns,
            # Whatever the image holds (setuid binaries, file capabilities), the job's processes
            # cannot gain privileges beyond those they start with.
            "security_opt": ["no-new-privileges"],
            "pids_limit": spec.pids,
            "shm_size": spec.shm_size,
            "mem_limit": spec.memory,
            "nano_cpus": int(spec.cpus * 1e9) if spec.cpus else None,
        }
        if spec.gpus is not None:
            count = -1 if spec.gpus == "all" else int(spec.gpus)
            host_config["device_requests"] = [DeviceRequest(count=count, capabilities=[["gpu"]])]
        if spec.mounts:
            host_config["mounts"] = [
                Mount(target, source, type="bind") for target, source in spec.mounts.items()
            ]

        def create() -> Any:
            # The low-level call: the high-level one inspects the container it just made.
            return api.create_container(
                spec.image,
                spec.command,
                name=spec.name,
                environment=spec.env,
                labels=spec.labels,
                working_dir=spec.working_dir,
                user=spec.user,
                detach=True,
                host_config=api.create_host_config(**host_config),
            )

        try:
            created = self._call("container create", create)
        except ContainerMissing as exc:
            # Other missing things (a network, a container to join) are reported as they are.
            if "no such image" not in exc.message.lower():
                raise
            raise ImageUnavailable(f"image '{spec.image}' is not on the Docker engine") from exc
        except ContainerFailure as exc:
            if spec.mounts and "bind source path does not exist" in exc.message:
                raise MountSourceMissing(exc.message) from exc
            raise
        return str(created["Id"])

    def may_share_files(self) -> bool:
        """Whether the engine may see this process's files at their own paths: it is reached
        by a local socket, and it does not label files for SELinux (which would deny a container
        a bind mount nobody labelled). Only a bind mount tells for sure."""
        client = self._docker()
        # docker-py's base URL for a Unix socket, whatever the socket's path.
        if client.api.base_url != "http+docker://localhost":
            return False
        info = self._call("engine info", client.api.info)
        return not any("selinux" in option for option in info.get("SecurityOptions") or [])

    def put_file(self, container_id: str, path: str, data: bytes) -> None:
        """Copy ``data`` to the absolute ``path`` in a created container (parents made 0777)."""
        archive = io.BytesIO()
        parts = path.strip("/").split("/")
        with tarfile.open(fileobj=archive, mode="w") as tar:
            for depth in range(1, len(parts)):
                directory = tarfile.TarInfo("/".join(parts[:depth]))
                directory.type = tarfile.DIRTYPE
                # Writable by any user, so a job running as non-root can write its output.
                directory.mode = 0o777
                directory.mtime = int(time.time())
                tar.addfile(directory)
            info = tarfile.TarInfo("/".join(parts))
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
        client = self._docker()
        self._call(
            "copy into container", client.api.put_archive, container_id, "/", archive.getvalue()
        )

    def start(self, container_id: str) -> None:
        """Start a created container."""
        self._call("container start", self._docker().api.start, container_id)

    def wait(self, container_id: str) -> int:
        """Block until the container exits; its exit code."""
        result = self._call("container wait", self._docker().api.wait, container_id, timeout=None)
        return int(result.get("StatusCode", -1))

    def logs(
        self,
        container_id: str,
        *,
        since: int | None = None,
        follow: bool = True,
        stream: int | None = None,
        tail: int | None = None,
    ) -> Iterator[LogFrame]:
        """The container's output as Docker stored it, one frame (message) at a time.

        ``since``: Docker's time in nanoseconds; frames stamped at or after it (Docker compares
        inclusively). ``follow``: go on until the container exits, else end with what is stored
        now. ``stream``: ``STDOUT`` or ``STDERR`` alone, else both, in the order Docker stored
        them. ``tail``: only the last that many messages Docker stored (of both streams, before
        ``stream`` and ``since`` filter them), found from the end of its log without reading
        the rest. Our containers have no TTY, so the output is always multiplexed with its
        stream.
        """
        api = self._docker().api
        params: dict[str, Any] = {
            "stdout": int(stream in (None, STDOUT)),
            "stderr": int(stream in (None, STDERR)),
            "timestamps": 1,
            "follow": int(follow),
        }
        if since is not None:
            params["since"] = since_parameter(since)
        if tail is not None:
            params["tail"] = str(tail)
        url = f"{api.base_url}/v{api.api_version}/containers/{quote(container_id, safe='')}/logs"

        def request() -> requests.Response:
            # No read timeout: a followed container may print nothing for hours.
            response = api.get(url, params=params, stream=True, timeout=(self.timeout, None))
            try:
                response.raise_for_status()
            except requests.exceptions.HTTPError as exc:
                response.close()
                raise docker.errors.create_api_error_from_http_exception(exc) from exc
            return response

        response = self._call("container logs", request)
        decoder = FrameDecoder()
        try:
            for block in _body(response):
                for kind, payload in decoder.feed(block):
                    yield log_frame(kind, payload)
        except Exception as exc:
            if _is_connection_error(exc):
                raise _unavailable(exc) from exc
            raise
        finally:
            response.close()

    def stop(self, container_id: str, grace: float) -> None:
        """SIGTERM, ``grace`` seconds, then SIGKILL. A container already gone is fine."""
        try:
            self._call("container stop", self._docker().api.stop, container_id, timeout=int(grace))
        except ContainerMissing:
            return

    def read_file(self, container_id: str, path: str, max_bytes: int) -> bytes | None:
        """A file's content from a (stopped) container; None when it does not exist."""
        api = self._docker().api
        try:
            stream, stat = self._call("copy from container", api.get_archive, container_id, path)
        except ContainerMissing:
            return None
        if int(stat.get("size", 0)) > max_bytes:
            raise ContainerFailure(f"{path} is larger than {max_bytes} bytes")
        archive = io.BytesIO(b"".join(stream))
        with tarfile.open(fileobj=archive) as tar:
            member = tar.next()
            if member is None or not member.isfile():
                return None
            handle = tar.extractfile(member)
            return handle.read() if handle else None

    def state(self, container_id: str) -> ContainerState | None:
        """The container's state, or None if it does not exist."""
        try:
            info = self._call(
                "container inspect", self._docker().api.inspect_container, container_id
            )
        except ContainerMissing:
            return None
        state = info["State"]
        return ContainerState(
            id=info["Id"],
            running=bool(state.get("Running")),
            exit_code=None if state.get("Running") else int(state.get("ExitCode", -1)),
            oom_killed=bool(state.get("OOMKilled")),
            labels=info["Config"].get("Labels") or {},
            status=str(state.get("Status") or "unknown"),
            started_at=_docker_time(state.get("StartedAt")),
        )

    def address(self, container_id: str, network: str) -> str | None:
        """The container's IP address on ``network`` (else on any of its networks); None when
        it has none (not running, or a network mode without an address of its own)."""
        info = self._call("container inspect", self._docker().api.inspect_container, container_id)
        networks: dict[str, Any] = info.get("NetworkSettings", {}).get("Networks") or {}
        preferred = networks.get(network) or {}
        addresses = [preferred.get("IPAddress")] + [n.get("IPAddress") for n in networks.values()]
        return next((address for address in addresses if address), None)

    def remove(self, container_id: str) -> None:
        """Remove the container (forcefully). A container already gone is fine."""
        try:
            self._call(
                "container remove", self._docker().api.remove_container, container_id, force=True
            )
        except ContainerMissing:
            return

    def kill_signals(self, container_id: str, since: float) -> list[str]:
        """The signals sent to the container through the engine's API (``docker kill``,
        ``stop``, ``rm -f``) since ``since`` (unix seconds), from the engine's event log."""

        def read() -> list[str]:
            stream = self._docker().api.events(
                since=int(since),
                until=int(time.time()) + 1,
                filters={"container": container_id, "event": "kill"},
                decode=True,
            )
            try:
                return [
                    str(event.get("Actor", {}).get("Attributes", {}).get("signal", ""))
                    for event in stream
                ]
            finally:
                stream.close()

        return list(self._call("events", read))

    def engine_id(self) -> str:
        """The engine's own id (``docker info``): the same engine under any URL."""
        return str(self._call("info", self._docker().api.info)["ID"])

    def list_labelled(self, labels: dict[str, str]) -> list[str]:
        """Ids of all containers (running or not) carrying every given label."""
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        found = self._call(
            "container list", self._docker().api.containers, all=True, filters=filters
        )
        return [item["Id"] for item in found]

    def find_labelled(self, label: str) -> dict[str, dict[str, str]]:
        """Containers (running or not) carrying ``label`` with any value: id -> labels."""
        found = self._call(
            "container list", self._docker().api.containers, all=True, filters={"label": label}
        )
        return {item["Id"]: item.get("Labels") or {} for item in found}

    def close(self) -> None:
        """Close the client's connections."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _docker_time(text: str | None) -> datetime | None:
    """Docker's RFC 3339 time with nanoseconds ("2026-12-02T14:40:30.123456789Z"); None for
    its zero time (never happened) or an unreadable one."""
    if not text or text.startswith("0001-"):
        return None
    whole, _, rest = text.rstrip("Z").partition(".")
    fraction = "".join(c for c in rest if c.isdigit())[:6].ljust(6, "0")
    try:
        return datetime.fromisoformat(f"{whole}.{fraction}").replace(tzinfo=UTC)
    except ValueError:
        return None


def _split_image(image: str) -> tuple[str, str | None]:
    if "@" in image:
        return image, None
    name, _, tag = image.rpartition(":")
    if name and "/" not in tag:
        return name, tag
    return image, "latest"
