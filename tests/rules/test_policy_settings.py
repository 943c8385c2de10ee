"""The container policy's settings are declared once, in ``PolicySettings``: its fields are the
policy file's keys and the runner's ``ContainerPolicy``, and a policy file is checked by them."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.rules.policy import (
    POLICY_FIELDS,
    ContainerPolicy,
    PolicyError,
    PolicySettings,
    load_policy_file,
    setting_name,
)


def test_the_policy_file_keys_and_the_runner_policy_are_the_declared_fields() -> None:
    assert POLICY_FIELDS == tuple(PolicySettings.model_fields)
    assert set(ContainerPolicy.model_fields) == {*POLICY_FIELDS, "docker_host"}
    for name, field in PolicySettings.model_fields.items():
        assert field.description, f"{name} has no description"
        default = field.get_default(call_default_factory=True)
        if name.startswith("max_"):
            assert default > 0, f"{name}: a ceiling of nothing"  # a ceiling, not a permission
        else:
            assert not default, f"{name} is on by default"


def test_each_setting_is_named_by_its_field() -> None:
    assert setting_name("allow_privileged") == "ORCH_POLICY_ALLOW_PRIVILEGED"
    assert setting_name("allowed_images") == "ORCH_POLICY_ALLOWED_IMAGES"
    with pytest.raises(ValueError, match="allow_everything"):
        setting_name("allow_everything")


def test_a_refusal_names_the_setting_of_the_field_that_allows_it() -> None:
    check = ContainerPolicy().check
    for container, field in (
        ({"privileged": True}, "allow_privileged"),
        ({"network": "host"}, "allow_host_network"),
        ({"userns": "host"}, "allow_host_userns"),
        ({"cap_add": ["NET_ADMIN"]}, "allow_capabilities"),
    ):
        with pytest.raises(Exception, match=setting_name(field)):
            check({"image": "busybox", **container})


def test_an_unknown_policy_file_key_is_refused_naming_it(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("allow_privileged: true\nallow_everything: true\ndocker_host: x\n")
    with pytest.raises(PolicyError) as caught:
        load_policy_file(policy_file)
    assert caught.value.message == (
        f"ORCH_POLICY_FILE: {policy_file}: unknown setting(s) allow_everything, docker_host; "
        f"known: {', '.join(POLICY_FIELDS)}"
    )


def test_the_policy_file_overrides_the_settings_key_by_key(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("allow_privileged: true\nallow_capabilities: [cap_net_admin]\n")
    settings = PolicySettings(allow_devices=True, allow_capabilities=["SYS_TIME"])

    policy = ContainerPolicy.from_settings(settings, policy_file=policy_file, docker_host="tcp://x")

    assert policy == ContainerPolicy(
        allow_privileged=True,
        allow_devices=True,
        allow_capabilities=["NET_ADMIN"],
        docker_host="tcp://x",
    )
    assert ContainerPolicy.from_settings(settings, policy_file=None, docker_host=None) == (
        ContainerPolicy(**settings.model_dump())
    )


def test_a_bad_policy_file_value_is_refused_naming_its_key(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("allow_devices: maybe\nallowed_images: busybox\n")
    with pytest.raises(PolicyError) as caught:
        ContainerPolicy.from_settings(PolicySettings(), policy_file=policy_file, docker_host=None)
    assert caught.value.message == (
        "the container policy is not valid: "
        "allow_devices: Input should be a valid boolean, unable to interpret input; "
        "allowed_images: Input should be a valid list"
    )
