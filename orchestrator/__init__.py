"""A container job orchestrator on Docker."""

__version__ = "0.1.0"
