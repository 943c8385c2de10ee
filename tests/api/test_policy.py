"""The container policy: risky options are refused (403 naming the option) at registration, at
submit and by the runner, unless the server's policy allows them; containers are hardened."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import pytest

from orchestrator.config import Settings
from orchestrator.errors import DefinitionInvalid, PolicyRefused
from orchestrator.rules.definition_spec import VolumeEntry, parse_volume, validate_spec
from orchestrator.rules.policy import (
    ContainerPolicy,
    PolicyError,
    capability_name,
    exposes_docker_socket,
    full_image,
)

from ..conftest import TEST_IMAGE, LiveServer, containers_of, wait_for

DEFINITIONS = "/v1/projects/default/definitions"


def spec(**fields: Any) -> dict[str, Any]:
    return {"name": "risky", "image": TEST_IMAGE, "command": ["true"], **fields}


# (definition fields, the field named in the refusal, the setting that allows it, its value)
REFUSED = [
    ({"privileged": True}, "privileged", "ORCH_POLICY_ALLOW_PRIVILEGED", {}),
    ({"network": "host"}, "network", "ORCH_POLICY_ALLOW_HOST_NETWORK", {}),
    ({"network": "container:other"}, "network", "ORCH_POLICY_ALLOW_HOST_NETWORK", {}),
    ({"network": "bridge"}, "network", "ORCH_POLICY_ALLOWED_NETWORKS", {}),
    ({"network": "backend"}, "network", "ORCH_POLICY_ALLOWED_NETWORKS", {"bridge"}),
    ({"volumes": ["data:/d", "shared:models:/m:ro"]}, "volumes[1]", "SHARED_VOLUMES", {}),
    ({"volumes": ["shared:models:/m"]}, "volumes[0]", "SHARED_VOLUMES", {"data"}),
    ({"pid": "host"}, "pid", "ORCH_POLICY_ALLOW_HOST_PID", {}),
    ({"ipc": "host"}, "ipc", "ORCH_POLICY_ALLOW_HOST_IPC", {}),
    ({"userns": "host"}, "userns", "ORCH_POLICY_ALLOW_HOST_USERNS", {}),
    ({"volumes": ["cache:/c", "/etc:/host-etc:ro"]}, "volumes[1]", "HOST_MOUNTS", {}),
    ({"volumes": ["/var/run/docker.sock:/s"]}, "volumes[0]", "HOST_MOUNTS", {}),
    ({"cap_add": ["NET_ADMIN"]}, "cap_add[0]", "ORCH_POLICY_ALLOW_CAPABILITIES", {}),
    ({"cap_add": ["CHOWN", "SYS_ADMIN"]}, "cap_add[1]", "CAPABILITIES", {"CHOWN"}),
    ({"devices": ["/dev/null:/dev/x"]}, "devices", "ORCH_POLICY_ALLOW_DEVICES", {}),
    ({"image": "evil.example.com/miner:1"}, "image", "ORCH_POLICY_ALLOWED_IMAGES", {"busybox:"}),
]


@pytest.mark.parametrize(("fields", "field", "setting", "allowed"), REFUSED)
def test_policy_refuses_each_option_naming_it(
    fields: dict[str, Any], field: str, setting: str, allowed: set[str]
) -> None:
    policy = ContainerPolicy(
        allow_capabilities=sorted(allowed) if field.startswith("cap_add") else [],
        allowed_images=sorted(allowed) if field == "image" else [],
        allowed_networks=sorted(allowed) if field == "network" else [],
        shared_volumes=sorted(allowed) if field.startswith("volumes") else [],
    )
    with pytest.raises(Exception) as caught:
        policy.check(spec(**fields))
    error: Any = caught.value
    assert error.code == "policy_refused"
    assert error.field == field
    assert setting in error.message
    assert error.message.startswith(f"{field}: ")


def test_the_docker_socket_needs_its_own_permission_even_with_host_mounts() -> None:
    mounts = ContainerPolicy(allow_host_mounts=True)
    mounts.check(spec(volumes=["/srv/data:/data:ro"]))
    for source in ("/var/run/docker.sock", "/run/docker.sock", "/var/run", "/run/", "/", "/var"):
        with pytest.raises(Exception, match="ORCH_POLICY_ALLOW_DOCKER_SOCKET"):
            mounts.check(spec(volumes=[f"{source}:/mnt"]))
    ContainerPolicy(allow_host_mounts=True, allow_docker_socket=True).check(
        spec(volumes=["/var/run/docker.sock:/var/run/docker.sock"])
    )


def test_everything_is_allowed_when_the_policy_says_so() -> None:
    ContainerPolicy(
        allow_privileged=True,
        allow_host_network=True,
        allow_host_pid=True,
        allow_host_ipc=True,
        allow_host_userns=True,
        allow_host_mounts=True,
        allow_devices=True,
        allow_capabilities=["all"],
        allowed_images=["docker.io/library/"],
        allowed_networks=["bridge"],
        shared_volumes=["models"],
    ).check(
        spec(
            privileged=True,
            network="host",
            pid="host",
            ipc="host",
            userns="host",
            volumes=["/srv:/srv", "shared:models:/models:ro"],
            devices=["/dev/fuse"],
            cap_add=["cap_sys_admin"],
        )
    )


def test_a_network_or_volume_of_the_project_alone_needs_no_permission() -> None:
    policy = ContainerPolicy()
    for network in (None, "none"):
        policy.check(spec(network=network, volumes=["data:/data", "shared:/shared:ro"]))
    ContainerPolicy(allowed_networks=["bridge"]).check(spec(network="bridge"))


def test_volume_entries_say_whose_volume_they_mount() -> None:
    assert parse_volume("data:/data") == VolumeEntry("project", "data", "/data")
    # A volume named "shared" is the project's own; ``shared:<name>:`` asks for a shared one.
    assert parse_volume("shared:/s:ro") == VolumeEntry("project", "shared", "/s:ro")
    assert parse_volume("shared:models:/m:ro") == VolumeEntry("shared", "models", "/m:ro")
    assert parse_volume("/srv/in:/in") == VolumeEntry("host", "/srv/in", "/in")
    for bad in ("shared:/srv/in:/in", "shared:bad name:/m", "shared:models"):
        with pytest.raises(DefinitionInvalid, match=r"volumes\[0\]"):
            validate_spec(spec(volumes=[bad]), "test")


def test_names_and_paths_are_normalized() -> None:
    assert capability_name(" cap_net_admin ") == "NET_ADMIN"
    assert full_image("busybox:1.36") == "docker.io/library/busybox:1.36"
    assert full_image("bitnami/redis") == "docker.io/bitnami/redis"
    assert full_image("ghcr.io/org/app:1") == "ghcr.io/org/app:1"
    assert full_image("localhost:5000/app") == "localhost:5000/app"
    assert exposes_docker_socket("/var/run/../run/docker.sock")
    assert exposes_docker_socket("/run")
    assert exposes_docker_socket("//run")  # POSIX keeps two leading slashes; Linux does not
    assert exposes_docker_socket("//var/run/docker.sock")
    assert not exposes_docker_socket("/var/lib/data")
    assert not exposes_docker_socket("/run2")


def test_policy_file_overrides_settings_and_bad_files_are_clear(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("allow_privileged: true\nallow_capabilities: [net_admin]\n")
    settings = Settings(policy_file=policy_file, policy_allow_host_network=True)
    policy = settings.container_policy()
    assert policy.allow_privileged and policy.allow_host_network
    assert policy.allow_capabilities == ["NET_ADMIN"]

    policy_file.write_text("allow_priviledged: true\n")
    with pytest.raises(PolicyError, match=r"unknown setting.*allow_priviledged"):
        settings.container_policy()
    policy_file.write_text("allow_privileged: [\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        settings.container_policy()
    policy_file.write_text("allow_privileged: maybe\n")
    with pytest.raises(PolicyError, match="allow_privileged"):
        settings.container_policy()
    with pytest.raises(PolicyError, match="cannot read"):
        Settings(policy_file=tmp_path / "missing.yaml").container_policy()


def test_settings_take_comma_separated_lists() -> None:
    settings = Settings(
        policy_allow_capabilities="NET_ADMIN, sys_time", policy_allowed_images="busybox:,ghcr.io/"
    )
    policy = settings.container_policy()
    assert policy.allow_capabilities == ["NET_ADMIN", "SYS_TIME"]
    assert policy.allowed_images == ["busybox:", "ghcr.io/"]


# --- against a live server ------------------------------------------------------------------


def test_registration_is_refused_with_403_naming_the_option(server: LiveServer) -> None:
    for fields, field, setting, allowed in REFUSED:
        if allowed:
            continue  # these need a policy that allows part of the definition
        response = server.http.post(DEFINITIONS, json=spec(**fields))
        assert response.status_code == 403, response.text
        body = response.json()
        assert body["code"] == "policy_refused"
        assert body["field"] == field
        assert setting in body["message"]
    yaml_body = "name: risky\nimage: busybox:1.36\nprivileged: true\n"
    response = server.http.post(
        DEFINITIONS, content=yaml_body, headers={"Content-Type": "application/yaml"}
    )
    assert response.status_code == 403
    assert response.json()["field"] == "privileged"
    assert server.http.get(f"{DEFINITIONS}/risky").status_code == 404


def test_allowed_images_are_enforced_at_registration(make_server: Any) -> None:
    server = make_server(policy_allowed_images="docker.io/library/busybox:")
    assert server.http.post(DEFINITIONS, json=spec()).status_code == 201
    response = server.http.post(DEFINITIONS, json=spec(name="other", image="alpine:3"))
    assert response.status_code == 403
    assert response.json()["field"] == "image"
    assert "docker.io/library/busybox:" in response.json()["message"]


def test_submit_rechecks_the_definition_against_todays_policy(
    make_settings: Any, make_server: Any
) -> None:
    permissive = make_server(policy_allow_capabilities="NET_ADMIN")
    permissive.register(spec(cap_add=["NET_ADMIN"]))
    permissive.stop()
    strict = make_server()
    response = strict.http.post("/v1/projects/default/jobs", json={"definition": "risky"})
    assert response.status_code == 403, response.text
    assert response.json()["field"] == "cap_add[0]"
    assert strict.http.get("/v1/projects/default/jobs").json()["items"] == []


def test_a_runner_with_a_stricter_policy_fails_the_job_without_running_it(
    make_server: Any, docker_client: docker.DockerClient
) -> None:
    api = make_server(runner_enabled=False, policy_allow_capabilities="NET_ADMIN")
    runner = make_server()
    api.register(spec(cap_add=["NET_ADMIN"]))
    job = api.submit(definition="risky")
    done = runner.wait_job(job["id"])
    assert done["status"] == "failed"
    assert "this runner's container policy refuses the job" in done["error"]
    assert "cap_add[0]" in done["error"]
    assert done["container_id"] is None
    assert containers_of(docker_client, job["id"]) == []


def test_an_allowed_option_reaches_the_container(
    make_server: Any, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in.txt").write_text("from the host\n")
    server = make_server(policy_allow_host_mounts=True, policy_allow_capabilities="NET_ADMIN")
    server.register(
        spec(
            command=["sh", "-c", "cat /in/in.txt; sleep 60"],
            volumes=[f"{shared}:/in:ro"],
            cap_add=["net_admin"],
        )
    )
    job = server.submit(definition="risky")
    wait_for(lambda: "from the host" in server.logs(job["id"]), timeout=30)
    (container,) = containers_of(docker_client, job["id"])
    assert container.attrs["HostConfig"]["CapAdd"] == ["net_admin"]
    server.http.post(f"/v1/projects/default/jobs/{job['id']}/cancel")
    assert server.wait_job(job["id"])["status"] == "cancelled"


def test_containers_are_hardened_with_default_limits(
    make_server: Any, docker_client: docker.DockerClient
) -> None:
    server = make_server(default_memory="256Mi", default_pids=200)
    server.register(spec(name="plain", command=["sleep", "60"]))
    server.register(spec(name="sized", command=["sleep", "60"], resources={"memory": "64Mi"}))
    plain = server.submit(definition="plain")
    sized = server.submit(definition="sized")
    for job in (plain, sized):
        server.wait_job(job["id"], {"running"})
    (plain_container,) = containers_of(docker_client, plain["id"])
    (sized_container,) = containers_of(docker_client, sized["id"])
    host = plain_container.attrs["HostConfig"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Memory"] == 256 * 2**20
    assert host["PidsLimit"] == 200
    assert host["Privileged"] is False
    assert host["Binds"] in (None, [])
    sized_host = sized_container.attrs["HostConfig"]
    assert sized_host["Memory"] == 64 * 2**20
    assert sized_host["SecurityOpt"] == ["no-new-privileges"]
    for job in (plain, sized):
        server.http.post(f"/v1/projects/default/jobs/{job['id']}/cancel")
        server.wait_job(job["id"])


def test_the_kernel_sees_no_new_privileges_in_the_job(server: LiveServer) -> None:
    # The flag that stops setuid binaries and file capabilities from raising privileges.
    server.register(spec(name="nnp", command=["grep", "NoNewPrivs", "/proc/self/status"]))
    job = server.submit(definition="nnp")
    assert server.wait_job(job["id"])["status"] == "succeeded"
    assert server.logs(job["id"]).split() == ["NoNewPrivs:", "1"]


# --- the engine's socket, however its path is spelled ----------------------------------------


@contextmanager
def listening(path: Path) -> Iterator[Path]:
    """A Unix socket listening at ``path`` while the block runs, as an engine's would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()
        yield path
    path.unlink()


def point(link: Path, target: str | Path) -> None:
    """Make ``link`` a symlink to ``target`` in one step, as a job could in a shared directory."""
    fresh = link.with_name(f".{link.name}.new")
    fresh.symlink_to(target)
    fresh.replace(link)


def socket_spellings(tmp_path: Path) -> list[str]:
    """Host paths that reach the engine's socket, none spelled as the rule knew it: doubled
    slashes, symlinks to the socket and to /run (one job can make them in a directory the next
    mounts) and the host's root as /proc shows it."""
    links = tmp_path / "links"
    links.mkdir()
    point(links / "sock", "/run/docker.sock")
    point(links / "run", "/run")
    return [
        "//run/docker.sock",
        "//var/run/docker.sock",
        "//run",
        str(links / "sock"),
        str(links / "run"),
        "/proc/self/root/run/docker.sock",
    ]


def test_the_docker_socket_is_refused_however_its_path_is_spelled(
    make_server: Any, tmp_path: Path
) -> None:
    sources = socket_spellings(tmp_path)
    # Registered while the policy allowed the socket; submitted after it stopped allowing it.
    permissive = make_server(
        runner_enabled=False, policy_allow_host_mounts=True, policy_allow_docker_socket=True
    )
    for index, source in enumerate(sources):
        permissive.register(spec(name=f"socket-{index}", volumes=["cache:/c", f"{source}:/s"]))
    permissive.stop()
    mounts_only = make_server(runner_enabled=False, policy_allow_host_mounts=True)
    for index, source in enumerate(sources):
        registration = mounts_only.http.post(
            DEFINITIONS, json=spec(name=f"again-{index}", volumes=["cache:/c", f"{source}:/s"])
        )
        submission = mounts_only.http.post(
            "/v1/projects/default/jobs", json={"definition": f"socket-{index}"}
        )
        for response in (registration, submission):
            assert response.status_code == 403, (source, response.text)
            body = response.json()
            assert body["code"] == "policy_refused"
            assert body["field"] == "volumes[1]"
            assert body["message"].startswith(f"volumes[1]: a bind mount of {source}")
            assert "ORCH_POLICY_ALLOW_DOCKER_SOCKET" in body["message"]
    assert mounts_only.http.get("/v1/projects/default/jobs").json()["items"] == []


def test_the_configured_engine_socket_is_guarded_too(make_server: Any, tmp_path: Path) -> None:
    # A name no list knows: only ORCH_DOCKER_HOST says that it is an engine's.
    with listening(tmp_path / "engine" / "api.sock") as engine:
        server = make_server(
            runner_enabled=False, docker_host=f"unix://{engine}", policy_allow_host_mounts=True
        )
        for source in (engine, engine.parent):
            response = server.http.post(DEFINITIONS, json=spec(volumes=[f"{source}:/e"]))
            assert response.status_code == 403, response.text
            assert response.json()["field"] == "volumes[0]"
            assert f"the engine socket {engine.resolve()}" in response.json()["message"]


def test_engine_sockets_are_found_where_they_listen(tmp_path: Path) -> None:
    policy = ContainerPolicy(allow_host_mounts=True)
    with listening(tmp_path / "app" / "app.sock") as app:
        # Any other socket is an ordinary host path...
        assert policy.resolve_for_runner(spec(volumes=[f"{app}:/a"]))["volumes"] == [
            f"{app.resolve()}:/a"
        ]
        # ...unless the runner's engine listens there.
        with pytest.raises(PolicyRefused, match="ORCH_POLICY_ALLOW_DOCKER_SOCKET"):
            ContainerPolicy(allow_host_mounts=True, docker_host=f"unix://{app}").check(
                spec(volumes=[f"{app.parent}:/a"])
            )
    # A containerd socket in a directory no list names: the kernel lists it as listening.
    with listening(tmp_path / "runtime" / "containerd.sock") as containerd:
        # A hard link of it is the same socket under a name no one lists.
        hard_link = tmp_path / "elsewhere" / "plain"
        hard_link.parent.mkdir()
        os.link(containerd, hard_link)
        for source in (containerd, containerd.parent, tmp_path, hard_link):
            with pytest.raises(PolicyRefused) as caught:
                policy.check(spec(volumes=[f"{source}:/r"]))
            assert f"the engine socket {containerd.resolve()}" in caught.value.message


def test_the_runner_mounts_the_real_path_it_checked(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    point(tmp_path / "alias", data)
    real = data.resolve()
    policy = ContainerPolicy(allow_host_mounts=True)
    container = spec(
        volumes=["cache:/cache", f"{tmp_path}/alias/:/in:ro", f"/{data}/../data:/out"],
        user="1000",
    )
    resolved = policy.resolve_for_runner(container)
    assert resolved == {**container, "volumes": ["cache:/cache", f"{real}:/in:ro", f"{real}:/out"]}
    assert container["volumes"][1] == f"{tmp_path}/alias/:/in:ro"  # the job's own, untouched
    # Every other check runs too.
    with pytest.raises(PolicyRefused, match="privileged"):
        policy.resolve_for_runner(spec(privileged=True))


def test_a_symlink_swapped_after_the_check_is_refused_at_the_runner(tmp_path: Path) -> None:
    (tmp_path / "safe").mkdir()
    link = tmp_path / "shared" / "out"
    link.parent.mkdir()
    point(link, tmp_path / "safe")
    policy = ContainerPolicy(allow_host_mounts=True)
    container = spec(volumes=[f"{link}:/data"])
    policy.check(container)
    point(link, "/run")
    with pytest.raises(PolicyRefused) as caught:
        policy.resolve_for_runner(container)
    assert caught.value.field == "volumes[0]"
    assert caught.value.message.startswith(f"volumes[0]: a bind mount of {link} (/run ")
    assert "ORCH_POLICY_ALLOW_DOCKER_SOCKET" in caught.value.message


def test_what_the_runner_cannot_see_it_refuses(tmp_path: Path) -> None:
    policy = ContainerPolicy(allow_host_mounts=True)
    # The API server may not be on the runner's host: only the runner knows what is missing.
    missing = spec(volumes=[f"{tmp_path}/later:/data"])
    policy.check(missing)
    with pytest.raises(PolicyRefused, match=r"^volumes\[0\]: .*does not exist on this runner"):
        policy.resolve_for_runner(missing)
    # Another process's files, as /proc shows them, are not the ones their path names here.
    for source in ("/proc/1/root", "/proc/self/cwd", "//proc/1/root/etc", "/proc"):
        for check in (policy.check, policy.resolve_for_runner):
            with pytest.raises(PolicyRefused, match="ORCH_POLICY_ALLOW_DOCKER_SOCKET"):
                check(spec(volumes=[f"{source}:/p"]))
    # An engine on another host: its files are not the runner's.
    remote = ContainerPolicy(allow_host_mounts=True, docker_host="tcp://build-host:2376")
    remote.check(spec(volumes=[f"{tmp_path}:/t"]))
    with pytest.raises(PolicyRefused, match=r"^volumes\[0\]: .*tcp://build-host:2376"):
        remote.resolve_for_runner(spec(volumes=[f"{tmp_path}:/t"]))


def test_a_policy_that_allows_the_socket_mounts_volumes_as_written() -> None:
    policy = ContainerPolicy(allow_host_mounts=True, allow_docker_socket=True)
    container = spec(volumes=["//run/docker.sock:/var/run/docker.sock", "/proc/1/root:/h"])
    assert policy.resolve_for_runner(container) == container


def test_a_symlink_swapped_after_submit_fails_the_job_at_the_runner(
    make_server: Any, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    (tmp_path / "safe").mkdir()
    link = tmp_path / "link"
    point(link, tmp_path / "safe")
    api = make_server(runner_enabled=False, policy_allow_host_mounts=True)
    api.register(spec(volumes=[f"{link}:/data"]))
    job = api.submit(definition="risky")
    point(link, "/run")  # what a job writing to a shared directory could do meanwhile
    runner = make_server(policy_allow_host_mounts=True)
    done = runner.wait_job(job["id"])
    assert done["status"] == "failed"
    assert "this runner's container policy refuses the job" in done["error"]
    assert f"volumes[0]: a bind mount of {link} (/run " in done["error"]
    assert done["container_id"] is None
    assert containers_of(docker_client, job["id"]) == []
