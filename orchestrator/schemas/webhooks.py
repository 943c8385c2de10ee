"""A job's webhook deliveries and a project's signing secret."""

from __future__ import annotations

from datetime import datetime

from pydantic import (
    BaseModel,
    Field,
)

# --- webhooks -------------------------------------------------------------------------------


class WebhookAttemptPublic(BaseModel):
    time: datetime
    status_code: int | None = Field(description="The receiver's HTTP status; null: no answer.")
    duration_ms: float
    error: str | None


class WebhookDeliveryPublic(BaseModel):
    """One webhook message sent (or to be sent) for a job; a redelivery is a delivery too."""

    number: int = Field(description="The delivery's number within the job, from 1.")
    message_id: str = Field(description="The `webhook-id` header: the same for a redelivery.")
    event_type: str = Field(description="`job.succeeded`, `job.failed` or `job.cancelled`.")
    url: str = Field(description="The receiver's URL, its userinfo masked.")
    status: str = Field(description="`pending`, `sending`, `delivered` or `failed`.")
    attempts: int
    last_status_code: int | None
    last_error: str | None
    attempt_log: list[WebhookAttemptPublic]
    redelivery_of: int | None = Field(description="The number of the delivery this repeats.")
    create_time: datetime
    next_attempt_at: datetime | None
    delivered_time: datetime | None


class WebhookSecretPublic(BaseModel):
    secret: str = Field(
        description="The project's Standard Webhooks signing secret (`whsec_` + base64)."
    )
    previous_secret_until: datetime | None = Field(
        default=None,
        description="After a rotation: until when deliveries also carry a signature with the "
        "secret it replaced (never shown), for receivers that still verify with it; null when "
        "only this secret signs.",
    )
