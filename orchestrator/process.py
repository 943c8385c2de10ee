"""Builds and owns the long-lived parts of a process: database, hub (and its relay to other
processes on PostgreSQL), secret box, engine, runner, live streams, scheduler, HTTP-target
sender, webhook sender, retention collector."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from orchestrator.background.http_targets import HttpTargetRunner
from orchestrator.background.outbound import guarded_transport
from orchestrator.background.queue_sampler import QueueSampler
from orchestrator.background.retention import Collector
from orchestrator.background.scheduler import Scheduler
from orchestrator.background.webhook_sender import WebhookSender
from orchestrator.config import Settings
from orchestrator.docker.engine import DockerEngine
from orchestrator.rules.input_limits import InputLimits
from orchestrator.rules.outbound import OutboundRule
from orchestrator.rules.policy import ContainerPolicy
from orchestrator.rules.project_caps import ProjectCaps
from orchestrator.runner.claim_loop import Runner
from orchestrator.runner.tes_files import TesFileSettings
from orchestrator.runner.tes_s3 import S3Store
from orchestrator.services import projects, runners, tokens
from orchestrator.services.schedules import Checks
from orchestrator.services.tokens import VerifiedTokens
from orchestrator.storage.db import Database
from orchestrator.storage.private_files import database_files, secure_data_dir, sqlite_file
from orchestrator.storage.secret_box import KEY_FILE, SecretBox, open_box
from orchestrator.streams.job_streams import JobStreams
from orchestrator.wakeups.hub import Hub
from orchestrator.wakeups.loop import Loop

if TYPE_CHECKING:
    from orchestrator.wakeups.relay import Relay

logger = logging.getLogger(__name__)


def private_paths(settings: Settings) -> list[Path]:
    """The files of a process that no other user may read (0600): the SQLite database and
    the files SQLite keeps beside it, the key file and the admin token."""
    paths = [settings.data_dir / KEY_FILE, settings.data_dir / tokens.ADMIN_TOKEN_FILE]
    database = sqlite_file(settings.resolved_database_url())
    if database is not None:
        paths.extend(database_files(database))
    return paths


def tes_file_settings(settings: Settings) -> TesFileSettings:
    """Where TES tasks' files may come from and go to; their http(s) inputs are downloaded
    through the outbound guard, as webhooks are sent (the S3 endpoint is the operator's)."""
    rule = settings.outbound_rule()
    return TesFileSettings(
        input_roots=tuple(settings.tes_input_roots),
        output_root=settings.resolved_tes_output_root(),
        http_input_max_bytes=settings.tes_http_input_max_bytes,
        http_transport=lambda: guarded_transport(rule, httpx.Limits(max_connections=4)),
        storage=settings.tes_storage(),
        s3=S3Store(settings.tes_s3_endpoint_url, settings.tes_s3_region)
        if settings.tes_s3_buckets
        else None,
    )


@dataclass
class Services:
    """Everything a request handler or a runner needs, built once per process."""

    settings: Settings
    db: Database
    hub: Hub
    box: SecretBox
    engine: DockerEngine
    policy: ContainerPolicy
    limits: InputLimits
    caps: ProjectCaps
    outbound: OutboundRule  # what webhook and HTTP-target URLs may reach
    runner: Runner | None
    streams: JobStreams  # live log and event streams: one reader per job, capped per token
    verified_tokens: VerifiedTokens  # tokens verified a moment ago, so not read per request
    relay: Relay | None = None  # wake-ups to and from other processes, on PostgreSQL
    # API servers only (``orchestrator serve``): a runner alone fires no schedules, sends no
    # HTTP requests and no webhooks. Several servers share the work through the database.
    scheduler: Scheduler | None = None
    http_targets: HttpTargetRunner | None = None
    webhooks: WebhookSender | None = None
    collector: Collector | None = None  # deletes what is past retention
    sampler: QueueSampler | None = None  # queue depth and throughput, a row a minute

    @classmethod
    def build(cls, settings: Settings, *, api: bool = True) -> Services:
        """Open the database (migrating the schema, making the default project) and the engine.

        ``api`` False (a runner alone) makes no admin token and no secret key of its own.
        """
        secure_data_dir(settings.data_dir, private_paths(settings))
        # The key ring first: a bad ORCH_SECRET_KEY stops the start before the database is touched.
        secret_key = settings.secret_key.get_secret_value() if settings.secret_key else None
        box = open_box(settings.data_dir, secret_key, create=api)
        db = Database(settings.resolved_database_url())
        db.upgrade_schema()
        with db.transaction() as session:
            projects.ensure_default(session)
            admin_token_file = (
                tokens.ensure_admin_token(session, settings.data_dir) if api else None
            )
        if admin_token_file is not None:
            logger.warning(
                "created the first admin token; it is in %s (mode 0600)",
                admin_token_file,
                extra={"action": "admin_token_created"},
            )
        hub = Hub()
        engine = DockerEngine(
            settings.docker_host,
            timeout=settings.docker_timeout,
            pool_size=settings.runner_capacity * 3 + 4,
            shared_lock=db.shared_lock,
        )
        policy = settings.container_policy()
        runner = None
        if settings.runner_enabled:
            with db.read() as session:
                installation = runners.installation_id(session)
            runner = Runner(
                settings,
                db,
                engine,
                hub,
                box,
                policy,
                installation=installation,
                tes_files=tes_file_settings(settings),
            )
        limits = settings.input_limits()
        checks = Checks(box=box, policy=policy, limits=limits)
        relay = None
        if db.is_postgres:
            # Imported here: psycopg is the optional ``postgres`` extra, and on SQLite it
            # would cost every process about 10 MB for nothing.
            from orchestrator.wakeups.relay import Relay

            relay = Relay(hub, db.url, db.outage)
        return cls(
            settings=settings,
            db=db,
            hub=hub,
            box=box,
            engine=engine,
            policy=policy,
            limits=limits,
            caps=settings.project_caps(),
            outbound=settings.outbound_rule(),
            runner=runner,
            streams=JobStreams(settings, db, hub),
            verified_tokens=VerifiedTokens(db, hub),
            relay=relay,
            scheduler=Scheduler(settings, db, hub, checks) if api else None,
            http_targets=HttpTargetRunner(settings, db, hub, box) if api else None,
            webhooks=WebhookSender(settings, db, hub, box) if api else None,
            collector=Collector(settings, db, hub) if api else None,
            sampler=QueueSampler(settings, db, hub) if api else None,
        )

    def loops(self) -> list[Loop]:
        """Every background loop of the process: the runner's, then the scheduler's, the
        HTTP targets', the webhook sender's, the retention collector's and the queue sampler's."""
        found = list(self.runner.loops) if self.runner is not None else []
        for owner in self._api_loops():
            if owner is not None:
                found.append(owner.loop)
        return found

    def _api_loops(
        self,
    ) -> tuple[Scheduler | HttpTargetRunner | WebhookSender | Collector | QueueSampler | None, ...]:
        return (self.scheduler, self.http_targets, self.webhooks, self.collector, self.sampler)

    def start(self) -> None:
        """Start the background loops."""
        # The relay first, so the runner's first wait already hears other processes' submits.
        if self.relay is not None:
            self.relay.start()
        if self.runner is not None:
            self.runner.start()
        for loop in self._api_loops():
            if loop is not None:
                loop.start()

    def close(self) -> None:
        """Stop the loops and close connections; running containers are left for adoption."""
        if self.runner is not None:
            self.runner.stop()
        for loop in self._api_loops():
            if loop is not None:
                loop.stop()
        if self.relay is not None:
            self.relay.stop()
        self.engine.close()
        self.db.dispose()
