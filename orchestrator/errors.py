"""One error vocabulary for the whole product.

Services raise these; ``api/errors.py`` maps each class to an HTTP status in one table. A
message must never contain a secret value.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Something went wrong in the orchestrator."""

    code = "error"

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        self.message = message or (self.__doc__ or self.code).strip()
        self.field = field
        super().__init__(self.message)


class InvalidRequest(OrchestratorError):
    """The request is not valid."""

    code = "invalid_request"


class DefinitionInvalid(InvalidRequest):
    """The job definition is not valid."""

    code = "invalid_definition"


class NotFound(OrchestratorError):
    """The resource does not exist."""

    code = "not_found"


class Conflict(OrchestratorError):
    """The request conflicts with the current state."""

    code = "conflict"


class PayloadTooLarge(OrchestratorError):
    """The request body is too large."""

    code = "payload_too_large"


class EngineUnavailable(OrchestratorError):
    """The Docker engine cannot be reached."""

    code = "engine_unavailable"


class ImageUnavailable(OrchestratorError):
    """The image is not present and could not be pulled."""

    code = "image_unavailable"


class ContainerFailure(OrchestratorError):
    """Docker refused or failed an operation on a container."""

    code = "container_failure"


class ContainerMissing(ContainerFailure):
    """The container (or image) Docker was asked about does not exist."""

    code = "container_missing"


class MountSourceMissing(ContainerFailure):
    """The engine does not have the source of a bind mount: it does not see our files."""

    code = "mount_source_missing"


class Unauthorized(OrchestratorError):
    """A valid API token is required: send 'Authorization: Bearer <token>'."""

    code = "unauthorized"


class Forbidden(OrchestratorError):
    """The token is not allowed to do this."""

    code = "forbidden"


class PolicyRefused(Forbidden):
    """The server's container policy does not allow this option."""

    code = "policy_refused"


class DatabaseUnavailable(OrchestratorError):
    """The database did not answer; try again."""

    code = "database_unavailable"

    def __init__(self, reason: str, *, outage: bool, cause: str = "") -> None:
        super().__init__()
        # In a few fixed words that quote neither a statement nor its values.
        self.reason = reason
        # True: the database is unreachable (a connection could not be made or was lost).
        # False: it answered, but too late (a lock or a statement timeout ran out).
        self.outage = outage
        # The driver's first line, for a one-shot command to print; never sent to a client.
        self.cause = cause


class LimitExceeded(OrchestratorError):
    """The request is over one of the server's limits."""

    code = "limit_exceeded"


class TooManyRequests(OrchestratorError):
    """Too many requests of this kind are open at once; try again later."""

    code = "too_many_requests"

    def __init__(self, message: str, *, field: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message, field=field)
        # Seconds a client should wait before trying again (the Retry-After header).
        self.retry_after = retry_after


class LimitReached(Conflict):
    """A project holds as many of these as the server allows: delete one first."""

    code = "limit_reached"


class IdempotencyKeyReused(OrchestratorError):
    """The Idempotency-Key was used with another request: send a new key."""

    code = "idempotency_key_reused"
