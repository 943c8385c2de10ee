"""What an attempt's container is: its name, and its spec (env, labels, resources, options),
and the job's output read back from it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from orchestrator.config import Settings
from orchestrator.docker.spec import INSTALLATION_LABEL, LABEL_PREFIX, PROJECT_LABEL, ContainerSpec
from orchestrator.rules.definition_spec import parse_volume
from orchestrator.rules.masking import Masker
from orchestrator.runner.run_dirs import INPUT_PATH, OUTPUT_PATH, RUN_DIR
from orchestrator.storage.models import Job


def attempt_name(job_id: str, attempt: int) -> str:
    """The name of an attempt's container and of its run directory."""
    return f"orch-{job_id}-{attempt}"


def project_network(installation: str, project: str) -> str:
    """The name of a project's own network on an engine: ``orch-<installation>-<project>``,
    with the installation id's first 12 characters (its labels tell the rest)."""
    return f"orch-{installation[:12]}-{project}"


def project_volume(installation: str, project: str, volume: str) -> str:
    """The engine's name of the project's own volume ``volume``: its network's name, a dot,
    and the name (a project name holds no dot, so no two projects' names meet)."""
    return f"{project_network(installation, project)}.{volume}"


def container_name(job: Job) -> str:
    """The name of the container of ``job``'s current attempt."""
    return attempt_name(job.id, job.attempt)


def container_spec(
    job: Job,
    secrets: dict[str, str],
    runner: str,
    settings: Settings,
    installation: str,
    run_dir: str | None = None,
    volumes: list[str] | None = None,
) -> ContainerSpec:
    """The container of ``job``'s current attempt: env, labels, resources and options.

    A job whose definition sets no memory or pids limit gets the server's defaults.
    ``run_dir``: the runner's directory to mount at ``/run/orchestrator``, if any;
    ``volumes``: the job's volumes as the runner's policy resolved them (real host paths).
    The container joins its project's own network unless its definition names another, and
    each named volume is the project's own unless the definition asks for a shared one.
    """
    options = job.container
    resources = options["resources"]
    env = {
        **job.env,
        **secrets,
        "ORCH_JOB_ID": job.id,
        "ORCH_ATTEMPT": str(job.attempt),
        "ORCH_PROJECT": job.project,
        "ORCH_QUEUE": job.queue,
        "ORCH_INPUT": INPUT_PATH,
        "ORCH_OUTPUT": OUTPUT_PATH,
    }
    labels = {
        **options["labels"],
        INSTALLATION_LABEL: installation,
        f"{LABEL_PREFIX}job-id": job.id,
        f"{LABEL_PREFIX}attempt": str(job.attempt),
        f"{LABEL_PREFIX}runner": runner,
        PROJECT_LABEL: job.project,
        f"{LABEL_PREFIX}queue": job.queue,
    }
    own_volumes = []
    binds = []
    for volume in options["volumes"] if volumes is None else volumes:
        entry = parse_volume(volume)
        if entry.kind == "project":
            name = project_volume(installation, job.project, entry.source)
            own_volumes.append(name)
            binds.append(f"{name}:{entry.rest}")
        else:
            binds.append(f"{entry.source}:{entry.rest}")
    network = options.get("network")
    return ContainerSpec(
        name=container_name(job),
        image=options["image"],
        command=job.command,
        env=env,
        labels=labels,
        working_dir=options["working_dir"],
        user=options["user"],
        network=network or project_network(installation, job.project),
        volumes=binds,
        privileged=options["privileged"],
        cap_add=options["cap_add"],
        devices=options["devices"],
        pid=options.get("pid"),
        ipc=options.get("ipc"),
        userns=options.get("userns"),
        cpus=resources["cpus"],
        memory=resources["memory"] or settings.default_memory or None,
        pids=resources["pids"] or settings.default_pids or None,
        shm_size=resources["shm_size"],
        gpus=resources["gpus"],
        mounts={RUN_DIR: run_dir} if run_dir else {},
        own_labels={INSTALLATION_LABEL: installation, PROJECT_LABEL: job.project},
        own_network=network is None,
        own_volumes=tuple(own_volumes),
    )


def parse_output(raw: bytes | None, secrets: Iterable[str]) -> tuple[Any, str | None]:
    """(output, error) from the bytes at ``$ORCH_OUTPUT``, secret values masked.

    Invalid JSON is an error of the attempt, not a crash of the runner.
    """
    if raw is None or not raw.strip():
        return None, None
    try:
        text = raw.decode()
        json.loads(text)
    except (ValueError, RecursionError) as exc:
        return None, f"the output at {OUTPUT_PATH} is not valid JSON: {exc}"
    masker = Masker(secrets)
    try:
        # Masking the text catches a value written outside a string (a number); masking the
        # decoded strings catches it however JSON escaped it ("\u0041" for "A").
        return _mask_strings(json.loads(masker(text)), masker), None
    except (ValueError, RecursionError):
        return None, "the output was withheld: masking a secret value in it broke its JSON"


def _mask_strings(value: Any, masker: Masker) -> Any:
    """Decoded JSON with secret values masked in every string, object keys included."""
    if isinstance(value, str):
        return masker(value)
    if isinstance(value, list):
        return [_mask_strings(item, masker) for item in value]
    if isinstance(value, dict):
        return {masker(key): _mask_strings(item, masker) for key, item in value.items()}
    return value
