"""The definition spec: the model of a definition's fields and its YAML/JSON loading, with
errors naming the file, the line and the field. Loading is CPU-bound and blocking: callers on
an event loop run it in a thread.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)

from orchestrator.errors import DefinitionInvalid
from orchestrator.rules.fields import (
    MAX_JSON_DEPTH,
    Duration,
    EnvName,
    EnvValue,
    Name,
    ParameterName,
    ParameterValue,
    Text,
)
from orchestrator.rules.reasons import FailureReason
from orchestrator.rules.retry import exponential_backoff
from orchestrator.rules.retry_rules import (
    MAX_RETRY_RULES,
    RetryAction,
    RetryRule,
    SchemaOfFields,
    first_match,
)
from orchestrator.rules.units import (
    MAX_SIZE_BYTES,
    parse_size,
)

RESERVED_ENV_PREFIX = "ORCH_"
# The spec fields a job copies at submit: they shape its container and its retries.
CONTAINER_FIELDS = (
    "image",
    "resources",
    "retry",
    "working_dir",
    "user",
    "labels",
    "network",
    "volumes",
    "privileged",
    "cap_add",
    "devices",
    "pid",
    "ipc",
    "userns",
    "worker",
)
# Replicas of one worker definition a runner keeps per queue, at most.
MAX_WORKER_REPLICAS = 64
# The headers of every readiness check a runner sends a worker (a worker can tell them from
# jobs in its access log); SaladCloud's readiness probe lists them, and wants at least one.
READINESS_HEADERS = {"User-Agent": "orchestrator-readiness-check"}
# Attempts of a worker definition's job when its definition sets no retry (SaladCloud's 3 retries).
WORKER_DEFAULT_ATTEMPTS = 4
# Network modes in which a worker container has no address of its own for the runner to reach.
UNREACHABLE_NETWORKS = ("none", "host")

# Their JSON schemas say what a definition may hold (the OpenAPI document shows them), not the
# seconds and bytes the validators make of it.
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_SIZE_BYTES},
                {"type": "string"},
            ],
            "description": "Bytes, or a size such as 256Mi, 1G or 512MB.",
        },
        mode="validation",
    ),
]


class StrictModel(BaseModel):
    """Unknown fields are errors, so a typo never goes unnoticed."""

    model_config = ConfigDict(extra="forbid")


class Resources(StrictModel):
    cpus: float | None = Field(default=None, gt=0)
    memory: Size | None = None
    pids: int | None = Field(default=None, ge=1)
    shm_size: Size | None = None
    gpus: int | Literal["all"] | None = Field(default=None)

    @field_validator("gpus")
    @classmethod
    def _positive_gpus(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be a positive number or 'all'")
        return value


class Backoff(StrictModel):
    # Shown in seconds, given as a duration too: one schema for both (see ``SchemaOfFields``).
    model_config = ConfigDict(extra="forbid", json_schema_mode_override="validation")

    delay: Duration = 1.0
    factor: float = Field(default=2.0, ge=1.0)
    max: Duration = 3600.0


def _backoff_shorthand(value: Any) -> Any:
    # `backoff: 10s` means a constant delay of ten seconds.
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return {"delay": value, "factor": 1.0}
    return value


def _on_key(value: Any) -> Any:
    # YAML 1.1 (PyYAML) reads a bare ``on:`` key as the boolean true: it means ``on``.
    if isinstance(value, dict) and True in value and "on" not in value:
        return {("on" if key is True else key): item for key, item in value.items()}
    return value


class RetryPolicy(SchemaOfFields):
    model_config = ConfigDict(extra="forbid")

    attempts: int = Field(default=1, ge=1, le=100)
    on_exit_codes: list[int] = Field(default_factory=list)
    on: list[RetryRule] = Field(
        default_factory=list,
        max_length=MAX_RETRY_RULES,
        description="Retry conditions, first match wins (as AWS Batch's evaluateOnExit); "
        "when none matches, on_exit_codes (retry those codes only) or else any failure is "
        "retried while attempts remain.",
    )
    backoff: Annotated[Backoff, BeforeValidator(_backoff_shorthand)] = Field(
        default_factory=Backoff
    )

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, value: Any) -> Any:
        return _on_key(value)

    @model_serializer(mode="wrap")
    def _without_empty_rules(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A spec without rules dumps as it did before they existed: its hash (which makes an
        # identical re-registration a no-op) stays the same.
        data: dict[str, Any] = handler(self)
        if not data.get("on"):
            data.pop("on", None)
        return data

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before ``attempt`` (2 = the first retry)."""
        backoff = self.backoff
        return exponential_backoff(attempt - 1, backoff.delay, backoff.max, backoff.factor)

    def action_for(
        self, exit_code: int | None, reason: FailureReason, log_line: str | None
    ) -> RetryAction | None:
        """The action of the first rule of ``on`` matching a failed attempt, or None."""
        return first_match(self.on, exit_code, reason, log_line)

    def retries(
        self,
        attempt: int,
        exit_code: int | None,
        reason: FailureReason,
        log_line: str | None = None,
        *,
        retryable: bool = True,
    ) -> bool:
        """Whether a failed ``attempt`` (counted: 1 = the first) gets another one.

        ``attempts`` caps the total. The first rule of ``on`` that matches decides; when
        none does, ``on_exit_codes`` is one more rule (retry those codes, fail the rest)
        and otherwise any failure the runner deems ``retryable`` is retried. ``exit_code``
        is None for an attempt with no code of its own (timed out, never started).
        """
        if attempt >= self.attempts:
            return False
        action = self.action_for(exit_code, reason, log_line)
        if action is not None:
            return action is RetryAction.RETRY
        if not retryable:
            return False
        return not self.on_exit_codes or exit_code in self.on_exit_codes


VOLUME_PATTERN = re.compile(r"^(?P<source>[^:]+):(?P<target>/[^:]*)(?::(?P<mode>ro|rw))?$")
# Docker's rule for volume names; anything else that is not an absolute path is a mistake.
VOLUME_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]+$")
# ``shared:models:/models``: the engine's volume ``models`` itself, not the project's own
# ``models`` (allowed by the policy's ``shared_volumes``).
SHARED_VOLUME_PREFIX = "shared:"


@dataclass(frozen=True)
class VolumeEntry:
    """One entry of ``volumes``: a host path (``kind`` "host"), the project's own named volume
    ("project"), or a volume shared by name beyond the project ("shared"); ``rest`` is what
    follows the source: ``/container/path`` with its ``:ro`` or ``:rw``."""

    kind: Literal["host", "project", "shared"]
    source: str
    rest: str


def parse_volume(volume: str) -> VolumeEntry:
    """The parts of a ``volumes`` entry (one the spec accepted)."""
    if volume.startswith(SHARED_VOLUME_PREFIX):
        # Else a volume named "shared" (``shared:/data``): its target is an absolute path.
        match = VOLUME_PATTERN.match(volume.removeprefix(SHARED_VOLUME_PREFIX))
        if match and not match["source"].startswith("/"):
            source, _, rest = volume.removeprefix(SHARED_VOLUME_PREFIX).partition(":")
            return VolumeEntry("shared", source, rest)
    source, _, rest = volume.partition(":")
    return VolumeEntry("host" if source.startswith("/") else "project", source, rest)


def _check_volume(volume: str) -> str:
    shared = volume.startswith(SHARED_VOLUME_PREFIX) and parse_volume(volume).kind == "shared"
    match = VOLUME_PATTERN.match(volume.removeprefix(SHARED_VOLUME_PREFIX) if shared else volume)
    if not match:
        raise ValueError(
            f"{volume!r} is not 'name:/container/path[:ro]', "
            "'shared:name:/container/path[:ro]' or '/host/path:/container/path[:ro]'"
        )
    source = match["source"]
    if not source.startswith("/") and not VOLUME_NAME_PATTERN.match(source):
        raise ValueError(
            f"{source!r} is neither an absolute host path nor a volume name "
            "(letters, digits, '_', '.' and '-')"
        )
    return volume


Volume = Annotated[Text, AfterValidator(_check_volume)]


def _check_url_path(path: str) -> str:
    if not re.fullmatch(r"/[^\s#]*", path):
        raise ValueError(f"{path!r} is not a URL path: it must start with '/' and have no spaces")
    return path


UrlPath = Annotated[Text, StringConstraints(max_length=2048), AfterValidator(_check_url_path)]


class WorkerSpec(StrictModel):
    """A long-running HTTP worker (SaladCloud's model): each job's input is POSTed to it."""

    port: int = Field(ge=1, le=65535)
    path: UrlPath = "/"
    # GET this until it answers 2xx; without it, the port accepting connections means ready.
    readiness_path: UrlPath | None = None
    replicas: int = Field(default=1, ge=1, le=MAX_WORKER_REPLICAS)
    idle_timeout: Duration = 300.0


class DefinitionSpec(StrictModel):
    """What a job definition file holds."""

    name: Name
    description: Text = ""
    image: Annotated[Text, StringConstraints(min_length=1, pattern=r"^\S+$")]
    command: list[Text] | None = None
    parameters: dict[ParameterName, ParameterValue] = Field(default_factory=dict)
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    secrets: list[EnvName] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    timeout: Duration | None = None
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    # Declared before ``network``, whose validator looks at it.
    worker: WorkerSpec | None = None
    working_dir: Annotated[Text, StringConstraints(pattern=r"^/")] | None = None
    user: Annotated[Text, StringConstraints(min_length=1)] | None = None
    labels: dict[Text, Text] = Field(default_factory=dict)
    # None: the project's own network (made by the runner); else Docker's name for a network
    # (``bridge``, ``none``, ``host``, ``container:<name>``, a named one), which the policy rules.
    network: Annotated[Text, StringConstraints(min_length=1)] | None = None
    volumes: list[Volume] = Field(default_factory=list)
    privileged: bool = False
    cap_add: list[Text] = Field(default_factory=list)
    devices: list[Text] = Field(default_factory=list)
    pid: Literal["host"] | None = None
    ipc: Literal["host"] | None = None
    userns: Literal["host"] | None = None

    @field_validator("env", "secrets")
    @classmethod
    def _not_reserved(cls, value: Any) -> Any:
        for name in value:
            if name.upper().startswith(RESERVED_ENV_PREFIX):
                raise ValueError(f"{name}: names starting with {RESERVED_ENV_PREFIX} are reserved")
        return value

    @field_validator("labels")
    @classmethod
    def _labels_not_ours(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key.startswith("orchestrator."):
                raise ValueError(f"{key}: labels starting with 'orchestrator.' are reserved")
        return value

    @field_validator("network")
    @classmethod
    def _reachable_worker(cls, value: str | None, info: ValidationInfo) -> str | None:
        if (
            value is not None
            and info.data.get("worker") is not None
            and (value in UNREACHABLE_NETWORKS or value.startswith("container:"))
        ):
            raise ValueError(
                f"a worker must be reachable at its own address; network {value!r} gives it none"
            )
        return value

    @model_validator(mode="after")
    def _worker_retries(self) -> DefinitionSpec:
        if self.worker is not None and "retry" not in self.model_fields_set:
            self.retry = RetryPolicy(attempts=WORKER_DEFAULT_ATTEMPTS)
        return self

    @model_validator(mode="after")
    def _secrets_not_plain(self) -> DefinitionSpec:
        both = sorted(set(self.secrets) & set(self.env))
        if both:
            raise ValueError(f"{', '.join(both)} is both a secret and a plain env var")
        return self

    def container_options(self) -> dict[str, Any]:
        """The fields that shape the container, as the policy checks them."""
        return self.model_dump(mode="json", include=set(CONTAINER_FIELDS))

    def canonical(self) -> dict[str, Any]:
        """The normalized spec as stored (durations in seconds, sizes in bytes)."""
        return self.model_dump(mode="json")


def spec_hash(spec: dict[str, Any]) -> str:
    """A stable hash of a normalized spec: equal specs, equal hashes."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


# Longest YAML text one load reads: far more than any definition needs (the default request
# body limit), and parsed in about a second.
MAX_YAML_CHARS = 1_048_576
# Errors one invalid definition reports (with their lines); the rest are counted.
MAX_REPORTED_ERRORS = 10
YAML_CORE_TAG = "tag:yaml.org,2002:"
# Explicit tags a definition may carry: those of JSON's values ("!" is YAML's "no tag").
ALLOWED_YAML_TAGS = frozenset(
    {"!", *(YAML_CORE_TAG + name for name in ("str", "int", "float", "bool", "null", "seq", "map"))}
)

try:
    # libyaml scans and parses about six times faster than PyYAML's own parser.
    from yaml._yaml import CParser as _Parser
except ImportError:  # PyYAML built without libyaml: its parser in Python.

    class _Parser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)


class _DefinitionLoader(
    yaml.composer.Composer, _Parser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver
):
    """PyYAML's safe loader (its composer in front of the parser, so each node is checked as it
    is composed) that refuses what no definition needs and an attacker would use: anchors and
    aliases (a few hundred bytes of nested aliases make billions of nodes for whatever walks
    the result), tags other than plain values (an unknown tag is a 400, not a 500), and
    nesting deeper than ``MAX_JSON_DEPTH``."""

    def __init__(self, text: str, source: str) -> None:
        _Parser.__init__(self, text)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self.source = source
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        # A node's place always holds an event (the stream's end comes after the document's).
        assert event is not None and event.start_mark is not None
        where = f"{self.source}:{event.start_mark.line + 1}"
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise DefinitionInvalid(
                f"{where}: definitions may not use YAML anchors or aliases (&name, *name)"
            )
        tag = getattr(event, "tag", None)
        if tag is not None and tag not in ALLOWED_YAML_TAGS:
            shown = tag.replace(YAML_CORE_TAG, "!!", 1)
            raise DefinitionInvalid(
                f"{where}: unknown YAML tag {shown!r}: a definition holds plain values only "
                "(text, numbers, booleans, null, lists and mappings)"
            )
        if self.depth >= MAX_JSON_DEPTH:
            raise DefinitionInvalid(f"{where}: nested deeper than {MAX_JSON_DEPTH} levels")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _node_at(root: yaml.Node | None, loc: tuple[int | str, ...]) -> yaml.Node | None:
    """The YAML node an error location points to (or the deepest one found on the way)."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            if part == "[key]":
                continue
            match = next((pair for pair in node.value if pair[0].value == str(part)), None)
            if match is None:
                return node
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node
            node = node.value[part]
        else:
            return node
    return node


def _field_name(loc: tuple[int | str, ...]) -> str:
    parts = [p for p in loc if p != "[key]" and not str(p).startswith("function-")]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "definition"


def _duplicate_keys(node: yaml.Node, source: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            # A non-scalar key is refused when the document is constructed (unhashable).
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    line = key.start_mark.line + 1
                    raise DefinitionInvalid(
                        f"{source}:{line}: {key.value}: duplicate key", field=str(key.value)
                    )
                seen.add(key.value)
            _duplicate_keys(value, source)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _duplicate_keys(item, source)


def validate_spec(data: Any, source: str, node: yaml.Node | None = None) -> DefinitionSpec:
    """A spec from parsed data; errors name the source, the line (when known) and the field."""
    if not isinstance(data, dict):
        raise DefinitionInvalid(f"{source}: a definition must be a mapping of fields")
    try:
        return DefinitionSpec.model_validate(data)
    except ValidationError as exc:
        lines = []
        first_field = None
        errors = exc.errors(include_input=False, include_url=False)
        # The first few only: finding each one's line scans its mapping, so naming every one
        # of thousands (a mapping of bad labels) would take minutes and a megabyte.
        for error in errors[:MAX_REPORTED_ERRORS]:
            loc = tuple(error["loc"])
            field = _field_name(loc)
            first_field = first_field or field
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown field"
            where = source
            target = _node_at(node, loc)
            if target is not None:
                where = f"{source}:{target.start_mark.line + 1}"
            lines.append(f"{where}: {field}: {message}")
        if len(errors) > MAX_REPORTED_ERRORS:
            lines.append(f"and {len(errors) - MAX_REPORTED_ERRORS} more errors")
        raise DefinitionInvalid("; ".join(lines), field=first_field) from None


def load_yaml(text: str, source: str) -> list[DefinitionSpec]:
    """Every definition in a YAML (or JSON) text; documents are separated by ``---``.

    Anchors and aliases, tags other than plain values, nesting deeper than ``MAX_JSON_DEPTH``
    and texts longer than ``MAX_YAML_CHARS`` are refused, so the work is linear in a bounded
    size. Blocking (about a second for the longest text): on an event loop, call it in a
    thread.
    """
    if len(text) > MAX_YAML_CHARS:
        raise DefinitionInvalid(
            f"{source}: {len(text)} characters is over the limit of {MAX_YAML_CHARS} "
            "for a file of definitions"
        )
    documents: list[tuple[yaml.Node, Any]] = []
    try:
        # In the try: PyYAML's own reader (without libyaml) checks the characters at once.
        loader = _DefinitionLoader(text, source)
        while loader.check_node():
            node = loader.get_node()
            assert node is not None  # check_node() said a document follows
            _duplicate_keys(node, source)
            documents.append((node, loader.construct_document(node)))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise DefinitionInvalid(f"{source}{line}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise DefinitionInvalid(f"{source}: invalid YAML: {exc}") from None
    if not documents:
        raise DefinitionInvalid(f"{source}: no definition found")
    return [validate_spec(data, source, node) for node, data in documents]
