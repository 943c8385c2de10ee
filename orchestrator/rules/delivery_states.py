"""Webhook delivery states and the table of their allowed transitions.

Who moves a delivery out of each state (``services.webhooks.set_delivery_status`` writes them):
- ``pending`` (how ``enqueue`` and ``redeliver`` write a delivery): the sender's claim
  (-> ``sending``).
- ``sending``: the sender that holds the lease, recording its attempt (-> ``delivered``;
  ``pending`` when a retry is due; ``failed`` once the retry window is over); a send whose lease
  ran out is claimed again by any sender and stays ``sending``.
- ``delivered``, ``failed``: nobody; they are terminal (a redelivery is a new delivery).
"""

from __future__ import annotations

from enum import StrEnum


class DeliveryStatus(StrEnum):
    """Where one webhook message is on its way to the receiver."""

    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"


DELIVERY_TRANSITIONS: dict[DeliveryStatus, frozenset[DeliveryStatus]] = {
    DeliveryStatus.PENDING: frozenset({DeliveryStatus.SENDING}),
    DeliveryStatus.SENDING: frozenset(
        {DeliveryStatus.DELIVERED, DeliveryStatus.PENDING, DeliveryStatus.FAILED}
    ),
    DeliveryStatus.DELIVERED: frozenset(),
    DeliveryStatus.FAILED: frozenset(),
}


def can_delivery_transition(current: DeliveryStatus, new: DeliveryStatus) -> bool:
    """Whether a delivery may go from ``current`` to ``new``."""
    return new in DELIVERY_TRANSITIONS[current]
