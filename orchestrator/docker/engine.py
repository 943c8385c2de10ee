"""The Docker engine facade: every call to Docker (``docker/`` is the only package that imports
``docker``).

Calls are blocking and fallible: the caller runs them in its own threads. Docker and requests
errors are translated here into the product's errors, so no caller sees a docker exception.
The client is created lazily, so a server starts while its engine is down.
"""

from __future__ import annotations

import io
import re
import socket
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, BinaryIO
from urllib.parse import quote

import docker
import docker.errors
import requests.exceptions
from docker.types import DeviceRequest, Mount

from orchestrator.docker.log_stream import (
    STDERR,
    STDOUT,
    FrameDecoder,
    LogFrame,
    body_blocks,
    log_frame,
    since_parameter,
)
from orchestrator.docker.socket_pool import pool_socket_connections
from orchestrator.docker.spec import ContainerSpec, ContainerState
from orchestrator.errors import (
    ContainerFailure,
    ContainerMissing,
    EngineUnavailable,
    ImageUnavailable,
    MountSourceMissing,
)
from orchestrator.rules.quoting import short_quote


def _quote(exc: docker.errors.APIError) -> str:
    return short_quote(str(exc.explanation or exc))


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


# A lock held by one thread of every runner of the installation at a time, by key.
SharedLock = Callable[[str], AbstractContextManager[object]]


class DockerEngine:
    """One Docker engine, shared by a runner's attempts (the client is thread-safe).

    ``shared_lock``: the installation's lock (``Database.shared_lock``), under which its runners
    make a project's network one at a time; without it, this engine's callers only.
    """

    def __init__(
        self,
        base_url: str | None,
        *,
        timeout: float,
        pool_size: int,
        shared_lock: SharedLock | None = None,
    ) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.pool_size = pool_size
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        own_lock = threading.Lock()
        self._shared_lock: SharedLock = shared_lock or (lambda _key: own_lock)
        # The container this process runs in, if it is one on this engine (``_runner_container``):
        # looked up once.
        self._runner_container_id: str | None = None
        self._runner_container_known = False

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
                pool_socket_connections(self._client, self.pool_size)
            return self._client

    def _call(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one Docker call, translating its errors."""
        try:
            return func(*args, **kwargs)
        # The engine's words in one short line: they may quote a registry's whole answer.
        except docker.errors.NotFound as exc:
            raise ContainerMissing(f"{what} failed: {_quote(exc)}") from exc
        except docker.errors.APIError as exc:
            raise ContainerFailure(f"{what} failed: {_quote(exc)}") from exc
        except docker.errors.DockerException as exc:
            raise ContainerFailure(f"{what} failed: {short_quote(str(exc))}") from exc
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
        (as ``docker run`` does: no image check per container), and making first the network
        and volumes it owns (``spec.own_*``); returns its id."""
        for volume in spec.own_volumes:
            self._own_volume(volume, spec.own_labels)
        network = self._own_network(spec.network, spec.own_labels) if spec.own_network else None
        try:
            container_id = self._create_pulling(spec, network)
        except ContainerMissing as exc:
            if network is None or network not in exc.message:
                raise
            # The network went between finding and joining it: a duplicate another runner
            # removed.
            container_id = self._create_pulling(
                spec, self._own_network(spec.network, spec.own_labels)
            )
        if spec.own_network and spec.reached_by_runner:
            self._reach_from_runner(container_id, spec)
        return container_id

    def _reach_from_runner(self, container_id: str, spec: ContainerSpec) -> None:
        """Let a runner that is itself a container on this engine reach ``container_id`` (not
        started yet): both join the project's internal runner network, ``<network>.runner``
        (a dot: no project name has one).

        Not the project's own network: joining that would let Docker make it the runner
        container's default route (it picks the first network by name), moving its published
        ports. An internal network is never a default route, and holds only this project's
        containers that the runner talks to."""
        runner = self._runner_container()
        if runner is None:
            return  # on the engine's host: it reaches the container on its own network
        access = self._own_network(f"{spec.network}.runner", spec.own_labels, internal=True)
        api = self._docker().api
        if access not in self._networks_of(runner):
            try:
                self._call("network connect", api.connect_container_to_network, runner, access)
            except ContainerFailure:
                if access not in self._networks_of(runner):  # else joined meanwhile
                    raise
        self._call("network connect", api.connect_container_to_network, container_id, access)

    def _networks_of(self, container_id: str) -> set[str]:
        """The ids of the networks ``container_id`` is on."""
        info = self._call("container inspect", self._docker().api.inspect_container, container_id)
        networks = info.get("NetworkSettings", {}).get("Networks") or {}
        return {str(n.get("NetworkID")) for n in networks.values()}

    def _create_pulling(self, spec: ContainerSpec, network: str | None) -> str:
        try:
            return self._create(spec, network)
        except ImageUnavailable:
            self.ensure_image(spec.image)
        return self._create(spec, network)

    def _own_network(self, name: str, labels: dict[str, str], *, internal: bool = False) -> str:
        """The id of the network ``name`` carrying ``labels``, made (``internal``: without a
        route out) if there is none.

        Docker before 25 lets two creates of one name both succeed, and a network may show in
        the list only after a later one, so no check after the fact can pick one for every
        runner alike: the runners make it one at a time, under their shared lock. A network of
        that name without the labels (someone else's) is never joined nor touched."""
        found = self._labelled_networks(name, labels)
        if found:
            return found[0]
        with self._shared_lock(f"docker-network:{name}"):
            found = self._labelled_networks(name, labels)
            if found:
                return found[0]
            try:
                made = self._call(
                    "network create",
                    self._docker().api.create_network,
                    name,
                    driver="bridge",
                    labels=labels,
                    internal=internal,
                )
            except ContainerFailure as exc:
                # Docker 25 and later keep names unique: another installation's, or one made by
                # a runner without the lock (an older release), may have come first.
                found = self._labelled_networks(name, labels)
                if found:
                    return found[0]
                raise ContainerFailure(f"the network {name} cannot be made: {exc.message}") from exc
        return str(made["Id"])

    def _labelled_networks(self, name: str, labels: dict[str, str]) -> list[str]:
        """Ids of the networks named ``name`` carrying ``labels``, oldest first."""
        filters = {"name": [name], "label": [f"{k}={v}" for k, v in labels.items()]}
        listed = self._call("network list", self._docker().api.networks, filters=filters)
        # Docker's name filter matches parts of names.
        exact = [n for n in listed if n.get("Name") == name]
        exact.sort(key=lambda n: (_docker_time(n.get("Created")) or _EPOCH, str(n["Id"])))
        return [str(n["Id"]) for n in exact]

    def _runner_container(self) -> str | None:
        """The id of the container this process runs in, if it is a container of this engine;
        None on a host, or in a container of another engine."""
        if self._runner_container_known:
            return self._runner_container_id
        found: str | None = None
        candidate = _own_container_id()
        if candidate is not None:
            try:
                info = self._call(
                    "container inspect", self._docker().api.inspect_container, candidate
                )
                found = str(info["Id"])
            except ContainerMissing:
                found = None  # a container of another engine
        self._runner_container_id, self._runner_container_known = found, True
        return found

    def _own_volume(self, name: str, labels: dict[str, str]) -> None:
        """Make the named volume ``name`` with ``labels``; one that exists must carry them."""
        api = self._docker().api
        volume = self._call("volume create", api.create_volume, name, labels=labels)
        # Docker answers an existing volume's create with that volume, as it is.
        found = volume.get("Labels") or {}
        if any(found.get(key) != value for key, value in labels.items()):
            raise ContainerFailure(
                f"the volume {name} exists but was not made for this project "
                "(its labels differ); it is not mounted"
            )

    def _create(self, spec: ContainerSpec, network: str | None) -> str:
        api = self._docker().api
        host_config: dict[str, Any] = {
            "network_mode": network or spec.network,
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
        if spec.mounts or spec.read_only_mounts:
            host_config["mounts"] = [
                Mount(target, source, type="bind") for target, source in spec.mounts.items()
            ] + [
                Mount(target, source, type="bind", read_only=True)
                for target, source in spec.read_only_mounts.items()
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
                # Not detached with stdin open: docker-py then sets StdinOnce, so Docker closes
                # the container's stdin when the one attached client closes its side (the
                # process reads to the end of what was fed). It only marks which streams a
                # client attaches to by default.
                detach=not spec.stdin_open,
                stdin_open=spec.stdin_open,
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

    def attach_stdin(self, container_id: str) -> StdinPipe:
        """A pipe to the stdin of a created container made with ``stdin_open`` (attached
        before it starts, so nothing it reads is missed)."""
        api = self._docker().api
        params = {"stdin": 1, "stdout": 0, "stderr": 0, "stream": 1}
        attached = self._call("container attach", api.attach_socket, container_id, params=params)
        return StdinPipe(attached)

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
            for block in body_blocks(response):
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
        """The container's IP address on ``network`` (else on any of its networks; for a runner
        in a container, on one they share); None when it has none (not running, or a network
        mode without an address of its own)."""
        info = self._call("container inspect", self._docker().api.inspect_container, container_id)
        networks: dict[str, Any] = info.get("NetworkSettings", {}).get("Networks") or {}
        preferred = networks.get(network) or {}
        runner = self._runner_container()
        if runner is not None:
            # A runner in a container reaches it on a network they share (``_reach_from_runner``).
            shared = self._networks_of(runner)
            preferred = next(
                (n for n in networks.values() if n.get("NetworkID") in shared), preferred
            )
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

    def labelled_networks(self, labels: dict[str, str]) -> dict[str, dict[str, str]]:
        """Networks carrying every given label: id -> labels."""
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        found = self._call("network list", self._docker().api.networks, filters=filters)
        return {str(item["Id"]): item.get("Labels") or {} for item in found}

    def remove_network(self, network_id: str) -> bool:
        """Remove the network; False when the engine refuses because a container is on it. A
        network already gone is fine."""
        try:
            self._call("network remove", self._docker().api.remove_network, network_id)
        except ContainerMissing:
            return True
        except ContainerFailure:
            return False
        return True

    def close(self) -> None:
        """Close the client's connections."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class StdinPipe:
    """The write side of an attached container's stdin."""

    def __init__(self, attached: Any) -> None:
        # docker-py hands over the socket's file object (for TLS, the socket itself).
        self._attached = attached
        self._sock: socket.socket = getattr(attached, "_sock", attached)

    def feed(self, source: BinaryIO, block_size: int = 256 * 1024) -> bool:
        """Send all of ``source`` then close the pipe, so the container reads to its end; False
        if the container stopped reading first (it exited, or closed its stdin)."""
        try:
            while block := source.read(block_size):
                self._sock.sendall(block)
            # Half-close: the engine sees the end of the input and closes the container's stdin.
            self._sock.shutdown(socket.SHUT_WR)
            return True
        # ValueError: the source was closed under it (its executor was given up on).
        except (OSError, ValueError):
            return False
        finally:
            self.close()

    def close(self) -> None:
        """Close the pipe (the container's stdin ends); a ``feed`` blocked in another thread
        (the container stopped reading) returns."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # closed already
        # The socket is closed once both it and its file object are.
        for closing in (self._attached, self._sock):
            try:
                closing.close()
            except OSError:
                pass


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Docker bind-mounts a container's own hostname, hosts and resolv.conf files from its directory
# on the engine's host, named by the container's id: /proc/self/mountinfo shows it, under cgroup
# v1 and v2 alike.
_CONTAINER_DIRECTORY = re.compile(r"/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)\s")


def _own_container_id() -> str | None:
    """The Docker id of the container this process runs in, as its mounts say; None outside
    one (or where they do not say)."""
    try:
        with open("/proc/self/mountinfo") as mounts:
            found = _CONTAINER_DIRECTORY.search(mounts.read())
    except OSError:
        return None
    return found.group(1) if found else None


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
