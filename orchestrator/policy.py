"""The container policy: which risky container options definitions may ask for.

Everything that weakens the wall between a job and its host is refused unless the server's
policy allows it: privileged mode, the host's network, PID, IPC or user namespaces, bind mounts
of host paths (the Docker socket above all), added capabilities and devices; images may be
restricted to allowed prefixes. The check is pure: it raises ``PolicyRefused`` (403) naming the
option and the setting that would allow it. It runs at registration, at submit and again in the
runner, whose own policy may differ.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator.config import Settings
from orchestrator.errors import OrchestratorError, PolicyRefused

# Where Docker engines put their API socket; a host mount of one of these (or of a directory
# holding one) hands the job the engine, which is root on the host.
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
POLICY_FIELDS = (
    "allow_privileged",
    "allow_host_network",
    "allow_host_pid",
    "allow_host_ipc",
    "allow_host_userns",
    "allow_host_mounts",
    "allow_docker_socket",
    "allow_devices",
    "allow_capabilities",
    "allowed_images",
)


class PolicyError(OrchestratorError):
    """The container policy is not valid."""

    code = "invalid_policy"


class ContainerPolicy(BaseModel):
    """What the server allows; every field's default is the safe choice."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_privileged: bool = False
    allow_host_network: bool = False
    allow_host_pid: bool = False
    allow_host_ipc: bool = False
    allow_host_userns: bool = False
    allow_host_mounts: bool = False
    allow_docker_socket: bool = False
    allow_devices: bool = False
    allow_capabilities: list[str] = Field(default_factory=list)
    allowed_images: list[str] = Field(default_factory=list)

    @field_validator("allow_capabilities")
    @classmethod
    def _normalize_capabilities(cls, value: list[str]) -> list[str]:
        return sorted({capability_name(c) for c in value})

    @classmethod
    def from_settings(cls, settings: Settings) -> ContainerPolicy:
        """The ``ORCH_POLICY_*`` settings, overridden key by key by ``ORCH_POLICY_FILE``."""
        values: dict[str, Any] = {
            name: getattr(settings, f"policy_{name}") for name in POLICY_FIELDS
        }
        if settings.policy_file is not None:
            values.update(load_policy_file(settings.policy_file))
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise PolicyError(f"the container policy is not valid: {problems}") from None

    def check(self, container: Mapping[str, Any]) -> None:
        """Refuse the first option of ``container`` (a definition's container fields) that this
        policy does not allow; ``PolicyRefused`` names it and the setting that would allow it."""
        self._check_image(str(container["image"]))
        if container.get("privileged") and not self.allow_privileged:
            _refuse("privileged", "privileged mode", "ORCH_POLICY_ALLOW_PRIVILEGED")
        network = str(container.get("network") or "bridge")
        if network == "host" and not self.allow_host_network:
            _refuse(
                "network", "the host's network (network: host)", "ORCH_POLICY_ALLOW_HOST_NETWORK"
            )
        if network.startswith("container:") and not self.allow_host_network:
            _refuse(
                "network",
                f"another container's network namespace (network: {network})",
                "ORCH_POLICY_ALLOW_HOST_NETWORK",
            )
        for field, allowed, setting in (
            ("pid", self.allow_host_pid, "ORCH_POLICY_ALLOW_HOST_PID"),
            ("ipc", self.allow_host_ipc, "ORCH_POLICY_ALLOW_HOST_IPC"),
            ("userns", self.allow_host_userns, "ORCH_POLICY_ALLOW_HOST_USERNS"),
        ):
            if container.get(field) == "host" and not allowed:
                _refuse(field, f"the host's {field} namespace ({field}: host)", setting)
        for index, volume in enumerate(container.get("volumes") or []):
            self._check_volume(index, str(volume))
        for index, capability in enumerate(container.get("cap_add") or []):
            name = capability_name(str(capability))
            if name not in self.allow_capabilities and "ALL" not in self.allow_capabilities:
                _refuse(
                    f"cap_add[{index}]",
                    f"the added capability {name}",
                    "ORCH_POLICY_ALLOW_CAPABILITIES",
                )
        if container.get("devices") and not self.allow_devices:
            _refuse("devices", "host devices", "ORCH_POLICY_ALLOW_DEVICES")

    def _check_image(self, image: str) -> None:
        if not self.allowed_images:
            return
        if any(f.startswith(p) for p in self.allowed_images for f in (image, full_image(image))):
            return
        raise PolicyRefused(
            f"image: '{image}' is not allowed by the server's policy; allowed prefixes: "
            f"{', '.join(self.allowed_images)} (ORCH_POLICY_ALLOWED_IMAGES)",
            field="image",
        )

    def _check_volume(self, index: int, volume: str) -> None:
        source = volume.split(":", 1)[0]
        if not source.startswith("/"):
            return  # a named volume: Docker manages it, no host path is exposed
        if not self.allow_host_mounts:
            _refuse(
                f"volumes[{index}]",
                f"a bind mount of the host path {source}",
                "ORCH_POLICY_ALLOW_HOST_MOUNTS",
            )
        if exposes_docker_socket(source) and not self.allow_docker_socket:
            _refuse(
                f"volumes[{index}]",
                f"the Docker socket (a bind mount of {source})",
                "ORCH_POLICY_ALLOW_DOCKER_SOCKET",
            )


def _refuse(field: str, what: str, setting: str) -> None:
    raise PolicyRefused(
        f"{field}: {what} is not allowed by the server's policy ({setting} allows it)",
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


def exposes_docker_socket(source: str) -> bool:
    """Whether a bind mount of the host path ``source`` is, or contains, a Docker socket."""
    path = posixpath.normpath(source)
    return any(s == path or s.startswith(path.rstrip("/") + "/") for s in DOCKER_SOCKETS)


def load_policy_file(path: Path) -> dict[str, Any]:
    """The settings a policy file gives (YAML: the ``ORCH_POLICY_*`` names, lower-case, without
    the ``policy_`` prefix)."""
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
