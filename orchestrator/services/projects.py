"""Projects: the namespace every definition, queue and job belongs to.

A project is created together with its ``default`` queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlmodel import Session, select

from orchestrator.errors import Conflict, NotFound
from orchestrator.rules.fields import storable
from orchestrator.services import audit
from orchestrator.storage.db import serialize
from orchestrator.storage.models import Project, Queue

if TYPE_CHECKING:
    from orchestrator.services.audit import Actor

DEFAULT = "default"


def create(
    session: Session, name: str, description: str = "", actor: Actor | None = None
) -> Project:
    """A new project with its ``default`` queue; Conflict when the name is taken."""
    # Checked under the lock, so two creates of one name cannot both pass.
    serialize(session, "projects")
    if session.get(Project, name) is not None:
        raise Conflict(f"project '{name}' already exists", field="name")
    project = Project(name=name, description=description)
    session.add(project)
    session.flush()
    session.add(Queue(project=name, name=DEFAULT, display_name="Default"))
    session.flush()
    if actor is not None:
        audit.record(session, actor, "project_created", f"project/{name}", name)
    return project


def ensure_default(session: Session) -> None:
    """Create the ``default`` project (and its queue) if it does not exist."""
    if session.get(Project, DEFAULT) is None:
        create(session, DEFAULT, "The default project")


def get(session: Session, name: str) -> Project:
    """The project; NotFound names it."""
    project = session.get(Project, name) if storable(name) else None
    if project is None:
        raise NotFound(f"project '{name}' not found", field="project")
    return project


def list_all(session: Session) -> list[Project]:
    """Every project, by name."""
    return list(session.exec(select(Project).order_by(Project.name)).all())


def update(session: Session, name: str, changes: dict[str, Any], actor: Actor) -> Project:
    """Change a project's ``description`` or ``retention`` (seconds; 0 keeps finished work;
    None: the server's setting); only the keys given change. Audited."""
    project = get(session, name)
    for key in ("description", "retention"):
        if key in changes:
            setattr(project, key, changes[key])
    session.add(project)
    audit.record(session, actor, "project_updated", f"project/{name}", name, dict(changes))
    return project
