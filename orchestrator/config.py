"""Typed settings from ``ORCH_*`` environment variables, built once and passed down.

Nothing here reads the environment at import time: ``Settings()`` is created by the CLI or by
``create_app`` and handed to every component that needs it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from orchestrator.rules.crash_points import CrashPoint
from orchestrator.rules.idempotency import DEFAULT_TTL_SECONDS
from orchestrator.rules.input_limits import InputLimits
from orchestrator.rules.outbound import OutboundRule, parse_networks
from orchestrator.rules.policy import POLICY_FIELDS, ContainerPolicy, PolicySettings, setting_name
from orchestrator.rules.project_caps import ProjectCaps
from orchestrator.rules.tes_storage import TesStorage
from orchestrator.rules.units import parse_duration, parse_retention, parse_size


def default_data_dir() -> Path:
    """The per-user data directory (XDG on Linux, ``~/Library`` on macOS)."""
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg:
        return Path(xdg) / "orchestrator"
    mac = Path.home() / "Library" / "Application Support"
    if mac.is_dir():
        return mac / "orchestrator"
    return Path.home() / ".local" / "share" / "orchestrator"


def _size_or_zero(value: object) -> object:
    # ORCH_DEFAULT_MEMORY=512Mi, or 0 for no default limit.
    if value in (0, "0"):
        return 0
    return parse_size(value)  # type: ignore[arg-type]


def _comma_list(value: object) -> object:
    # ORCH_POLICY_ALLOWED_IMAGES=registry.example.com/,busybox: a comma-separated list.
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


# Keywords of ``Settings`` for the policy's fields, named as their variables are.
_POLICY_KEYWORDS = {f"policy_{field}": field for field in POLICY_FIELDS}
# The policy's list settings: comma-separated lists in the environment, as keywords too.
_POLICY_LISTS = frozenset(
    name
    for name, field in PolicySettings.model_fields.items()
    if get_origin(field.annotation) is list
)


def variable_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable of the setting at ``loc`` (where a validation error is):
    ``ORCH_<NAME>``, and for a field of the nested policy ``ORCH_POLICY_<FIELD>``."""
    if loc[0] == "policy" and len(loc) > 1 and loc[1] in POLICY_FIELDS:
        return setting_name(str(loc[1]))
    return f"ORCH_{str(loc[0]).upper()}"


class _Environment(EnvSettingsSource):
    """``ORCH_<NAME>`` for each setting but the nested policy, whose fields are variables of
    their own (``ORCH_POLICY_<FIELD>``): never one ``ORCH_POLICY``."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """The variable of the setting ``field_name``; none for the nested policy."""
        if field_name == "policy":
            return None, field_name, False
        return super().get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        policy = {}
        for field in POLICY_FIELDS:
            variable = setting_name(field)
            value = self.env_vars.get(variable if self.case_sensitive else variable.lower())
            if value is not None:
                policy[field] = value
        if policy:
            values["policy"] = policy
        return values


class Settings(BaseSettings):
    """Every setting of the server, runner and CLI. Env var = ``ORCH_`` + upper-case name; for
    a field of the nested ``policy``, ``ORCH_POLICY_`` + its upper-case name."""

    model_config = SettingsConfigDict(env_prefix="ORCH_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # HTTPS: ``serve`` speaks TLS itself with this certificate (PEM, its chain after it) and key.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # The proxies whose X-Forwarded-Proto and X-Forwarded-For the server believes (comma-
    # separated addresses or networks, ``*`` for any): empty, nobody's, so no client can make a
    # plain-HTTP request pass for HTTPS (the console's Secure cookie is decided by it).
    forwarded_allow_ips: str = ""
    url: str = "http://127.0.0.1:8000"
    token: SecretStr | None = None

    docker_host: str | None = None
    docker_timeout: float = Field(default=60.0, gt=0)
    runner_enabled: bool = True
    # Unset: the name kept in ``<data dir>/runner-name``, made once from the host name (see
    # ``resolved_runner_name``), so a restarted server or container keeps its jobs.
    runner_name: str | None = Field(default=None, min_length=1, max_length=255)
    runner_capacity: int = Field(default=4, ge=1, le=1024)
    # Queues this runner takes jobs from (``name`` or ``project::name``); empty: every queue.
    runner_queues: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # A runner whose heartbeat is older than this is lost, and its jobs are taken back.
    runner_lease: float = Field(default=30.0, ge=1)
    # How long a draining runner lets its running jobs finish before it leaves them.
    drain_timeout: float = Field(default=60.0, ge=0)
    # Attempts a job may lose to the infrastructure (runner lost, engine restart) beyond its
    # retry policy's; 0 fails the job at the first interruption.
    interruption_limit: int = Field(default=3, ge=0, le=100)
    poll_interval: float = Field(default=5.0, gt=0)
    engine_retry_interval: float = Field(default=2.0, gt=0)
    stop_grace_period: float = Field(default=10.0, ge=0)
    log_flush_interval: float = Field(default=0.25, gt=0)
    # ``auto``: a job's /run/orchestrator is a directory of the runner's, bind-mounted, when
    # the engine shares the runner's disk (found out at the first job), else copied in and out
    # with Docker's archive API; ``off``: always copied.
    run_dir_mount: Literal["auto", "off"] = "auto"
    # How long a new HTTP worker container may take to answer before its attempt fails.
    worker_ready_timeout: float = Field(default=60.0, gt=0)

    # Schedules: a tick fired later than this after its time was missed (the schedule's
    # ``on_missed`` decides what happens then).
    schedule_grace: float = Field(default=60.0, ge=1)
    # HTTP targets of schedules: the request timeout when a schedule sets none, and how many
    # requests one server sends at once.
    http_timeout: float = Field(default=30.0, gt=0)
    http_concurrency: int = Field(default=8, ge=1, le=256)
    # Webhooks: per-request timeout; retries start at ``webhook_retry_base`` seconds, double
    # (with jitter) up to ``webhook_retry_max``, and stop ``webhook_retry_for`` after the first
    # attempt; ``webhook_concurrency`` deliveries are in flight at once per server.
    webhook_timeout: float = Field(default=10.0, gt=0)
    webhook_retry_base: float = Field(default=5.0, gt=0)
    webhook_retry_max: float = Field(default=3600.0, gt=0)
    webhook_retry_for: float = Field(default=86400.0, ge=0)
    webhook_concurrency: int = Field(default=8, ge=1, le=256)
    # Seconds after a signing secret is rotated during which deliveries are signed with the
    # secret it replaced too (``services.webhook_secrets.signing_secrets``); 0: the new one only.
    webhook_secret_grace: float = Field(default=86400.0, ge=0)
    # Outbound requests (webhooks, HTTP targets) reach public addresses only, and these
    # networks besides (comma-separated CIDRs, e.g. ``10.0.0.0/8``): ``rules.outbound``.
    outbound_allow_networks: str = ""

    # Retention: finished jobs (with their events, logs and webhook deliveries) and finished
    # schedule runs older than ``retention`` are deleted, audit entries older than
    # ``audit_retention``; 0 keeps them. A project may set its own ``retention``. Collection
    # runs every ``gc_interval`` seconds, in transactions of ``gc_batch`` jobs at most; on
    # SQLite each is sized to hold the one writer for about ``gc_batch_time`` seconds.
    retention: Annotated[float, BeforeValidator(parse_retention)] = 30 * 86400.0
    audit_retention: Annotated[float, BeforeValidator(parse_retention)] = 365 * 86400.0
    gc_interval: float = Field(default=300.0, gt=0)
    gc_batch: int = Field(default=500, ge=1, le=10_000)
    gc_batch_time: float = Field(default=0.005, gt=0, le=10)
    # Seconds between two samples of every queue's depth and throughput (the console's chart
    # keeps a row a queue a minute; a shorter interval rewrites the minute's row).
    queue_sample_interval: float = Field(default=60.0, gt=0, le=60)
    # How long the answer to a create request with an ``Idempotency-Key`` is kept: the same
    # key and request get it again until then; after, the key is free and its row goes.
    idempotency_ttl: Annotated[float, BeforeValidator(parse_duration)] = DEFAULT_TTL_SECONDS

    # SaladCloud's drop-in API: the one organisation name it answers to; unset, any name.
    salad_organization: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$")

    # GA4GH TES (``/ga4gh/tes/v1``): the project of a task posted with a token bound to no
    # project, and the queue its tasks go to (made in the project on first use).
    tes_project: str = Field(default="default", pattern=r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$")
    tes_queue: str = Field(default="tes", pattern=r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$")
    # Read by the runner: host directories file:// inputs may come from (comma-separated; none:
    # file:// inputs are refused), where file:// outputs may go (a folder per project in it;
    # None: <data dir>/tes-outputs),
    # and the largest http(s) input it downloads (bytes).
    tes_input_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    tes_output_root: Path | None = None
    tes_http_input_max_bytes: int = Field(default=1024**3, ge=1)
    # s3:// inputs and outputs: the buckets tasks may name (comma-separated; ``*``: any the
    # credentials reach; none: s3:// is refused), the S3 endpoint (None: AWS's, by region)
    # and region. Credentials come from boto3's usual places (AWS_ACCESS_KEY_ID and
    # AWS_SECRET_ACCESS_KEY, ~/.aws, an instance role) on each runner's host.
    tes_s3_buckets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    tes_s3_endpoint_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    tes_s3_region: str | None = Field(default=None, pattern=r"^[a-z0-9-]+$")

    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_output_bytes: int = Field(default=1_048_576, ge=1024)
    max_input_bytes: int = Field(default=262_144, ge=1024)
    max_metadata_bytes: int = Field(default=16_384, ge=256)
    # The most children one array job may have (``array: {size: N}`` on a submit).
    array_max_size: int = Field(default=10_000, ge=2, le=1_000_000)
    max_parameters: int = Field(default=100, ge=1)
    max_env: int = Field(default=100, ge=1)
    max_log_bytes: int = Field(default=10_485_760, ge=4096)
    # A page of a job list, as JSON: a page ends early rather than pass it (the next page goes
    # on from there), and rows are read from the database in batches that fit it.
    list_page_max_bytes: int = Field(default=4 * 1_048_576, ge=65_536)
    # One secret value (a secret_env entry, a secret header), as UTF-8: masking's work and the
    # memory it takes grow with it.
    max_secret_bytes: int = Field(default=65_536, ge=16)
    # Live streams (log follows and event streams) one token may hold open on one server at
    # once; the next gets 429. Counted per process: N servers let a token hold N times this.
    max_streams_per_token: int = Field(default=32, ge=1, le=100_000)
    secret_key: SecretStr | None = None
    # What one project may hold (``rules.project_caps``); 0 leaves a cap unbounded. Tokens:
    # active ones (admin tokens count together as one more group); versions: of one definition.
    max_schedules_per_project: int = Field(default=1000, ge=0)
    max_queues_per_project: int = Field(default=100, ge=0)
    max_definitions_per_project: int = Field(default=1000, ge=0)
    max_versions_per_definition: int = Field(default=1000, ge=0)
    max_tokens_per_project: int = Field(default=100, ge=0)
    # ``GET /metrics`` without a token, for a scraper on a network the operator trusts; else
    # it needs an admin token (the numbers span every project).
    metrics_open: bool = False
    # HTTP connections (``api/server.py``): a request head must be complete this many seconds
    # after the connection opens (or after its first byte, on a kept-alive connection); and
    # at most ``max_connections`` sockets are open at once (streams included), the next ones
    # answered 503 and closed. A request body must be complete ``body_timeout`` seconds
    # after its head.
    header_timeout: float = Field(default=10.0, gt=0)
    body_timeout: float = Field(default=60.0, gt=0)
    max_connections: int = Field(default=1000, ge=1)
    # Tests only: the runner exits at once (as kill -9 would) the first time it reaches this
    # point of an attempt (``crash_points.POINTS``), so a test can crash it anywhere.
    test_crash_point: CrashPoint | None = None

    # Container policy: what definitions and submissions may ask for. Everything risky is off.
    # Its fields are declared in ``PolicySettings``; each is set by ``ORCH_POLICY_<FIELD>`` (or
    # the keyword ``policy_<field>``), overridden by the key ``<field>`` of ``ORCH_POLICY_FILE``.
    policy_file: Path | None = None
    policy: PolicySettings = Field(default_factory=PolicySettings)
    # Limits of a container whose definition sets none; 0 leaves it unlimited.
    default_memory: Annotated[int, BeforeValidator(_size_or_zero)] = 1024**3
    default_pids: int = Field(default=1024, ge=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """pydantic-settings' sources, with the environment read as ``_Environment`` reads it."""
        return init_settings, _Environment(settings_cls), dotenv_settings, file_secret_settings

    @model_validator(mode="before")
    @classmethod
    def _nest_policy(cls, data: Any) -> Any:
        # The keyword policy_<field> sets the nested policy's <field>, over a whole ``policy``.
        if not isinstance(data, dict):
            return data
        given = {field: data[key] for key, field in _POLICY_KEYWORDS.items() if key in data}
        policy = data.get("policy", {})
        if isinstance(policy, BaseModel):
            policy = policy.model_dump()
        if not given or not isinstance(policy, dict):
            return data  # nothing to nest, or a ``policy`` the field refuses
        rest = {key: value for key, value in data.items() if key not in _POLICY_KEYWORDS}
        return {**rest, "policy": {**policy, **given}}

    @field_validator("policy", mode="before")
    @classmethod
    def _split_policy_lists(cls, value: object) -> object:
        # Lists come comma-separated, from the environment or as keywords; never as JSON.
        if isinstance(value, dict):
            return {k: _comma_list(v) if k in _POLICY_LISTS else v for k, v in value.items()}
        return value

    @field_validator("runner_queues", "tes_input_roots", "tes_s3_buckets", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        return _comma_list(value)

    @field_validator("outbound_allow_networks")
    @classmethod
    def _check_networks(cls, value: str) -> str:
        parse_networks(value)  # its ValueError names the item that is not a network
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _check_proxies(cls, value: str) -> str:
        for item in (part.strip() for part in value.split(",")):
            if item and item != "*":
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError(f"'{item}' is not an address or a network") from None
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("ORCH_TLS_CERT and ORCH_TLS_KEY go together: set both, or neither")
        return self

    @field_validator("url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    def tes_storage(self) -> TesStorage:
        """The URL schemes (and S3 buckets) TES tasks' inputs and outputs may name."""
        return TesStorage(s3_buckets=tuple(self.tes_s3_buckets))

    def resolved_tes_output_root(self) -> Path:
        """Where TES file:// outputs may be written: ``ORCH_TES_OUTPUT_ROOT``, else
        ``<data dir>/tes-outputs``."""
        return self.tes_output_root or self.data_dir / "tes-outputs"

    @property
    def heartbeat_interval(self) -> float:
        """How often a runner renews its lease: a third of it, so one late beat is no loss."""
        return min(self.runner_lease / 3, 10.0)

    def api_token(self) -> str | None:
        """The CLI's token: ``ORCH_TOKEN``, else the ``admin-token`` file in the data dir."""
        if self.token is not None:
            return self.token.get_secret_value()
        try:
            return (self.data_dir / "admin-token").read_text().strip() or None
        except OSError:
            return None

    def resolved_runner_name(self) -> str:
        """The runner's name: ``ORCH_RUNNER_NAME``, else the one kept in the data dir.

        Made once (the host name at the first start) and kept in ``<data dir>/runner-name``:
        a server container gets a new host name at each restart, and its runner must keep
        its name to adopt its running jobs.
        """
        if self.runner_name:
            return self.runner_name
        path = self.data_dir / "runner-name"
        try:
            kept = path.read_text().strip()
        except FileNotFoundError:
            kept = ""
        if kept:
            return kept
        self.data_dir.mkdir(parents=True, exist_ok=True)
        name = socket.gethostname() or "runner"
        # Written whole or not at all: two processes starting together keep the same name.
        partial = path.with_name(f".runner-name.{os.getpid()}")
        partial.write_text(name + "\n")
        try:
            os.link(partial, path)
        except FileExistsError:
            name = path.read_text().strip() or name
        finally:
            partial.unlink()
        return name

    def container_policy(self) -> ContainerPolicy:
        """The ``ORCH_POLICY_*`` settings, overridden key by key by ``ORCH_POLICY_FILE``."""
        return ContainerPolicy.from_settings(
            self.policy,
            policy_file=self.policy_file,
            # docker-py reads DOCKER_HOST when ORCH_DOCKER_HOST is unset; so must the socket rule.
            docker_host=self.docker_host or os.environ.get("DOCKER_HOST") or None,
        )

    def input_limits(self) -> InputLimits:
        """The limits on what one request may carry."""
        return InputLimits(
            max_input_bytes=self.max_input_bytes,
            max_metadata_bytes=self.max_metadata_bytes,
            max_parameters=self.max_parameters,
            max_env=self.max_env,
            max_secret_bytes=self.max_secret_bytes,
            max_array_size=self.array_max_size,
        )

    def project_caps(self) -> ProjectCaps:
        """How many of each thing one project may hold."""
        return ProjectCaps(
            schedules=self.max_schedules_per_project,
            queues=self.max_queues_per_project,
            definitions=self.max_definitions_per_project,
            versions=self.max_versions_per_definition,
            tokens=self.max_tokens_per_project,
        )

    def outbound_rule(self) -> OutboundRule:
        """What outbound requests may reach (``ORCH_OUTBOUND_ALLOW_NETWORKS``)."""
        return OutboundRule(parse_networks(self.outbound_allow_networks))

    def resolved_database_url(self) -> str:
        """The database URL; a SQLite file in the data dir unless ``ORCH_DATABASE_URL`` is set."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'orchestrator.db'}"
