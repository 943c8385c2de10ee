"""The container policy: which risky container options definitions may ask for.

Everything that weakens the wall between a job and its host, or between projects, is refused
unless the server's policy allows it: privileged mode, the host's network, PID, IPC or user
namespaces, a network other than the project's own (or none), a volume shared beyond the
project, bind mounts of host paths (the Docker socket above all), added capabilities and
devices; images may be restricted to allowed prefixes; what a job may ask for is bounded by
the resource ceilings (``rules.resource_ceilings``). A refusal is a ``PolicyRefused`` (403)
naming the option and the setting that would allow it. The check runs at registration, at
submit and again in the runner, whose own policy may differ. The socket rule is decided on
the real file a host path leads to on this machine (symlinks, ``//``, ``..``, /proc and bind
mounts seen through), so a check reads the filesystem when a definition has host paths;
``resolve_for_runner`` hands the runner the real paths it checked, to mount those.
"""

from __future__ import annotations

import functools
import os
import posixpath
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator.errors import OrchestratorError, PolicyRefused
from orchestrator.rules import outbound
from orchestrator.rules import resource_ceilings as ceilings
from orchestrator.rules.definition_spec import parse_volume

# Where container engines put their API sockets; a host mount of one of these (or of a directory
# holding one) hands the job the engine, which is root on the host. Refused as spelled even where
# they do not exist: the server checking a definition may not be on the engine's host.
ENGINE_SOCKETS = (
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
    "/run/docker/containerd/containerd.sock",
    "/var/run/docker/containerd/containerd.sock",
    "/run/podman/podman.sock",
    "/var/run/podman/podman.sock",
    "/run/crio/crio.sock",
    "/var/run/crio/crio.sock",
)
# A listening Unix socket whose path holds one of these words is taken for an engine's (its
# shims, plugins and rootless sockets live at paths no list can know).
ENGINE_WORDS = ("docker", "containerd", "podman", "crio")
PROC_REACH = "in /proc (where a job reaches every process's files, the engine's socket among them)"
# The setting that lets a job mount an engine's socket, or any path that leads to one.
SOCKET_FIELD = "allow_docker_socket"


class PolicyError(OrchestratorError):
    """The container policy is not valid."""

    code = "invalid_policy"


class PolicySettings(BaseModel):
    """The container policy's settings, each declared here and nowhere else: the field
    ``allow_privileged`` is the setting ``ORCH_POLICY_ALLOW_PRIVILEGED`` (``setting_name``) and
    the policy file's key ``allow_privileged``. Every permission is off by default; each
    ceiling (``max_*``) defaults to what this host has, or to a bound said in its module."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_privileged: bool = Field(default=False, description="allow `privileged: true`")
    allow_host_network: bool = Field(
        default=False, description="allow `network: host` (and `container:<name>`)"
    )
    allow_host_pid: bool = Field(default=False, description="allow `pid: host`")
    allow_host_ipc: bool = Field(default=False, description="allow `ipc: host`")
    allow_host_userns: bool = Field(default=False, description="allow `userns: host`")
    allow_host_mounts: bool = Field(
        default=False, description="allow bind mounts of host paths in `volumes`"
    )
    allow_docker_socket: bool = Field(
        default=False,
        description="allow a bind mount of the Docker socket (or a directory holding it)",
    )
    allow_devices: bool = Field(default=False, description="allow `devices`")
    allow_capabilities: list[str] = Field(
        default_factory=list, description="capabilities `cap_add` may name (`ALL` for any)"
    )
    allowed_images: list[str] = Field(
        default_factory=list, description="prefixes an image must start with (none: any image)"
    )
    allow_local_registries: bool = Field(
        default=False,
        description="allow images from a registry on a loopback or link-local address "
        "(`localhost:5000/app`, `127.0.0.1:5000/app`)",
    )
    allowed_networks: list[str] = Field(
        default_factory=list,
        description="networks `network` may name beyond the project's own and `none` "
        "(`bridge`: Docker's default network, shared by every container on the engine)",
    )
    shared_volumes: list[str] = Field(
        default_factory=list,
        description="volumes `volumes` may mount by their own name, shared beyond the project "
        "(`shared:<name>:/path`)",
    )
    # Ceilings: the most a definition or a job may ask for (``rules.resource_ceilings``).
    max_memory: ceilings.Size = Field(
        default_factory=ceilings.host_memory, description="the largest `resources.memory`"
    )
    max_cpus: float = Field(
        default_factory=ceilings.host_cpus, gt=0, description="the largest `resources.cpus`"
    )
    max_pids: int = Field(
        default=ceilings.DEFAULT_MAX_PIDS, ge=1, description="the largest `resources.pids`"
    )
    max_timeout: ceilings.Duration = Field(
        default=ceilings.DEFAULT_MAX_TIMEOUT, description="the longest `timeout`"
    )

    @field_validator("allow_capabilities")
    @classmethod
    def _normalize_capabilities(cls, value: list[str]) -> list[str]:
        return sorted({capability_name(c) for c in value})


# The policy file's keys.
POLICY_FIELDS = tuple(PolicySettings.model_fields)


def setting_name(field: str) -> str:
    """The environment variable of the policy setting ``field``: ``ORCH_POLICY_<FIELD>``."""
    if field not in PolicySettings.model_fields:
        raise ValueError(f"not a policy setting: {field}")
    return f"ORCH_POLICY_{field.upper()}"


class ContainerPolicy(PolicySettings):
    """What the server allows: its policy settings, and the engine they guard."""

    # Not a policy setting: the engine this process drives (``ORCH_DOCKER_HOST``, else
    # ``DOCKER_HOST``; None is the local default socket). Its Unix socket is guarded like the
    # known ones, and the files of an engine reached otherwise cannot be checked here.
    docker_host: str | None = None

    @classmethod
    def from_settings(
        cls, settings: PolicySettings, *, policy_file: Path | None, docker_host: str | None
    ) -> ContainerPolicy:
        """The policy of ``settings``, overridden key by key by ``policy_file`` (checked by the
        same fields), guarding the engine at ``docker_host``; ``PolicyError`` if not valid."""
        values: dict[str, Any] = settings.model_dump()
        if policy_file is not None:
            values.update(load_policy_file(policy_file))
        values["docker_host"] = docker_host
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise PolicyError(f"the container policy is not valid: {problems}") from None

    def check(self, container: Mapping[str, Any], *, timeout: float | None = None) -> None:
        """Refuse the first option of ``container`` (a definition's container fields) or the
        ``timeout`` (seconds: the job's own, else its definition's) that this policy does not
        allow; ``PolicyRefused`` names it and the setting that would allow it.

        A host path that does not exist here passes: this server may not be on the runner's
        host, and the runner checks again (``resolve_for_runner``)."""
        self._checked(container, timeout, on_runner=False)

    def resolve_for_runner(
        self, container: Mapping[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Every check of ``check``, as the runner must make them just before it creates the
        container: ``container`` (the job's container options) with each host path of its
        ``volumes`` replaced by the real path it leads to on this host, so the engine mounts the
        file that was checked, not whatever a symlink points to by then.

        Also refused here: a host path that does not exist on this host or cannot be resolved,
        and any host path when the engine is not reached by a local Unix socket (its files are
        not this host's). When the policy allows the Docker socket, volumes pass as written:
        there is nothing left to guard."""
        return self._checked(container, timeout, on_runner=True)

    def _checked(
        self, container: Mapping[str, Any], timeout: float | None, *, on_runner: bool
    ) -> dict[str, Any]:
        self._check_image(str(container["image"]))
        if container.get("privileged") and not self.allow_privileged:
            _refuse("privileged", "privileged mode", "allow_privileged")
        self._check_network(container.get("network"))
        for field, allowed, setting in (
            ("pid", self.allow_host_pid, "allow_host_pid"),
            ("ipc", self.allow_host_ipc, "allow_host_ipc"),
            ("userns", self.allow_host_userns, "allow_host_userns"),
        ):
            if container.get(field) == "host" and not allowed:
                _refuse(field, f"the host's {field} namespace ({field}: host)", setting)
        host = _Host(self.docker_host)  # looked at only if a host path needs it
        volumes = [
            self._volume(index, str(volume), host, on_runner=on_runner)
            for index, volume in enumerate(container.get("volumes") or [])
        ]
        for index, capability in enumerate(container.get("cap_add") or []):
            name = capability_name(str(capability))
            if name not in self.allow_capabilities and "ALL" not in self.allow_capabilities:
                _refuse(f"cap_add[{index}]", f"the added capability {name}", "allow_capabilities")
        if container.get("devices") and not self.allow_devices:
            _refuse("devices", "host devices", "allow_devices")
        excess = ceilings.over_ceiling(self, container.get("resources"), timeout)
        if excess is not None:
            raise PolicyRefused(excess.message(setting_name(excess.setting)), field=excess.field)
        return {**container, "volumes": volumes} if "volumes" in container else dict(container)

    def _check_network(self, network: str | None) -> None:
        """Refuse a network beyond the project's own (None) and ``none`` unless allowed."""
        if network is None or network == "none":
            return  # its project's own network, or none at all: it reaches no other project
        if network == "host" or network.startswith("container:"):
            if not self.allow_host_network:
                what = (
                    "the host's network (network: host)"
                    if network == "host"
                    else f"another container's network namespace (network: {network})"
                )
                _refuse("network", what, "allow_host_network")
            return
        if network not in self.allowed_networks:
            _refuse(
                "network",
                f"the network {network}, shared beyond the project (network: {network}),",
                "allowed_networks",
            )

    def _check_image(self, image: str) -> None:
        registry = local_registry(image)
        if registry is not None and not self.allow_local_registries:
            _refuse(
                "image",
                f"an image from the registry {registry} (this host's own services, or its "
                "cloud's metadata, would be asked for it)",
                "allow_local_registries",
            )
        if not self.allowed_images:
            return
        if any(f.startswith(p) for p in self.allowed_images for f in (image, full_image(image))):
            return
        raise PolicyRefused(
            f"image: '{image}' is not allowed by the server's policy; allowed prefixes: "
            f"{', '.join(self.allowed_images)} ({setting_name('allowed_images')})",
            field="image",
        )

    def _volume(self, index: int, volume: str, host: _Host, *, on_runner: bool) -> str:
        """``volume`` as the engine should mount it, or ``PolicyRefused``."""
        entry = parse_volume(volume)
        field = f"volumes[{index}]"
        if entry.kind == "project":
            return volume  # the project's own volume (the runner names it): nothing shared
        if entry.kind == "shared":
            if entry.source not in self.shared_volumes:
                what = f"the volume {entry.source}, shared beyond the project,"
                _refuse(field, what, "shared_volumes")
            return volume
        source, rest = entry.source, entry.rest
        if not self.allow_host_mounts:
            _refuse(field, f"a bind mount of the host path {source}", "allow_host_mounts")
        if self.allow_docker_socket:
            return volume
        if _under(_normalize(source), "/proc"):
            _refuse(field, f"a bind mount of {source}, {PROC_REACH},", SOCKET_FIELD)
        if on_runner and _socket_path(self.docker_host) is None:
            raise PolicyRefused(
                f"{field}: the host path {source} cannot be checked for the engine's socket: "
                f"this runner's Docker engine is {self.docker_host}, whose files it cannot see "
                f"({setting_name(SOCKET_FIELD)} mounts host paths unchecked)",
                field=field,
            )
        real = _resolve(field, source, strict=on_runner)
        seen = f" ({real} on this host)" if real != source else ""
        if _identity(source) != _identity(real):
            # A magic link of /proc (another process's root or cwd) is not the path it reads as.
            _refuse(field, f"a bind mount of {source}, which is not one path here,", SOCKET_FIELD)
        reached = host.reach(real) or _spelled_reach(_normalize(source))
        if reached is not None:
            verb, found = reached
            what = f"a bind mount of {source}{seen}, which {verb} the engine socket {found},"
            _refuse(field, what, SOCKET_FIELD)
        if host.in_proc(real):
            _refuse(field, f"a bind mount of {source}{seen}, {PROC_REACH},", SOCKET_FIELD)
        if on_runner and ":" in real:
            raise PolicyRefused(
                f"{field}: the host path {source} leads to {real}, which a bind mount cannot name "
                "(it holds ':')",
                field=field,
            )
        return f"{real}:{rest}"


class _Host:
    """What this host shows of its container engines, read at most once per check and only
    when a host path needs it."""

    def __init__(self, docker_host: str | None) -> None:
        self._docker_host = docker_host

    @functools.cached_property
    def _guarded(self) -> dict[tuple[int, int], str]:
        """The identity (device, inode) of each engine socket here, and of every directory above
        it, to that socket's real path: identities, so a bind mount or hard link of the socket,
        or a bind mount of a directory above it, is caught too."""
        guarded: dict[tuple[int, int], str] = {}
        walked: set[str] = set()  # a directory walked before: so was everything above it
        for path in engine_sockets(self._docker_host):
            try:
                if not stat.S_ISSOCK(os.stat(path).st_mode):
                    continue
                real = os.path.realpath(path, strict=True)
            except OSError:
                continue  # not on this host
            above = real
            while above not in walked:
                walked.add(above)
                identity = _identity(above)
                if identity is not None:
                    guarded.setdefault(identity, real)
                above = posixpath.dirname(above)
        return guarded

    @functools.cached_property
    def _mounts(self) -> list[tuple[str, str]]:
        """Each mount point here with its file system type (/proc/self/mountinfo)."""
        try:
            lines = Path("/proc/self/mountinfo").read_text().splitlines()
        except OSError:
            return []
        mounts = []
        for line in lines:
            head, _, tail = line.partition(" - ")
            fields = head.split(" ")
            if len(fields) > 4 and tail:
                point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])
                mounts.append((point, tail.split(" ", 1)[0]))
        return mounts

    def reach(self, real: str) -> tuple[str, str] | None:
        """("is" or "holds", the engine socket) if a bind mount of the real path ``real`` would
        hand a job an engine socket of this host; else None."""
        # Docker binds recursively: what is mounted under the path is mounted too.
        inside = [point for point, _ in self._mounts if _under(point, real)]
        for path in (real, *inside):
            try:
                found = os.stat(path)
            except OSError:
                continue
            engine_socket = self._guarded.get((found.st_dev, found.st_ino))
            if engine_socket is not None:
                return ("is" if stat.S_ISSOCK(found.st_mode) else "holds"), engine_socket
        return _spelled_reach(real)

    def in_proc(self, real: str) -> bool:
        """Whether the real path ``real`` is in a procfs mount or holds one."""
        points = {"/proc", *(point for point, kind in self._mounts if kind == "proc")}
        return any(_under(real, point) or _under(point, real) for point in points)


def engine_sockets(docker_host: str | None) -> list[str]:
    """Paths of the container engines' sockets on this host: the configured engine's, the
    known ones, and every listening Unix socket whose path names an engine."""
    configured = _socket_path(docker_host)
    paths = [configured] if configured else []
    paths += ENGINE_SOCKETS
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        lines = []
    for line in lines:
        # Num RefCount Protocol Flags Type St Inode Path; abstract ones start with "@".
        fields = line.split(maxsplit=7)
        if len(fields) == 8 and fields[7].startswith("/"):
            if any(word in fields[7] for word in ENGINE_WORDS):
                paths.append(fields[7])
    return list(dict.fromkeys(paths))


def _socket_path(docker_host: str | None) -> str | None:
    """The Unix socket of the engine at ``docker_host`` (docker-py's default when None); None if
    the engine is reached otherwise (tcp://, ssh://)."""
    if docker_host is None:
        return "/var/run/docker.sock"
    path = docker_host.removeprefix("unix://")
    return path if path != docker_host and path.startswith("/") else None


def _resolve(field: str, source: str, *, strict: bool) -> str:
    """The real path of the host path ``source`` here; with ``strict``, refused unless it exists
    and resolves (the runner's check), else resolved as far as it exists."""
    try:
        return os.path.realpath(source, strict=strict)
    except FileNotFoundError:
        raise PolicyRefused(
            f"{field}: the host path {source} does not exist on this runner's host (it must exist "
            "before a job mounts it; Docker would make it, as root)",
            field=field,
        ) from None
    except OSError as exc:
        raise PolicyRefused(
            f"{field}: the host path {source} cannot be resolved on this runner's host: "
            f"{exc.strerror}",
            field=field,
        ) from None


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of what ``path`` leads to as the kernel walks it; None if nothing."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _normalize(path: str) -> str:
    """``path`` taken lexically as Linux reads it: POSIX keeps a leading ``//``, Linux does not."""
    return "/" + posixpath.normpath(path).lstrip("/")


def _under(path: str, top: str) -> bool:
    """Whether ``path`` is ``top`` or lies below it (both normalized)."""
    return path == top or path.startswith(top.rstrip("/") + "/")


def _spelled_reach(path: str) -> tuple[str, str] | None:
    """("is" or "holds", the known engine socket) that the normalized ``path`` names."""
    for engine_socket in ENGINE_SOCKETS:
        if _under(engine_socket, path):
            return ("is" if engine_socket == path else "holds"), engine_socket
    return None


def _refuse(field: str, what: str, allowed_by: str) -> None:
    """Refuse ``what``, asked for by ``field``, naming the policy setting ``allowed_by``."""
    raise PolicyRefused(
        f"{field}: {what} is not allowed by the server's policy "
        f"({setting_name(allowed_by)} allows it)",
        field=field,
    )


def capability_name(capability: str) -> str:
    """``cap_net_admin`` / ``CAP_NET_ADMIN`` / ``NET_ADMIN`` -> ``NET_ADMIN``."""
    name = capability.strip().upper()
    return name.removeprefix("CAP_")


def full_image(image: str) -> str:
    """The image as Docker names it in full (``busybox`` -> ``docker.io/library/busybox``).

    An image written without a registry comes from Docker Hub, so a policy that allows
    ``docker.io/library/`` allows ``busybox:1.36`` too.
    """
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return image
    if not rest:
        return f"docker.io/library/{image}"
    return f"docker.io/{image}"


def local_registry(image: str) -> str | None:
    """The registry part of ``image`` when it names this host (``localhost``, a name under
    ``.localhost``, or a loopback, link-local or unspecified address in any spelling); else
    None. A registry name is not resolved: the engine resolves it, maybe on another host."""
    first, _, rest = image.partition("/")
    if not rest or not ("." in first or ":" in first or first == "localhost"):
        return None  # Docker Hub's
    host = first.lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host == "localhost" or host.endswith(".localhost"):
        return first
    address = outbound.literal_address(host)
    if address is not None and outbound.kind_of(address) in outbound.LOCAL_KINDS:
        return first
    return None


def exposes_docker_socket(source: str) -> bool:
    """Whether the host path ``source``, as spelled, is or contains a known engine socket."""
    return _spelled_reach(_normalize(source)) is not None


def load_policy_file(path: Path) -> dict[str, Any]:
    """The settings a policy file gives (YAML: a mapping whose keys are fields of
    ``PolicySettings``), whose values ``ContainerPolicy.from_settings`` checks."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise PolicyError(f"ORCH_POLICY_FILE: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"ORCH_POLICY_FILE: {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PolicyError(f"ORCH_POLICY_FILE: {path} must be a mapping of policy settings")
    unknown = sorted(set(data) - set(POLICY_FIELDS))
    if unknown:
        raise PolicyError(
            f"ORCH_POLICY_FILE: {path}: unknown setting(s) {', '.join(map(str, unknown))}; "
            f"known: {', '.join(POLICY_FIELDS)}"
        )
    return dict(data)
