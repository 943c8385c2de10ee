"""Binding a job to its queue and definition: which queue and definition a submission names
(or its queue's default), and the job's columns that come from that definition, checked
against the submission's own values. The job service stores what this module works out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.errors import Conflict, InvalidRequest, NotFound
from orchestrator.rules.definition_spec import (
    CONTAINER_FIELDS,
    RESERVED_ENV_PREFIX,
    RetryPolicy,
)
from orchestrator.rules.fields import MAX_INT, storable
from orchestrator.rules.input_limits import InputLimits
from orchestrator.rules.states import UNFINISHED
from orchestrator.rules.templating import ParameterValue, placeholders, substitute
from orchestrator.schemas.jobs import JobCreate
from orchestrator.services import definitions, projects
from orchestrator.storage.models import Definition, Job, Queue


def resolve_definition(
    session: Session, project: str, queue: Queue, reference: str | None
) -> Definition | None:
    """The definition a job of ``queue`` runs: ``reference``, else the queue's default; None
    when neither is set. The one place a job's definition is chosen."""
    reference = reference or queue.default_definition
    if reference is None:
        return None
    name, version = definitions.parse_reference(reference)
    return definitions.get(session, project, name, version)


def _queue(session: Session, project: str, name: str) -> Queue:
    """The queue a job goes to (read here: the queue service sits above this one)."""
    queue = None
    if storable(name):
        statement = select(Queue).where(Queue.project == project, Queue.name == name)
        queue = session.exec(statement).first()
    if queue is None:
        # A missing project is the error to report; looked up only now, a query saved per job.
        projects.get(session, project)
        raise NotFound(f"queue '{name}' not found in project '{project}'", field="queue")
    return queue


def _joined(with_version: bool) -> sa.Select[Queue, Definition]:
    """A queue and the latest of a definition's versions (or one version), joined: built once,
    with parameters (``project``, ``queue``, ``name``, ``version``), as building costs more CPU
    than running it."""
    project: sa.BindParameter[str] = sa.bindparam("project")
    joined = sa.and_(
        col(Definition.project) == project, col(Definition.name) == sa.bindparam("name")
    )
    if with_version:
        joined = sa.and_(joined, col(Definition.version) == sa.bindparam("version"))
    return (
        sa.select(Queue, Definition)
        .outerjoin(Definition, joined)
        .where(col(Queue.project) == project, col(Queue.name) == sa.bindparam("queue"))
        # The latest version, when the reference names none.
        .order_by(sa.desc(col(Definition.version)))
        .limit(1)
    )


_JOINED = _joined(with_version=False)
_JOINED_VERSION = _joined(with_version=True)


def queue_and_definition(
    session: Session, project: str, request: JobCreate
) -> tuple[Queue, Definition | None]:
    """A submission's queue and the definition its job runs (as ``resolve_definition``).

    When the submission names its definition (the usual case) both come from one query, the
    definition joined to the queue; else, or when that query misses, they are looked up one
    after the other, which also says what is missing: the project, the queue or the definition.
    """
    reference = _matchable_reference(request.definition)
    if reference is None or not storable(request.queue):
        queue = _queue(session, project, request.queue)
        return queue, resolve_definition(session, project, queue, request.definition)
    name, version = reference
    statement = _JOINED if version is None else _JOINED_VERSION
    values: dict[str, object] = {"project": project, "queue": request.queue, "name": name}
    if version is not None:
        values["version"] = version
    row = session.execute(statement, values).first()
    if row is None:
        queue = _queue(session, project, request.queue)
        return queue, resolve_definition(session, project, queue, request.definition)
    queue, found = row
    # An outer join's missing definition is None, whatever the row's type says.
    definition: Definition | None = found
    if definition is None:
        definition = definitions.get(session, project, name, version)
    return queue, definition


def _matchable_reference(reference: str | None) -> tuple[str, int | None] | None:
    """``reference`` as (name, version), when it is one a stored definition could have."""
    if reference is None:
        return None
    try:
        name, version = definitions.parse_reference(reference)
    except InvalidRequest:
        return None
    if not storable(name) or (version is not None and not 1 <= version <= MAX_INT):
        return None
    return name, version


def no_definition(queue: Queue) -> InvalidRequest:
    """The error for a submission with no definition to run when its queue has no default."""
    return InvalidRequest(
        f"definition is required: queue '{queue.name}' has no default definition",
        field="definition",
    )


def bind(
    definition: Definition,
    *,
    parameters: dict[str, Any],
    env: dict[str, str],
    secret_env: Sequence[str],
    command: list[str] | None,
    timeout: float | None,
    limits: InputLimits | None,
    implicit: Mapping[str, ParameterValue] | None = None,
    retry: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The job's columns that come from its definition, merged with the submission's own
    values (checked: reserved and required env, counts, unknown parameters, ``Param::``
    substitution). ``implicit``: substitution values no one declares (an array's
    ``array_index``), stored with none of the job's parameters. ``retry``: the submission's
    own retry fields (``JobCreate.retry_fields``), laid over the definition's policy."""
    spec = definitions.current_spec(definition)
    reference = f"{definition.name}:{definition.version}"
    _check_env(env, secret_env, spec["secrets"], reference)
    merged_parameters = {**spec["parameters"], **parameters}
    merged_env = {**spec["env"], **env}
    if limits is not None:
        limits.check_counts(
            len(merged_parameters),
            len(merged_env) + len(secret_env),
            " with the definition's defaults",
        )
    _check_parameters(parameters, spec, command, reference)
    template = command if command is not None else spec["command"]
    substituted = None
    if template is not None:
        field = "command" if command is not None else f"definition {reference} command"
        values = {**merged_parameters, **(implicit or {})}
        substituted = substitute(template, values, field=field)
    container = {key: spec[key] for key in CONTAINER_FIELDS}
    if retry:
        merged = RetryPolicy.model_validate({**spec["retry"], **retry})
        container["retry"] = merged.model_dump(mode="json")
    return {
        "definition_name": definition.name,
        "definition_version": definition.version,
        "max_attempts": container["retry"]["attempts"],
        "command": substituted,
        "parameters": merged_parameters,
        "env": merged_env,
        "container": container,
        "timeout": timeout if timeout is not None else spec["timeout"],
    }


def _check_parameters(
    parameters: dict[str, Any], spec: dict[str, Any], command: list[str] | None, definition: str
) -> None:
    """Refuse a parameter that nothing reads: the definition neither declares it (a default)
    nor uses it (a placeholder in its command), and the submission's own command does not use
    it either. Such a name is a typo (``-p frmae=2``), which would run with the default."""
    known = {*spec["parameters"], *placeholders(spec["command"] or ())}
    known.update(placeholders(command or ()))
    for name in parameters:
        if name not in known:
            names = ", ".join(sorted(known)) or "none"
            raise InvalidRequest(
                f"parameters.{name}: definition '{definition}' neither declares nor uses a "
                f"parameter of that name (its parameters: {names})",
                field=f"parameters.{name}",
            )


def _check_env(
    env: dict[str, str], secret_env: Sequence[str], declared_secrets: Sequence[str], definition: str
) -> None:
    for field, names in (("env", env), ("secret_env", secret_env)):
        for name in names:
            if name.upper().startswith(RESERVED_ENV_PREFIX):
                raise InvalidRequest(
                    f"{field}.{name}: names starting with {RESERVED_ENV_PREFIX} are reserved",
                    field=f"{field}.{name}",
                )
    for name in env:
        if name in secret_env:
            raise InvalidRequest(
                f"env.{name}: also given in secret_env; give it in one of them",
                field=f"env.{name}",
            )
    for name in declared_secrets:
        if name not in secret_env:
            raise InvalidRequest(
                f"secret_env.{name}: required by definition '{definition}'",
                field=f"secret_env.{name}",
            )


def check_name_free(session: Session, project: str, queue: str, name: str) -> None:
    """Refuse ``name`` when an unfinished job of the queue has it already."""
    taken = session.exec(
        select(Job.id).where(
            Job.project == project,
            Job.queue == queue,
            Job.name == name,
            col(Job.status).in_(UNFINISHED),
        )
    ).first()
    if taken is not None:
        raise Conflict(
            f"an unfinished job named '{name}' already exists in queue '{queue}' ({taken})",
            field="name",
        )
