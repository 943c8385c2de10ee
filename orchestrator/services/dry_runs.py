"""A dry run of a submission: every check ``jobs.submit`` makes, and the container the job's
first attempt would run, built by the runner's own code (``containers.container_spec``).

Nothing is written: no job, event, audit row or webhook, and no container is made. What only a
stored or claimed job has (its id, its runner) is shown as a placeholder.
"""

from __future__ import annotations

from sqlmodel import Session

from orchestrator.config import Settings
from orchestrator.rules.input_limits import InputLimits
from orchestrator.rules.masking import MASK
from orchestrator.rules.policy import ContainerPolicy
from orchestrator.schemas.jobs import JobCreate, JobDryRun
from orchestrator.services import arrays, jobs, runners
from orchestrator.services.containers import container_spec
from orchestrator.storage.secret_box import SecretBox

# What stands for the values a job gets only once it is stored and claimed.
PENDING_JOB_ID = "<job-id>"
PENDING_RUNNER = "<runner>"
# A dry run shows the first attempt's container.
FIRST_ATTEMPT = 1


def dry_run(
    session: Session,
    box: SecretBox,
    project: str,
    request: JobCreate,
    *,
    policy: ContainerPolicy,
    limits: InputLimits,
    settings: Settings,
) -> JobDryRun:
    """The job ``request`` would make (checked as ``jobs.submit`` checks it: the same errors)
    and its first attempt's container, secret values as ``***``. Only reads ``session``.

    An array's container is its first child's (index 0). The container is as this server's
    settings make it (the default memory and pids limits); a runner with other settings, or
    whose policy resolves a host path further, differs there.
    """
    planned = jobs.plan(
        session, box, project, request, policy=policy, limits=limits, job_id=PENDING_JOB_ID
    )
    job = planned.job
    if job.array_size is not None and planned.definition is not None:
        # An array runs only children: show the first one's container.
        arrays.as_first_child(job, arrays.template(planned.definition, request))
    job.attempt = FIRST_ATTEMPT
    secrets = dict.fromkeys(job.secret_env_keys, MASK)
    spec = container_spec(job, secrets, PENDING_RUNNER, settings, runners.installation_id(session))
    return JobDryRun.from_row(job, spec)
