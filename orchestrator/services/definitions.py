"""Job definitions: registering versions and reading them back.

A definition version is immutable. Registering a spec identical to the latest version returns
that version; any change makes version n+1. The spec and its loading are ``rules.definition_spec``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic import (
    ValidationError,
)
from sqlmodel import Session, col, select

from orchestrator.errors import DefinitionInvalid, NotFound, OrchestratorError
from orchestrator.rules.definition_spec import DefinitionSpec, spec_hash
from orchestrator.rules.fields import (
    MAX_INT,
    NAME_PATTERN,
    storable,
)
from orchestrator.rules.input_limits import InputLimits
from orchestrator.rules.policy import ContainerPolicy
from orchestrator.rules.project_caps import Capped, ProjectCaps
from orchestrator.services import audit
from orchestrator.services.audit import Actor
from orchestrator.storage.db import serialize
from orchestrator.storage.models import Definition


@dataclass(frozen=True)
class Registered:
    """The outcome of registering a spec: its version row and whether it was new."""

    definition: Definition
    created: bool


def register(
    session: Session,
    project: str,
    spec: DefinitionSpec,
    *,
    policy: ContainerPolicy,
    limits: InputLimits,
    caps: ProjectCaps,
    actor: Actor | None = None,
) -> Registered:
    """Store ``spec`` as the next version, unless it equals the latest version.

    The spec must pass the container policy (403 naming the option or the ceiling, its
    timeout included) and the input limits; a new version must be within ``caps`` (a new
    name among the project's definitions, a new version among the name's): LimitReached.
    Registering the latest version again is never refused by them.
    """
    policy.check(spec.container_options(), timeout=spec.timeout)
    limits.check_counts(len(spec.parameters), len(spec.env) + len(spec.secrets))
    canonical = spec.canonical()
    digest = spec_hash(canonical)
    serialize(session, f"definition:{project}:{spec.name}")
    latest = _latest(session, project, spec.name)
    if latest is not None and _normalized_hash(latest) == digest:
        return Registered(latest, created=False)
    if latest is None:
        _check_name_cap(session, project, caps)
    else:
        caps.check(Capped.VERSIONS, latest.version, f"definition '{spec.name}'")
    definition = Definition(
        project=project,
        name=spec.name,
        version=(latest.version + 1) if latest else 1,
        spec=canonical,
        spec_hash=digest,
    )
    session.add(definition)
    session.flush()
    if actor is not None:
        resource = f"definition/{definition.name}:{definition.version}"
        audit.record(session, actor, "definition_registered", resource, project)
    return Registered(definition, created=True)


def _check_name_cap(session: Session, project: str, caps: ProjectCaps) -> None:
    # Counted under the lock, so two new names at the cap cannot both pass. Taken after the
    # name's own lock, always in that order: no deadlock with another name's registration.
    serialize(session, f"cap:definitions:{project}")
    names = session.exec(
        select(sa.func.count(sa.distinct(col(Definition.name)))).where(
            Definition.project == project
        )
    ).one()
    caps.check(Capped.DEFINITIONS, names, f"project '{project}'")


def register_all(
    session: Session,
    project: str,
    specs: Sequence[DefinitionSpec],
    *,
    policy: ContainerPolicy,
    limits: InputLimits,
    caps: ProjectCaps,
    actor: Actor | None = None,
) -> list[Registered]:
    """Register every spec, in order, in the caller's transaction, as ``register`` does each.

    All or none: an error names the spec at fault by its index (``definitions[2]: ...``, field
    ``definitions[2].privileged``), and the caller's rollback leaves none registered.
    """
    # Each definition's lock taken in name order first, so two batches naming the same
    # definitions in different orders cannot deadlock (on PostgreSQL).
    for name in sorted({spec.name for spec in specs}):
        serialize(session, f"definition:{project}:{name}")
    registered = []
    for index, spec in enumerate(specs):
        try:
            registered.append(
                register(
                    session, project, spec, policy=policy, limits=limits, caps=caps, actor=actor
                )
            )
        except OrchestratorError as exc:
            where = f"definitions[{index}]"
            field = f"{where}.{exc.field}" if exc.field else where
            raise type(exc)(f"{where}: {exc.message}", field=field) from None
    return registered


def current_spec(definition: Definition) -> dict[str, Any]:
    """A stored spec as today's model reads it: fields added since it was stored get their
    defaults (a spec that no longer validates is returned as stored)."""
    try:
        return DefinitionSpec.model_validate(definition.spec).canonical()
    except ValidationError:
        return definition.spec


def _normalized_hash(definition: Definition) -> str:
    # An identical spec registered again stays the same version across upgrades of the model.
    return spec_hash(current_spec(definition))


def _latest(session: Session, project: str, name: str) -> Definition | None:
    statement = (
        select(Definition)
        .where(Definition.project == project, Definition.name == name)
        .order_by(sa.desc(col(Definition.version)))
        .limit(1)
    )
    return session.exec(statement).first()


def parse_reference(reference: str) -> tuple[str, int | None]:
    """``name`` or ``name:version`` -> (name, version or None for the latest)."""
    name, _, version = reference.partition(":")
    if not re.match(NAME_PATTERN, name) or (version and not version.isdigit()):
        raise DefinitionInvalid(
            f"{reference!r} is not a definition reference: use 'name' or 'name:version'",
            field="definition",
        )
    return name, int(version) if version else None


def get(session: Session, project: str, name: str, version: int | None = None) -> Definition:
    """A definition version (the latest when ``version`` is None); NotFound names it."""
    label = name if version is None else f"{name}:{version}"
    if not storable(name) or (version is not None and not 1 <= version <= MAX_INT):
        raise NotFound(f"definition '{label}' not found in project '{project}'", field="definition")
    if version is None:
        found = _latest(session, project, name)
    else:
        found = session.exec(
            select(Definition).where(
                Definition.project == project,
                Definition.name == name,
                Definition.version == version,
            )
        ).first()
    if found is None:
        raise NotFound(f"definition '{label}' not found in project '{project}'", field="definition")
    return found


def list_latest(session: Session, project: str) -> list[Definition]:
    """The latest version of every definition in a project, by name."""
    newest = (
        select(Definition.name, sa.func.max(Definition.version).label("version"))
        .where(Definition.project == project)
        .group_by(Definition.name)
        .subquery()
    )
    statement = (
        select(Definition)
        .join(
            newest,
            sa.and_(
                col(Definition.name) == newest.c.name, col(Definition.version) == newest.c.version
            ),
        )
        .where(Definition.project == project)
        .order_by(Definition.name)
    )
    return list(session.exec(statement).all())


def list_versions(session: Session, project: str, name: str) -> list[Definition]:
    """Every version of one definition, oldest first; NotFound when there is none."""
    found = list(
        session.exec(
            select(Definition)
            .where(Definition.project == project, Definition.name == name)
            .order_by(col(Definition.version))
        ).all()
    )
    if not found:
        raise NotFound(f"definition '{name}' not found in project '{project}'", field="definition")
    return found
