"""One attempt of a GA4GH TES task on the engine, with no database: its inputs staged in the
task's host directory, its executors run in order as containers sharing that directory's
volumes, its outputs delivered; what happened is returned (and each executor's start and end
told as they come) for the caller to record.

Each executor is a container named ``<names>-x<index>``, carrying the job's labels and
``TES_EXECUTOR_LABEL``: a restarted runner's adoption removes it rather than take it for the
job's container (``attempt_adoption``), ``reconcile``'s stray sweep removes it once its attempt
has ended, and ``remove_task_containers`` removes those of an attempt. Each is removed as soon
as its outcome is read. Its stdout and stderr are read from the engine once it exited, whole,
into the files the executor names, and their tails kept for the task's logs.

Outputs are delivered only when every executor succeeded (or was allowed to fail), as Funnel
does and as the spec's output log ("after the task has completed successfully") reads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

from orchestrator.docker.engine import DockerEngine, StdinPipe
from orchestrator.docker.log_stream import STDERR, STDOUT
from orchestrator.docker.spec import (
    INSTALLATION_LABEL,
    PROJECT_LABEL,
    TES_EXECUTOR_LABEL,
    ContainerSpec,
)
from orchestrator.errors import (
    ContainerFailure,
    EngineUnavailable,
    ImageUnavailable,
    OrchestratorError,
)
from orchestrator.rules.containers import project_network
from orchestrator.runner.tes_files import (
    Mounts,
    OutputFile,
    TesFileError,
    TesFileSettings,
    container_parts,
    deliver_output,
    host_path,
    open_for_writing,
    open_regular,
    plan_mounts,
    stage_input,
)

__all__ = [
    "ExecutorOutcome",
    "OutputFile",
    "TaskOutcome",
    "TesFileSettings",
    "remove_task_containers",
    "run_task",
]

logger = logging.getLogger(__name__)

# Bytes of each stream an executor's outcome keeps: its last ones.
TAIL_BYTES = 64 * 1024
# Seconds between two looks at the cancel flag while an executor runs.
_CANCEL_POLL = 0.05
# Seconds the stdin feeder may take to see its pipe closed once its executor exited.
_FEEDER_JOIN = 5.0

# An executor that did not run to an exit of its own has the code ``docker run`` exits with:
# its container could not be made (a missing image, a mount refused), its command could not be
# invoked, or its command was not found.
NOT_MADE = 125
NOT_INVOKED = 126
NOT_FOUND = 127

TaskState = Literal["complete", "executor_error", "system_error", "canceled"]


@dataclass(frozen=True)
class ExecutorOutcome:
    """What one executor did."""

    index: int
    start_time: datetime  # aware UTC
    end_time: datetime | None
    # As ``docker run`` gives it: NOT_MADE, NOT_INVOKED or NOT_FOUND when the executor never
    # ran, its container's status when a cancel stopped it; None if the engine lost it.
    exit_code: int | None
    stdout: str  # the tail (last 64 KiB at most, decoded, invalid bytes replaced)
    stderr: str


@dataclass(frozen=True)
class TaskOutcome:
    """What the attempt came to."""

    state: TaskState
    executors: list[ExecutorOutcome]
    outputs: list[OutputFile]
    system_logs: list[str]  # what went wrong outside the executors, for TES system_logs
    # The image an executor needed and the engine does not have, if that ended the task.
    missing_image: str | None = None
    # The executors succeeded but an output could not be delivered.
    outputs_failed: bool = False


def _now() -> datetime:
    return datetime.now(UTC)


def run_task(
    engine: DockerEngine,
    task: dict[str, Any],
    *,
    task_dir: Path,
    names: str,
    labels: dict[str, str],
    network: str | None,
    user: str | None,
    nano_cpus: int | None,
    memory_bytes: int | None,
    settings: TesFileSettings,
    cancel: threading.Event,
    on_executor_started: Callable[[int, datetime], None],
    on_executor_ended: Callable[[ExecutorOutcome], None],
    stop_grace: float = 10.0,
    pids: int | None = None,
) -> TaskOutcome:
    """Run one attempt of ``task`` (the stored TES task: ``executors``, ``inputs``,
    ``outputs``, ``volumes``) in the empty directory ``task_dir``, on the network ``network``
    (None: Docker's default bridge).

    A failed input ends it as ``system_error`` before any executor starts. ``cancel`` stops the
    running executor (SIGTERM, ``stop_grace`` seconds, SIGKILL) and starts no other. ``pids``,
    ``nano_cpus`` and ``memory_bytes`` limit every executor. Every
    executor that was tried is told to ``on_executor_started`` (once started, or when its
    container could not be made) and then to ``on_executor_ended``. ``EngineUnavailable``
    propagates, its executor containers left to ``remove_task_containers``.
    """
    run = _TaskRun(
        engine,
        task_dir=task_dir,
        names=names,
        labels=labels,
        network=network,
        user=user,
        nano_cpus=nano_cpus,
        memory_bytes=memory_bytes,
        cancel=cancel,
        stop_grace=stop_grace,
        pids=pids,
    )
    return run.run(task, settings, on_executor_started, on_executor_ended)


def remove_task_containers(engine: DockerEngine, labels: dict[str, str]) -> None:
    """Kill and remove every executor container carrying these labels (a restart's cleanup)."""
    if not labels:
        raise ValueError("labels must name the attempt: none would take every task's executors")
    for container_id, found in engine.find_labelled(TES_EXECUTOR_LABEL).items():
        if all(found.get(key) == value for key, value in labels.items()):
            engine.remove(container_id)


@dataclass(frozen=True)
class _Ran:
    """An executor's outcome, with what stops the task besides its exit code: a system log
    line and the task's state."""

    outcome: ExecutorOutcome
    problem: str | None = None
    state: Literal["executor_error", "system_error"] = "system_error"
    missing_image: str | None = None
    # A cancel stopped it.
    cancelled: bool = False


class _TaskRun:
    """The attempt's executors on the engine."""

    def __init__(
        self,
        engine: DockerEngine,
        *,
        task_dir: Path,
        names: str,
        labels: dict[str, str],
        network: str | None,
        user: str | None,
        nano_cpus: int | None,
        memory_bytes: int | None,
        cancel: threading.Event,
        stop_grace: float,
        pids: int | None,
    ) -> None:
        self.engine = engine
        self.task_dir = task_dir
        self.names = names
        self.labels = labels
        self.network = network
        self.user = user
        self.nano_cpus = nano_cpus
        self.memory_bytes = memory_bytes
        self.cancel = cancel
        self.stop_grace = stop_grace
        self.pids = pids

    def run(
        self,
        task: dict[str, Any],
        settings: TesFileSettings,
        on_started: Callable[[int, datetime], None],
        on_ended: Callable[[ExecutorOutcome], None],
    ) -> TaskOutcome:
        executors: list[ExecutorOutcome] = []
        if self.cancel.is_set():
            return TaskOutcome("canceled", [], [], [])
        try:
            mounts = plan_mounts(task, self.task_dir)
            for index, item in enumerate(task.get("inputs") or []):
                if self.cancel.is_set():
                    return TaskOutcome("canceled", [], [], [])
                stage_input(item, index, self.task_dir, settings)
        except TesFileError as exc:
            return TaskOutcome("system_error", [], [], [f"{exc}; no executor was started"])
        logs: list[str] = []
        state: TaskState = "complete"
        missing_image: str | None = None
        for index, executor in enumerate(task["executors"]):
            if self.cancel.is_set():
                state = "canceled"
                break
            ran = self._execute(index, executor, mounts, on_started)
            executors.append(ran.outcome)
            on_ended(ran.outcome)
            if ran.problem is not None:
                logs.append(ran.problem)
                if ran.state == "system_error" or not executor.get("ignore_error"):
                    state = ran.state
                    missing_image = ran.missing_image
                    break
                continue  # an error of the executor's own, which it ignores
            code = ran.outcome.exit_code
            if ran.cancelled:
                state = "canceled"
                break
            if code != 0 and not executor.get("ignore_error"):
                state = "executor_error"
                break
        outputs: list[OutputFile] = []
        outputs_failed = False
        if state == "complete":
            try:
                for index, output in enumerate(task.get("outputs") or []):
                    outputs += deliver_output(output, index, self.task_dir, settings)
            except TesFileError as exc:
                logs.append(str(exc))
                state, outputs_failed = "system_error", True
        return TaskOutcome(state, executors, outputs, logs, missing_image, outputs_failed)

    def _execute(
        self,
        index: int,
        executor: dict[str, Any],
        mounts: Mounts,
        on_started: Callable[[int, datetime], None],
    ) -> _Ran:
        """Run one executor to its end (or its cancel), then remove its container."""
        start = _now()
        with ExitStack() as stack:
            try:
                stdin = self._stdin(index, executor)
                if stdin is not None:
                    stack.enter_context(stdin)
                streams = {
                    STDOUT: self._stream_parts(index, executor, "stdout"),
                    STDERR: self._stream_parts(index, executor, "stderr"),
                }
                spec = self._spec(index, executor, mounts, stdin)
            except TesFileError as exc:
                return self._not_run(index, start, str(exc), on_started)
            try:
                container_id = self.engine.create(spec)
            except EngineUnavailable:
                raise
            except OrchestratorError as exc:
                problem = f"executor {index} could not be created: {exc.message}"
                ran = self._not_run(index, start, problem, on_started)
                if isinstance(exc, ImageUnavailable):
                    return replace(ran, missing_image=executor["image"])
                return ran
            stack.callback(self._remove, container_id)
            ran = self._supervise(index, container_id, stdin, streams, on_started)
        return ran

    @staticmethod
    def _not_run(
        index: int, start: datetime, problem: str, on_started: Callable[[int, datetime], None]
    ) -> _Ran:
        on_started(index, start)
        return _Ran(ExecutorOutcome(index, start, _now(), NOT_MADE, "", ""), problem)

    def _supervise(
        self,
        index: int,
        container_id: str,
        stdin: BinaryIO | None,
        streams: dict[int, tuple[str, ...] | None],
        on_started: Callable[[int, datetime], None],
    ) -> _Ran:
        """Start the created executor, feed its stdin, wait for its exit (or stop it when
        cancelled), and keep its output."""
        pipe: StdinPipe | None = None
        try:
            if stdin is not None:
                pipe = self.engine.attach_stdin(container_id)
            self.engine.start(container_id)
        except ContainerFailure as exc:
            if pipe is not None:
                pipe.close()
            # The engine refused to start it: its command, workdir or user do not fit its image.
            start = _now()
            on_started(index, start)
            problem = f"executor {index} could not start: {exc.message}"
            words = exc.message.lower()
            missing = "not found" in words or "no such file" in words
            code = NOT_FOUND if missing else NOT_INVOKED
            return _Ran(
                ExecutorOutcome(index, start, start, code, "", ""), problem, "executor_error"
            )
        start = _now()
        on_started(index, start)
        feeder: threading.Thread | None = None
        if pipe is not None and stdin is not None:
            feeder = threading.Thread(
                target=pipe.feed, args=(stdin,), name=f"{self.names}-x{index}-stdin", daemon=True
            )
            feeder.start()
        tails = {STDOUT: "", STDERR: ""}
        try:
            exit_code, stopped = self._wait(container_id)
            end = _now()
            if pipe is not None and feeder is not None:
                # What the executor did not read of its stdin is not fed to anything.
                pipe.close()
                feeder.join(_FEEDER_JOIN)
            tails = self._outputs(container_id, streams)
        except (ContainerFailure, TesFileError) as exc:
            # The container went (removed by someone else), or a stream's file cannot be
            # written where the executor points it.
            text = exc.message if isinstance(exc, ContainerFailure) else str(exc)
            outcome = ExecutorOutcome(index, start, _now(), None, tails[STDOUT], tails[STDERR])
            return _Ran(outcome, f"executor {index}: {text}")
        outcome = ExecutorOutcome(index, start, end, exit_code, tails[STDOUT], tails[STDERR])
        return _Ran(outcome, cancelled=stopped)

    def _stdin(self, index: int, executor: dict[str, Any]) -> BinaryIO | None:
        """The file the executor's ``stdin`` names, opened (never through a link)."""
        path = executor.get("stdin")
        if not path:
            return None
        what = f"executors[{index}].stdin"
        try:
            opened = open_regular(host_path(self.task_dir, container_parts(path, what)))
        except TesFileError as exc:
            raise TesFileError(f"{what}: {exc}") from None
        if opened is None:
            raise TesFileError(f"{what}: {path} does not exist")
        return opened

    @staticmethod
    def _stream_parts(index: int, executor: dict[str, Any], name: str) -> tuple[str, ...] | None:
        path = executor.get(name)
        return container_parts(path, f"executors[{index}].{name}") if path else None

    def _spec(
        self, index: int, executor: dict[str, Any], mounts: Mounts, stdin: BinaryIO | None
    ) -> ContainerSpec:
        installation = self.labels.get(INSTALLATION_LABEL)
        project = self.labels.get(PROJECT_LABEL)
        own_labels: dict[str, str] = {}
        if installation and project and self.network == project_network(installation, project):
            # The project's own network is made on demand, as for the job's own container.
            own_labels = {INSTALLATION_LABEL: installation, PROJECT_LABEL: project}
        return ContainerSpec(
            name=f"{self.names}-x{index}",
            image=executor["image"],
            command=[str(arg) for arg in executor["command"]],
            env={str(k): str(v) for k, v in (executor.get("env") or {}).items()},
            labels={**self.labels, TES_EXECUTOR_LABEL: str(index)},
            working_dir=executor.get("workdir") or None,
            user=self.user,
            network=self.network or "bridge",
            cpus=self.nano_cpus / 1e9 if self.nano_cpus else None,
            memory=self.memory_bytes,
            pids=self.pids,
            mounts=mounts.read_write,
            read_only_mounts=mounts.read_only,
            stdin_open=stdin is not None,
            own_labels=own_labels,
            own_network=bool(own_labels),
        )

    def _wait(self, container_id: str) -> tuple[int | None, bool]:
        """The executor's exit code (None if it went with its container) and whether
        ``cancel`` stopped it."""
        result: list[int] = []
        failure: list[BaseException] = []
        done = threading.Event()

        def wait() -> None:
            try:
                result.append(self.engine.wait(container_id))
            except BaseException as exc:
                failure.append(exc)
            finally:
                done.set()

        threading.Thread(target=wait, name=f"{container_id[:12]}-wait", daemon=True).start()
        while not done.wait(_CANCEL_POLL):
            if self.cancel.is_set():
                try:
                    self.engine.stop(container_id, self.stop_grace)
                except ContainerFailure:
                    self.engine.remove(container_id)  # killed with it
                done.wait()
                return (result[0] if result else None), True
        if failure:
            raise failure[0]
        return result[0], False

    def _outputs(
        self, container_id: str, streams: dict[int, tuple[str, ...] | None]
    ) -> dict[int, str]:
        """Both streams of the exited executor, read at once, each whole into the host file of
        its container path (if it has one); their tails."""
        tails = {kind: bytearray() for kind in streams}
        with ExitStack() as stack:
            writers: dict[int, BinaryIO] = {}
            for kind, parts in streams.items():
                if parts is None:
                    continue
                name = "stdout" if kind == STDOUT else "stderr"
                try:
                    target = host_path(self.task_dir, parts, make_parents=True)
                    writers[kind] = stack.enter_context(open_for_writing(target))
                except TesFileError as exc:
                    raise TesFileError(f"{name}: {exc}") from None
                except OSError as exc:
                    raise TesFileError(
                        f"{name}: {'/' + '/'.join(parts)} cannot be written ({exc.strerror})"
                    ) from None
            for frame in self.engine.logs(container_id, follow=False):
                writer = writers.get(frame.stream)
                if writer is not None:
                    writer.write(frame.data)
                tail = tails[frame.stream]
                tail += frame.data
                if len(tail) > 2 * TAIL_BYTES:
                    del tail[:-TAIL_BYTES]
        return {
            kind: bytes(tail[-TAIL_BYTES:]).decode("utf-8", "replace")
            for kind, tail in tails.items()
        }

    def _remove(self, container_id: str) -> None:
        try:
            self.engine.remove(container_id)
        except ContainerFailure as exc:
            # The reconcile sweep removes it once the attempt has ended.
            logger.warning("could not remove a TES executor container: %s", exc.message)
