"""Dependency aliases, so a route's signature reads like a sentence."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from orchestrator.services import Services


def get_services(request: Request) -> Services:
    """The process's services, set up by the app's lifespan."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
