"""Job ids: version 7 UUIDs, in the order of their creation time."""

from __future__ import annotations

import uuid

import pytest

from orchestrator.rules.ids import time_ordered_id


def test_an_id_is_a_version_7_uuid_carrying_its_millisecond() -> None:
    made = uuid.UUID(time_ordered_id(1_764_806_400_123))
    assert made.version == 7
    assert made.variant == uuid.RFC_4122
    assert made.int >> 80 == 1_764_806_400_123
    text = time_ordered_id(5)
    assert text == text.lower() and len(text) == 36


def test_ids_sort_as_text_in_the_order_of_their_milliseconds() -> None:
    made = [time_ordered_id(millis) for millis in (1, 2, 255, 256, 70_000, 1 << 40, (1 << 48) - 1)]
    assert made == sorted(made)


def test_ids_of_one_millisecond_differ() -> None:
    made = {time_ordered_id(1_764_806_400_000) for _ in range(10_000)}
    assert len(made) == 10_000


def test_a_time_outside_48_bits_is_refused() -> None:
    with pytest.raises(ValueError, match="48 bits"):
        time_ordered_id(1 << 48)
    with pytest.raises(ValueError, match="48 bits"):
        time_ordered_id(-1)
