"""The in-process wake-up hub: what it remembers, and that waiters still wake."""

from __future__ import annotations

import threading

from orchestrator.wakeups.hub import TOPIC_LIMIT, Hub
from orchestrator.wakeups.topics import WORK, job_topic


def test_the_hub_forgets_the_least_recently_published_topics_beyond_its_limit() -> None:
    hub = Hub()
    hub.publish(WORK)
    first = job_topic("first")
    hub.publish(first)
    for number in range(TOPIC_LIMIT):
        hub.publish(job_topic(str(number)))
        if number % 1000 == 0:
            # A topic published all along stays remembered.
            hub.publish(WORK)

    assert hub.version(first) == 0
    assert hub.version(job_topic(str(TOPIC_LIMIT - 1))) == 1
    assert hub.version(WORK) == 1 + TOPIC_LIMIT // 1000


def test_reading_versions_remembers_nothing() -> None:
    hub = Hub()
    hub.publish(WORK)
    for number in range(TOPIC_LIMIT * 2):
        assert hub.version(job_topic(str(number))) == 0

    assert hub.version(WORK) == 1


def test_a_waiter_with_a_forgotten_version_wakes_instead_of_missing_a_publish() -> None:
    hub = Hub()
    topic = job_topic("watched")
    hub.publish(topic)
    seen = hub.version(topic)
    # The topic falls out of the hub's memory while the waiter is about to wait on it.
    for number in range(TOPIC_LIMIT):
        hub.publish(job_topic(str(number)))

    assert hub.wait({topic: seen}, timeout=5.0) is True


def test_a_blocked_waiter_wakes_on_its_topic_after_many_others() -> None:
    hub = Hub()
    topic = job_topic("watched")
    seen = hub.version(topic)
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(hub.wait({topic: seen}, 30.0)))
    waiter.start()
    for number in range(TOPIC_LIMIT + 10):
        hub.publish(job_topic(str(number)))
    hub.publish(topic)
    waiter.join(30.0)

    assert woke == [True]
