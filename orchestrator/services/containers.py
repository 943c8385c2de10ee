"""The container of a job's attempt, computed from the job: its env, labels, resources and
options. The runner creates exactly this (``runner/attempt.py``), and a dry run shows it
(``jobs.dry_run``), so what a dry run shows cannot drift from what runs."""

from __future__ import annotations

from orchestrator.config import Settings
from orchestrator.rules import arrays
from orchestrator.rules.containers import (
    INPUT_PATH,
    INSTALLATION_LABEL,
    LABEL_PREFIX,
    OUTPUT_PATH,
    PROJECT_LABEL,
    RUN_DIR,
    ContainerSpec,
    attempt_name,
    project_network,
    project_volume,
)
from orchestrator.rules.definition_spec import parse_volume
from orchestrator.storage.models import Job


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
    if job.array_index is not None and job.array_size is not None:
        env.update(arrays.environment(job.array_index, job.array_size))
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
