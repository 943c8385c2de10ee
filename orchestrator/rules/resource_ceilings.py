"""Resource ceilings: the most memory, CPUs, processes and run time a definition or a job may
ask for, and their defaults. The container policy (``rules.policy``) declares them as settings
and raises the refusal; this module owns the defaults and the pure decision, and reads
nothing but the host's size (for the defaults).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from pydantic import BeforeValidator

from orchestrator.rules.units import MAX_SIZE_BYTES, format_duration, parse_duration, parse_size

# The most processes one job may ask for: the kernel's own pid_max default on most hosts, so one
# job cannot ask for a whole default host's process table; a job that needs more is rare
# enough for an operator to raise it.
DEFAULT_MAX_PIDS = 32768
# The longest timeout one job may ask for (seconds): a week covers multi-day renders and
# trainings, while a forgotten job of a mistyped timeout (``30d`` for ``30m``) gives its runner
# slot back within days rather than months. Jobs that set no timeout are not cut by it.
DEFAULT_MAX_TIMEOUT = 7 * 86400.0

Size = Annotated[int, BeforeValidator(parse_size)]
Duration = Annotated[float, BeforeValidator(parse_duration)]

# A size shown in a unit has fewer units than this (else it is shown in bytes, and rounded).
_FEW_UNITS = 10240
_BINARY_UNITS = (("Pi", 1024**5), ("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024))


def host_memory() -> int:
    """The physical memory of this host in bytes: the default of ``max_memory`` (a container
    cannot use more); the largest size a definition may write where the host does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError):
        return MAX_SIZE_BYTES


def host_cpus() -> float:
    """The CPUs of this host: the default of ``max_cpus`` (Docker refuses more at create)."""
    return float(os.cpu_count() or 1)


class Ceilings(Protocol):
    """The ceilings, as the container policy holds them."""

    @property
    def max_memory(self) -> int: ...
    @property
    def max_cpus(self) -> float: ...
    @property
    def max_pids(self) -> int: ...
    @property
    def max_timeout(self) -> float: ...


@dataclass(frozen=True)
class Excess:
    """What is over its ceiling: the field, the value asked for and the ceiling (as a person
    writes them), and the policy setting that sets the ceiling."""

    field: str
    asked: str
    ceiling: str
    setting: str

    def message(self, variable: str) -> str:
        """The refusal, naming the field, the ceiling and its variable ``variable``."""
        return (
            f"{self.field}: {self.asked} is more than the server's policy allows "
            f"(at most {self.ceiling}, set by {variable})"
        )


def over_ceiling(
    ceilings: Ceilings, resources: Mapping[str, Any] | None, timeout: float | None
) -> Excess | None:
    """The first of ``resources`` (a definition's, sizes in bytes) and ``timeout`` (seconds,
    the job's own or its definition's) that is over its ceiling; None if all are within.

    A value at its ceiling is within it; one that is not set asks for nothing and passes (the
    runner's defaults apply to it)."""
    resources = resources or {}
    memory = resources.get("memory")
    if memory is not None and memory > ceilings.max_memory:
        return Excess(
            "resources.memory", format_size(memory), format_size(ceilings.max_memory), "max_memory"
        )
    cpus = resources.get("cpus")
    if cpus is not None and cpus > ceilings.max_cpus:
        return Excess("resources.cpus", f"{cpus:g}", f"{ceilings.max_cpus:g}", "max_cpus")
    pids = resources.get("pids")
    if pids is not None and pids > ceilings.max_pids:
        return Excess("resources.pids", str(pids), str(ceilings.max_pids), "max_pids")
    if timeout is not None and timeout > ceilings.max_timeout:
        return Excess(
            "timeout",
            format_duration(timeout),
            format_duration(ceilings.max_timeout),
            "max_timeout",
        )
    return None


def format_size(size: int) -> str:
    """A size as a person reads it: exact in a binary unit that divides it in few digits
    (``64Mi``, ``1Pi``), else in bytes with its rounded size (``24606076928 bytes (about
    22.9Gi)``, as a host's memory reads)."""
    for unit, factor in _BINARY_UNITS:
        if size % factor == 0 and size // factor < _FEW_UNITS:
            return f"{size // factor}{unit}"
    for unit, factor in _BINARY_UNITS:
        if size >= factor:
            return f"{size} bytes (about {size / factor:.1f}{unit})"
    return f"{size} bytes"
