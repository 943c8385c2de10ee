"""Resource ceilings: the container policy bounds the memory, CPUs, processes and timeout a
definition or a job may ask for; over a ceiling is a refusal naming the field and the setting,
at a ceiling is within it; the defaults are this host's size and the module's bounds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import PolicyRefused
from orchestrator.rules.definition_spec import validate_spec
from orchestrator.rules.policy import ContainerPolicy, PolicyError, PolicySettings
from orchestrator.rules.resource_ceilings import (
    DEFAULT_MAX_PIDS,
    DEFAULT_MAX_TIMEOUT,
    format_size,
    over_ceiling,
)

GI = 1024**3
CEILINGS = ContainerPolicy(max_memory=2 * GI, max_cpus=2, max_pids=100, max_timeout=3600)


def container(**resources: Any) -> dict[str, Any]:
    return {"image": "busybox", "resources": resources}


def test_the_defaults_are_this_hosts_size_and_the_modules_bounds() -> None:
    policy = ContainerPolicy()
    assert policy.max_memory == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert policy.max_cpus == os.cpu_count()
    assert policy.max_pids == DEFAULT_MAX_PIDS == 32768
    assert policy.max_timeout == DEFAULT_MAX_TIMEOUT == 7 * 86400


def test_a_petabyte_of_memory_is_refused_by_default() -> None:
    spec = validate_spec({"name": "big", "image": "busybox", "resources": {"memory": "1Pi"}}, "x")
    with pytest.raises(PolicyRefused) as caught:
        ContainerPolicy().check(spec.container_options(), timeout=spec.timeout)
    assert caught.value.field == "resources.memory"
    assert caught.value.message.startswith(
        "resources.memory: 1Pi is more than the server's policy allows (at most "
    )
    assert caught.value.message.endswith(", set by ORCH_POLICY_MAX_MEMORY)")
    assert caught.value.code == "policy_refused"  # a 403, as every policy refusal


@pytest.mark.parametrize(
    ("resources", "timeout", "message"),
    [
        (
            {"memory": 2 * GI + 1},
            None,
            "resources.memory: 2147483649 bytes (about 2.0Gi) is more than the server's policy "
            "allows (at most 2Gi, set by ORCH_POLICY_MAX_MEMORY)",
        ),
        (
            {"cpus": 2.5},
            None,
            "resources.cpus: 2.5 is more than the server's policy allows "
            "(at most 2, set by ORCH_POLICY_MAX_CPUS)",
        ),
        (
            {"pids": 101},
            None,
            "resources.pids: 101 is more than the server's policy allows "
            "(at most 100, set by ORCH_POLICY_MAX_PIDS)",
        ),
        (
            {},
            3601,
            "timeout: 1h1s is more than the server's policy allows "
            "(at most 1h, set by ORCH_POLICY_MAX_TIMEOUT)",
        ),
    ],
    ids=["memory", "cpus", "pids", "timeout"],
)
def test_over_a_ceiling_is_refused_naming_the_field_and_the_setting(
    resources: dict[str, Any], timeout: float | None, message: str
) -> None:
    for check in (CEILINGS.check, CEILINGS.resolve_for_runner):
        with pytest.raises(PolicyRefused) as caught:
            check(container(**resources), timeout=timeout)
        assert caught.value.message == message
        assert caught.value.field == message.split(":")[0]


def test_at_a_ceiling_or_unset_is_within_it() -> None:
    at = {"memory": 2 * GI, "cpus": 2.0, "pids": 100, "shm_size": 64 * GI, "gpus": "all"}
    assert over_ceiling(CEILINGS, at, 3600) is None
    CEILINGS.check(container(**at), timeout=3600)
    assert CEILINGS.resolve_for_runner(container(**at), timeout=3600) == container(**at)
    unset = {"memory": None, "cpus": None, "pids": None}
    assert over_ceiling(CEILINGS, unset, None) is None
    assert over_ceiling(CEILINGS, None, None) is None
    CEILINGS.check({"image": "busybox"})


def test_the_first_excess_is_the_one_named() -> None:
    excess = over_ceiling(CEILINGS, {"memory": 4 * GI, "pids": 1000}, 7200)
    assert excess is not None
    assert (excess.field, excess.asked, excess.ceiling, excess.setting) == (
        "resources.memory",
        "4Gi",
        "2Gi",
        "max_memory",
    )
    # The other policy refusals come first: a definition is refused for what it must not do.
    with pytest.raises(PolicyRefused, match="ORCH_POLICY_ALLOW_PRIVILEGED"):
        CEILINGS.check({**container(memory=4 * GI), "privileged": True})


def test_ceilings_are_written_as_definitions_write_sizes_and_durations(tmp_path: Path) -> None:
    written = PolicySettings.model_validate(
        {"max_memory": "512Mi", "max_cpus": "0.5", "max_pids": "64", "max_timeout": "1h30m"}
    )
    assert (written.max_memory, written.max_cpus, written.max_pids, written.max_timeout) == (
        512 * 1024**2,
        0.5,
        64,
        5400.0,
    )
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("max_memory: 8Gi\nmax_timeout: 2d\n")
    policy = ContainerPolicy.from_settings(written, policy_file=policy_file, docker_host=None)
    assert (policy.max_memory, policy.max_cpus, policy.max_timeout) == (8 * GI, 0.5, 172800.0)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("max_memory: lots\n", "max_memory: Value error, 'lots' is not a size"),
        ("max_memory: 0\n", "max_memory: Value error, must be greater than zero"),
        ("max_cpus: 0\n", "max_cpus: Input should be greater than 0"),
        ("max_pids: 0\n", "max_pids: Input should be greater than or equal to 1"),
        ("max_timeout: soon\n", "max_timeout: Value error, 'soon' is not a duration"),
    ],
)
def test_a_bad_ceiling_is_refused_naming_it(tmp_path: Path, text: str, problem: str) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(text)
    with pytest.raises(PolicyError) as caught:
        ContainerPolicy.from_settings(PolicySettings(), policy_file=policy_file, docker_host=None)
    assert problem in caught.value.message


def test_sizes_are_shown_as_people_write_them() -> None:
    assert format_size(1024**5) == "1Pi"
    assert format_size(64 * 1024**2) == "64Mi"
    assert format_size(1536 * 1024**2) == "1536Mi"
    assert format_size(25_275_973_632) == "25275973632 bytes (about 23.5Gi)"
    assert format_size(1000) == "1000 bytes"
