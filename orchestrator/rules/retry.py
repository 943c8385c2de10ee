"""Backoff: the one formula every retry and reconnect uses; HTTP targets' default delays; the
margin a send's lease keeps past its request timeout."""

from __future__ import annotations

# A send's lease (an HTTP target's or a webhook delivery's) outlives its request timeout by this
# many seconds before another process may take the send back (httpx's timeout applies to each
# phase of a request).
LEASE_MARGIN_SECONDS = 30.0

# An HTTP target's seconds before each retry when its schedule sets none: attempts at 0, 0,
# +5m, +15m, +1h, +3h, +6h (7 in all).
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (0, 300, 900, 3600, 10800, 21600)


def exponential_backoff(failures: int, base: float, maximum: float, factor: float = 2.0) -> float:
    """Seconds to wait after ``failures`` failures in a row (1 = the first): ``base``, then
    ``factor`` times more after each further failure, never more than ``maximum``."""
    # The exponent is bounded: past it the delay is at its maximum anyway, and a float
    # power of a long run of failures would overflow.
    return float(min(maximum, base * factor ** min(max(failures - 1, 0), 64)))
