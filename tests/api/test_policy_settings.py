"""Each field of the container policy, declared once in ``PolicySettings``, is the setting
``ORCH_POLICY_<FIELD>`` (or the keyword ``policy_<field>`` of ``Settings``) and the policy file's
key ``<field>``, with the same effect; a bad value is reported under its variable."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_origin

import pytest
import yaml
from pydantic import ValidationError

from orchestrator.cli.output import setting_errors
from orchestrator.config import Settings
from orchestrator.rules.policy import (
    POLICY_FIELDS,
    ContainerPolicy,
    PolicySettings,
    setting_name,
)


@pytest.fixture(autouse=True)
def _no_policy_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for field in POLICY_FIELDS:
        monkeypatch.delenv(setting_name(field), raising=False)
    monkeypatch.delenv("ORCH_POLICY_FILE", raising=False)
    monkeypatch.delenv("ORCH_POLICY", raising=False)
    # The engine the policy guards is part of it: the same (the default) in every test here.
    monkeypatch.delenv("ORCH_DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_HOST", raising=False)


# A value of each ceiling other than its default: as its variable is written, and in YAML.
CEILINGS = {
    "max_memory": ("64Mi", "64Mi"),
    "max_cpus": ("0.5", 0.5),
    "max_pids": ("64", 64),
    "max_timeout": ("1h30m", "1h30m"),
}


def non_default(field: str) -> tuple[str, Any]:
    """A value of ``field`` other than its default: as its variable is written, and in YAML."""
    if field in CEILINGS:
        return CEILINGS[field]
    annotation = PolicySettings.model_fields[field].annotation
    if annotation is bool:
        return "true", True
    if get_origin(annotation) is list:
        return "net_admin, busybox:", ["net_admin", "busybox:"]
    pytest.fail(f"{field}: teach this test a value of {annotation}")


def policy_of(tmp_path: Path, **settings: Any) -> ContainerPolicy:
    return Settings(data_dir=tmp_path, **settings).container_policy()


@pytest.mark.parametrize("field", POLICY_FIELDS)
def test_a_field_is_its_variable_its_keyword_and_its_file_key(
    field: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written, loaded = non_default(field)
    default = getattr(ContainerPolicy(), field)

    by_keyword = policy_of(tmp_path, **{f"policy_{field}": written})
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump({field: loaded}))
    by_file = policy_of(tmp_path, policy_file=policy_file)
    monkeypatch.setenv(setting_name(field), written)
    by_variable = policy_of(tmp_path)

    assert getattr(by_variable, field) != default
    assert by_variable == by_keyword == by_file
    assert by_variable.model_dump(exclude={field}) == ContainerPolicy().model_dump(exclude={field})


def test_a_keyword_wins_over_the_variable_and_the_file_over_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_POLICY_ALLOW_PRIVILEGED", "true")
    monkeypatch.setenv("ORCH_POLICY_ALLOW_DEVICES", "true")
    monkeypatch.setenv("ORCH_POLICY_ALLOWED_IMAGES", "busybox:")
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("allowed_images: [ghcr.io/]\n")

    policy = policy_of(tmp_path, policy_allow_privileged=False, policy_file=policy_file)

    assert not policy.allow_privileged
    assert policy.allow_devices
    assert policy.allowed_images == ["ghcr.io/"]


def test_the_nested_policy_is_settable_whole_under_its_keywords(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        policy=PolicySettings(allow_devices=True, allow_privileged=True),
        policy_allow_privileged=False,
    )
    assert settings.policy == PolicySettings(allow_devices=True)


def test_a_bad_value_is_reported_under_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_PORT", "0")
    monkeypatch.setenv("ORCH_POLICY_ALLOW_DEVICES", "maybe")
    monkeypatch.setenv("ORCH_DEFAULT_PIDS", "-1")
    with pytest.raises(ValidationError) as caught:
        Settings(data_dir=tmp_path)
    assert setting_errors(caught.value) == (
        "ORCH_PORT: Input should be greater than or equal to 1; "
        "ORCH_POLICY_ALLOW_DEVICES: Input should be a valid boolean, unable to interpret input; "
        "ORCH_DEFAULT_PIDS: Input should be greater than or equal to 0"
    )
    with pytest.raises(ValidationError) as caught:
        Settings(data_dir=tmp_path, port=8000, default_pids=1, policy_allowed_images=[1])
    assert setting_errors(caught.value) == (
        "ORCH_POLICY_ALLOW_DEVICES: Input should be a valid boolean, unable to interpret input; "
        "ORCH_POLICY_ALLOWED_IMAGES: Input should be a valid string"
    )


def test_lists_are_comma_separated_never_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_POLICY_ALLOWED_IMAGES", '["busybox:"]')
    assert policy_of(tmp_path).allowed_images == ['["busybox:"]']


def test_the_whole_policy_is_no_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_POLICY", '{"allow_privileged": true}')
    assert policy_of(tmp_path) == ContainerPolicy()
    monkeypatch.setenv("ORCH_POLICY", "not json")
    assert policy_of(tmp_path) == ContainerPolicy()
