"""``GET /metrics``: Prometheus's text format. What this process counted (``telemetry``) and what
the database holds now (``services.metrics``), read at each scrape; an admin token unless
``ORCH_METRICS_OPEN`` opens it to any client that reaches the server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from orchestrator import __version__, telemetry
from orchestrator.api.deps import ServicesDep, get_actor, presented_token
from orchestrator.api.errors import responses
from orchestrator.process import Services
from orchestrator.services import metrics
from orchestrator.services.metrics import Snapshot

router = APIRouter(tags=["metrics"])


async def authorize_scrape(
    services: ServicesDep, plain: Annotated[str | None, Depends(presented_token)]
) -> None:
    """Let the scrape through: anyone when the metrics are open, else an admin token (the
    numbers span every project)."""
    if services.settings.metrics_open:
        return
    (await get_actor(plain, services)).require_admin()


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(authorize_scrape)],
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "The metrics in Prometheus's text exposition format 0.0.4.",
        },
        **responses(401, 403),
    },
)
def get_metrics(services: ServicesDep) -> Response:
    """The process's counters and histograms, and the database's jobs per queue and status,
    queues, runners and webhook backlog, as of now."""
    with services.db.read() as session:
        snapshot = metrics.snapshot(session, services.settings.runner_lease)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot, services))
    body = generate_latest(telemetry.REGISTRY) + generate_latest(registry)
    # The format every Prometheus reads (3.x reads 1.0.0 too; 2.x does not know it).
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)


class _SnapshotCollector(Collector):
    """The families read from one snapshot (and the process's database pools)."""

    def __init__(self, snapshot: Snapshot, services: Services) -> None:
        self.snapshot = snapshot
        self.services = services

    def collect(self) -> Iterator[Metric]:
        info = InfoMetricFamily("orchestrator_build", "The orchestrator's version.")
        info.add_metric([], {"version": __version__})
        yield info
        yield from self._queues()
        yield from self._runners()
        due = GaugeMetricFamily(
            "orchestrator_webhook_deliveries_due",
            "Webhook messages waiting to be sent or being sent.",
        )
        due.add_metric([], self.snapshot.webhooks_due)
        yield due
        oldest = GaugeMetricFamily(
            "orchestrator_webhook_oldest_due_seconds",
            "Age of the oldest webhook message not yet delivered nor given up (0: none).",
        )
        oldest.add_metric([], self.snapshot.oldest_webhook_due_seconds)
        yield oldest
        yield from self._pools()

    def _queues(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "orchestrator_jobs",
            "Unfinished jobs by project, queue and status (finished ones: "
            "orchestrator_jobs_ended_total).",
            labels=["project", "queue", "status"],
        )
        concurrency = GaugeMetricFamily(
            "orchestrator_queue_max_concurrency",
            "A queue's max_concurrency (absent: unlimited).",
            labels=["project", "queue"],
        )
        paused = GaugeMetricFamily(
            "orchestrator_queue_paused", "1 while a queue is paused.", labels=["project", "queue"]
        )
        priority = GaugeMetricFamily(
            "orchestrator_queue_priority", "A queue's priority.", labels=["project", "queue"]
        )
        for queue in self.snapshot.queues:
            labels = [queue.project, queue.name]
            for status, count in queue.jobs.items():
                jobs.add_metric([*labels, str(status)], count)
            if queue.max_concurrency is not None:
                concurrency.add_metric(labels, queue.max_concurrency)
            paused.add_metric(labels, 1 if queue.paused else 0)
            priority.add_metric(labels, queue.priority)
        yield from (jobs, concurrency, paused, priority)

    def _runners(self) -> Iterator[Metric]:
        states = GaugeMetricFamily(
            "orchestrator_runners", "Registered runners by state.", labels=["state"]
        )
        counts: dict[str, int] = {}
        for runner in self.snapshot.runners:
            counts[str(runner.state)] = counts.get(str(runner.state), 0) + 1
        for state, count in sorted(counts.items()):
            states.add_metric([state], count)
        yield states
        capacity = GaugeMetricFamily(
            "orchestrator_runner_capacity", "A runner's capacity.", labels=["runner", "state"]
        )
        running = GaugeMetricFamily(
            "orchestrator_runner_running",
            "Jobs a runner holds (starting or running).",
            labels=["runner", "state"],
        )
        engine = GaugeMetricFamily(
            "orchestrator_runner_engine_up",
            "1 while a runner reaches its Docker engine, as it last reported.",
            labels=["runner", "state"],
        )
        for runner in self.snapshot.runners:
            labels = [runner.name, str(runner.state)]
            capacity.add_metric(labels, runner.capacity)
            running.add_metric(labels, runner.running)
            engine.add_metric(labels, 1 if runner.engine_up else 0)
        yield from (capacity, running, engine)

    def _pools(self) -> Iterator[Metric]:
        size = GaugeMetricFamily(
            "orchestrator_db_pool_size",
            "Connections a database pool of this process keeps.",
            labels=["pool"],
        )
        used = GaugeMetricFamily(
            "orchestrator_db_pool_in_use",
            "Connections of a database pool of this process lent out now.",
            labels=["pool"],
        )
        for name, pool_size, in_use in self.services.db.pool_use():
            size.add_metric([name], pool_size)
            used.add_metric([name], in_use)
        yield from (size, used)
