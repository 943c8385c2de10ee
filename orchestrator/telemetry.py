"""What this process did, counted for ``/metrics``: submits, starts and ends of jobs, queue waits
and run times, webhook and schedule HTTP deliveries.

Each process counts only its own doings (an API process its submits, a runner its starts and
ends); Prometheus sums the processes it scrapes. What the database holds at a moment (jobs
waiting and running, runners, deliveries due) is read at scrape time instead
(``services.metrics``). Counters are incremented after the transaction that did the thing
commits, so a rolled-back submit is never counted.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

# One registry per process, not prometheus_client's global one: /metrics shows what this
# package registers, and nothing an embedding program (or a test) put in the global one.
REGISTRY = CollectorRegistry(auto_describe=True)

# From a second to a day: a queue wait or a run is rarely shorter, and a day-long wait is an
# incident whatever its exact length.
_WAIT_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400)
_DELIVERY_BUCKETS = (0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 900, 3600, 86400)

JOBS_SUBMITTED = Counter(
    "orchestrator_jobs_submitted",
    "Jobs this process accepted (API, drop-in APIs and schedules).",
    ["project", "queue"],
    registry=REGISTRY,
)
ATTEMPTS_STARTED = Counter(
    "orchestrator_attempts_started",
    "Attempts whose container this process's runner started.",
    ["project", "queue"],
    registry=REGISTRY,
)
JOBS_ENDED = Counter(
    "orchestrator_jobs_ended",
    "Jobs this process moved to a terminal state, by that state and the failure reason "
    "(empty for a success).",
    ["project", "queue", "status", "reason"],
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    "orchestrator_job_queue_wait_seconds",
    "From a job's last entry into its queue to its claim by a runner of this process.",
    ["project", "queue"],
    buckets=_WAIT_BUCKETS,
    registry=REGISTRY,
)
RUN_DURATION = Histogram(
    "orchestrator_job_run_seconds",
    "From a job's first start to its end, for jobs this process ended after they started.",
    ["project", "queue", "status"],
    buckets=_WAIT_BUCKETS,
    registry=REGISTRY,
)
WEBHOOK_ATTEMPTS = Counter(
    "orchestrator_webhook_attempts",
    "Webhook sends by this process, by what came of each: delivered, retry (sent again later) "
    "or failed (given up).",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_LAG = Histogram(
    "orchestrator_webhook_delivery_lag_seconds",
    "From a webhook message's creation (the job's end) to its delivery.",
    buckets=_DELIVERY_BUCKETS,
    registry=REGISTRY,
)
SCHEDULE_HTTP_REQUESTS = Counter(
    "orchestrator_schedule_http_requests",
    "Requests of HTTP-target schedules sent by this process, by outcome: ok (a 2xx answer) "
    "or failed.",
    ["outcome"],
    registry=REGISTRY,
)
SCHEDULE_HTTP_LAG = Histogram(
    "orchestrator_schedule_http_lag_seconds",
    "From the tick an HTTP-target schedule fired for to the 2xx answer of its request.",
    buckets=_DELIVERY_BUCKETS,
    registry=REGISTRY,
)
