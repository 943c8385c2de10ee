"""Resubmitting a job: a new job with the same spec (definition version, queue, name,
parameters, env, secret env, input, metadata, priority, timeout, retry policy) as one already
submitted."""

from __future__ import annotations

from sqlmodel import Session

from orchestrator.rules.input_limits import InputLimits
from orchestrator.rules.policy import ContainerPolicy
from orchestrator.rules.tes_storage import TesStorage
from orchestrator.schemas.jobs import JobCreate
from orchestrator.services import job_queries, jobs, tes_tasks
from orchestrator.services.attempts import secret_values
from orchestrator.services.audit import Actor
from orchestrator.storage.models import Job
from orchestrator.storage.secret_box import SecretBox
from orchestrator.wakeups.hub import Hub


def spec_of(job: Job, box: SecretBox) -> JobCreate:
    """The submission that makes a job like ``job``. Its command is the definition's, filled
    in from the same parameters; its webhook is not carried over (its credentials are sealed
    for the first job's deliveries), nor its schedule time (the new job runs now)."""
    return JobCreate(
        definition=f"{job.definition_name}:{job.definition_version}",
        queue=job.queue,
        name=job.name,
        parameters=job.parameters,
        env=job.env,
        secret_env=secret_values(job, box),
        input=job.input,
        metadata=job.job_metadata,
        priority=job.priority,
        timeout=job.timeout,
        retry=job.container.get("retry"),
    )


def resubmit(
    session: Session,
    box: SecretBox,
    hub: Hub | None,
    project: str,
    job_id: str,
    *,
    policy: ContainerPolicy,
    limits: InputLimits,
    tes_storage: TesStorage,
    actor: Actor,
) -> Job:
    """Submit a new job with the spec of the job ``job_id`` (checked as any submission is); a
    TES task's is a new task like it (it has no definition to submit again)."""
    original = job_queries.get(session, project, job_id)
    if tes_tasks.is_task(original):
        return tes_tasks.resubmit(
            session, hub, original, policy=policy, limits=limits, storage=tes_storage, actor=actor
        )
    request = spec_of(original, box)
    return jobs.submit(
        session, box, hub, project, request, policy=policy, limits=limits, actor=actor
    )
