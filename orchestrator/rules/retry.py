"""Retry schedules that are not a definition's own retry policy."""

from __future__ import annotations

# An HTTP target's seconds before each retry when its schedule sets none: attempts at 0, 0,
# +5m, +15m, +1h, +3h, +6h (7 in all).
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (0, 300, 900, 3600, 10800, 21600)
