"""A stored log is the container's output, complete: each stream's lines whole and masked, the
last line stored even when Docker ends the followed stream before it, and an adopted attempt
reading on where the stored log ends. The frame format and the cursor alone, the pump over a
log kept as Docker keeps it, then through real containers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any

import docker
import pytest

from orchestrator.docker.log_stream import (
    STDERR,
    STDOUT,
    ChunkDecoder,
    FrameDecoder,
    LogFrame,
    log_frame,
    since_parameter,
)
from orchestrator.errors import ContainerFailure
from orchestrator.runner.log_pump import MAX_READY, TAIL_FRAMES, FrameCursor, LogPump, resume_since

from ..conftest import TEST_IMAGE, LiveServer, containers_of, wait_for
from .test_engine_outage import EngineProxy

SECRET = "s3cret-Value-42-abcdef"
# Docker's log driver passes on a line at its newline, or in 16 KiB pieces when it is longer.
DOCKER_LOG_CHUNK = 16_384


def frame(stream: int, time: int, data: str) -> LogFrame:
    return LogFrame(stream=stream, time=time, data=data.encode())


def wire(stream: int, payload: bytes) -> bytes:
    """One frame of Docker's multiplexed stream."""
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


# --- the frame format --------------------------------------------------------------------------


def test_frames_are_split_out_however_the_stream_is_chunked() -> None:
    frames = [(STDOUT, b"one\n"), (STDERR, b""), (STDERR, b"two \x00\n" * 3), (STDOUT, b"x" * 300)]
    data = b"".join(wire(stream, payload) for stream, payload in frames)
    for size in (1, 3, 8, 9, 100, len(data)):
        decoder = FrameDecoder()
        got = []
        for start in range(0, len(data), size):
            got += decoder.feed(data[start : start + size])
        assert got == frames, size
    # An incomplete frame gives nothing until its last byte arrives.
    decoder = FrameDecoder()
    assert decoder.feed(data[:15]) == [(STDOUT, b"one\n")]
    assert decoder.feed(b"") == []


def test_chunked_coding_is_undone_however_the_body_is_split() -> None:
    # Docker sends each message as its own chunk; a size may carry an extension.
    body = [wire(STDOUT, b"one\n"), b"", wire(STDERR, b"x" * 300)]
    data = b"".join(
        f"{len(piece):x}{';ext=1' if n == 2 else ''}\r\n".encode() + piece + b"\r\n"
        for n, piece in enumerate(body)
        if piece
    )
    data += b"0\r\n\r\nnot read"
    for size in (1, 2, 3, 7, 100, len(data)):
        chunks = ChunkDecoder()
        got = b""
        for start in range(0, len(data), size):
            got += chunks.feed(data[start : start + size])
        assert got == b"".join(body), size
        assert chunks.done
    for bad in (b"-5\r\nhello\r\n", b"1_0\r\n", b"3\r\nabcXY", b"z\r\n", b"f" * 5000):
        with pytest.raises(ValueError):
            ChunkDecoder().feed(bad)


def test_a_large_frame_in_small_pieces_is_gathered_whole() -> None:
    payload = b"2024-05-01T12:00:00Z " + b"y" * 100_000
    data = wire(STDOUT, payload) + wire(STDERR, b"e")
    decoder = FrameDecoder()
    got = []
    for start in range(0, len(data), 7):
        got += decoder.feed(data[start : start + 7])
    assert got == [(STDOUT, payload), (STDERR, b"e")]


def test_a_frame_starts_with_dockers_time_to_the_nanosecond() -> None:
    got = log_frame(STDERR, b"2024-05-01T12:00:00.000000007Z an error\n")
    start = int(datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()) * 1_000_000_000
    assert got == LogFrame(STDERR, start + 7, b"an error\n")
    # Fewer decimals (or none) are read as the same instant; the data may be empty.
    assert log_frame(STDOUT, b"2024-05-01T12:00:00.5Z ").time == start + 500_000_000
    assert log_frame(STDOUT, b"2024-05-01T12:00:00Z x").time == start
    # The seconds are parsed once and remembered: the next second is still its own.
    assert log_frame(STDOUT, b"2024-05-01T12:00:01.25Z y").time == start + 1_250_000_000
    assert log_frame(STDOUT, b"2024-05-01T12:00:00.25Z z").time == start + 250_000_000
    # Docker reports an error reading its log in band, without a timestamp.
    bad = [b"Error grabbing logs: log message is too large\n", b"2024-05-01T12:00:00.5 x"]
    bad += [b"2024-05-01T12:00:00.5Z", b"2024-05-01T12:00:00.1234567890Z x"]
    # Only digits after the point, at most nine of them (int() would take a sign or a space).
    bad += [b"2024-05-01T12:00:00.0123456789Z x", b"2024-05-01T12:00:00.+5Z x"]
    for payload in [*bad, b"2024-05-01T12:00:00.-5Z x", b"2024-05-01T12:0x:00.5Z x"]:
        with pytest.raises(ContainerFailure):
            log_frame(STDERR, payload)
    with pytest.raises(ContainerFailure):
        log_frame(3, b"2024-05-01T12:00:00Z x")


def test_since_names_the_exact_nanosecond() -> None:
    assert since_parameter(1_714_564_800_000_000_007) == "1714564800.000000007"
    assert since_parameter(5) == "0.000000005"
    # A resume time stored to the microsecond comes back as the nanosecond it stands for.
    stored = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert since_parameter(resume_since(stored) or 0) == "1714564800.123456000"
    assert resume_since(None) is None


# --- the cursor ----------------------------------------------------------------------------


def docker_log(random: Random, count: int) -> list[LogFrame]:
    """Frames as Docker stores them: within a stream times never go back and the pieces of a
    long line share one time; across streams times are out of order."""
    frames: list[LogFrame] = []
    clock = {STDOUT: 1000, STDERR: 1000}
    for n in range(count):
        stream = random.choice([STDOUT, STDERR])
        if random.random() < 0.6:  # a new line, stamped later (or in the same nanosecond)
            clock[stream] += random.choice([0, 1, 1, 2, 50])
        frames.append(frame(stream, clock[stream], f"{stream}:{n}\n"))
    return frames


def read(frames: list[LogFrame], stream: int, since: int | None) -> list[LogFrame]:
    """A read of one stream since a time, as the logs API answers it (inclusively)."""
    return [f for f in frames if f.stream == stream and (since is None or f.time >= since)]


def test_reading_on_from_the_cursor_gives_each_frame_once() -> None:
    random = Random(11)  # seeded: the same cases on every run
    for _ in range(500):
        frames = docker_log(random, random.choice([1, 5, 40]))
        followed = frames[: random.randint(0, len(frames))]  # the followed stream ended early
        cursor = FrameCursor()
        for f in followed:
            cursor.take(f)
        for stream in (STDOUT, STDERR):
            rest = []
            for f in cursor.unseen(read(frames, stream, cursor.since(stream))):
                cursor.take(f)
                rest.append(f)
            mine = [f for f in frames if f.stream == stream]
            assert [f for f in followed if f.stream == stream] + rest == mine
            # Read again: nothing is left.
            assert list(cursor.unseen(read(frames, stream, cursor.since(stream)))) == []


def test_the_rest_is_found_in_the_logs_last_frames_or_not_at_all() -> None:
    random = Random(12)
    found = 0
    for _ in range(1000):
        frames = docker_log(random, random.choice([1, 5, 40]))
        # Repeated data as well: pieces of one long line may be alike.
        frames = [f if random.random() < 0.5 else frame(f.stream, f.time, "same") for f in frames]
        followed = random.randint(1, len(frames))
        cursor = FrameCursor()
        for f in frames[:followed]:
            cursor.take(f)
        last = frames[followed - 1]
        for size in (1, 3, 10, len(frames)):
            tail = frames[-size:]
            start = cursor.after(last.stream, tail)
            # Found exactly when the tail holds a frame of that stream stamped before it.
            reaches = any(f.stream == last.stream and f.time < last.time for f in tail)
            assert (start is not None) == reaches
            if start is not None:
                found += 1
                assert tail[start:] == frames[followed:]
    assert found > 500  # the case is met often enough to be tested


def test_the_boundary_time_shared_by_several_frames() -> None:
    # Three pieces of one long line share a time; the followed stream gave two of them.
    pieces = [frame(STDOUT, 7, "a" * 3), frame(STDOUT, 7, "b" * 3), frame(STDOUT, 7, "c\n")]
    after = frame(STDOUT, 9, "next\n")
    cursor = FrameCursor()
    cursor.take(frame(STDOUT, 5, "before\n"))
    cursor.take(pieces[0])
    cursor.take(pieces[1])
    assert cursor.since(STDOUT) == 7
    assert cursor.since(STDERR) is None
    assert list(cursor.unseen([*pieces, after])) == [pieces[2], after]
    # A frame of the other stream at that time is its own.
    other = frame(STDERR, 7, "err\n")
    assert list(cursor.unseen([other])) == [other]
    assert cursor.last_time() == 7


# --- the pump over a log kept as Docker keeps it ----------------------------------------------


class StoredLog:
    """A container's log as Docker's log driver keeps it: a followed read ends after
    ``followed`` frames (as Docker's often does when the container exits), a read that does not
    follow gives all of them, or its last ``tail`` (of both streams); each read lists the
    frames stamped since ``since``."""

    def __init__(self, frames: list[LogFrame], followed: int | None = None) -> None:
        self.frames = frames
        self.followed = len(frames) if followed is None else followed
        self.reads: list[tuple[int | None, bool, int | None, int | None]] = []

    def __call__(
        self,
        *,
        since: int | None,
        follow: bool,
        stream: int | None = None,
        tail: int | None = None,
    ) -> Iterator[LogFrame]:
        self.reads.append((since, follow, stream, tail))
        frames = self.frames[: self.followed] if follow else self.frames
        if tail is not None:
            frames = frames[-tail:]
        return iter(
            [f for f in frames if stream in (None, f.stream) and (since is None or f.time >= since)]
        )


def pump_all(log: StoredLog, secrets: list[str], since: int | None = None) -> str:
    """Everything the pump gathers of ``log`` until it ends (the container has exited)."""
    pump = LogPump(log, secrets, since)
    pump.start()
    pump.container_exited()
    assert pump.join(10)
    return pump.take()


def test_each_stream_keeps_its_lines_whole_and_masked() -> None:
    # A stdout line in Docker's 16 KiB pieces, cut inside the value, with stderr lines between
    # its pieces: one of them also cut inside the value.
    frames = [
        frame(STDOUT, 10, "o" * 20 + SECRET[:6]),
        frame(STDERR, 11, "err one\n"),
        frame(STDERR, 12, "e" * 20 + SECRET[:3]),
        frame(STDOUT, 10, SECRET[6:15]),
        frame(STDERR, 12, SECRET[3:] + " end\n"),
        frame(STDOUT, 10, SECRET[15:] + " and more\n"),
        frame(STDOUT, 13, "out two\n"),
    ]
    text = pump_all(StoredLog(frames), [SECRET])
    assert text == (
        "err one\n" + "e" * 20 + "*** end\n" + "o" * 20 + "*** and more\n" + "out two\n"
    )


def test_what_the_followed_stream_left_out_is_read_once_it_has_exited() -> None:
    # The followed stream gave the first piece of a line cut inside the value, and one of the
    # three frames sharing the next time; the rest, without a final newline, came only after.
    frames = [
        frame(STDOUT, 1, "first\n"),
        frame(STDOUT, 2, "x" * 30 + SECRET[:10]),
        frame(STDERR, 2, "err\n"),
        frame(STDOUT, 2, SECRET[10:] + "\n"),
        frame(STDERR, 5, "e1\n"),
        frame(STDERR, 5, "e2\n"),
        frame(STDERR, 5, "e3\n"),
        frame(STDOUT, 6, "done"),
    ]
    log = StoredLog(frames, followed=5)
    text = pump_all(log, [SECRET])
    assert text == "first\nerr\n" + "x" * 30 + "***\ne1\ne2\ne3\ndone"
    # The log's last frames held all it left out: nothing else was read.
    assert log.reads == [(None, True, None, None), (None, False, None, TAIL_FRAMES)]
    # In a log longer than that, each stream is read again from its own position instead.
    late = [frame(STDOUT, 6, f"late {n}\n") for n in range(TAIL_FRAMES)]
    log = StoredLog(frames[:-1] + late, followed=5)
    text = pump_all(log, [SECRET])
    late_text = "".join(f.data.decode() for f in late)
    assert text == "first\nerr\n" + "x" * 30 + "***\ne1\ne2\ne3\n" + late_text
    assert log.reads[2:] == [(2, False, STDOUT, None), (5, False, STDERR, None)]


def test_unfinished_lines_of_both_streams_end_on_their_own_lines() -> None:
    frames = [frame(STDOUT, 1, "out without newline"), frame(STDERR, 2, "err without")]
    assert pump_all(StoredLog(frames), []) == "out without newline\nerr without"


def test_an_adopted_attempt_reads_from_its_resume_point() -> None:
    frames = [frame(STDOUT, 5_000_001_500, "old\n"), frame(STDOUT, 5_000_002_000, "new\n")]
    log = StoredLog(frames)
    assert pump_all(log, [], since=5_000_002_000) == "new\n"
    assert log.reads[0] == (5_000_002_000, True, None, None)


def test_the_resume_point_never_skips_part_of_a_line() -> None:
    started = datetime(2024, 5, 1, tzinfo=UTC)
    base = resume_since(started) or 0
    gate = threading.Event()  # the container writes the end of its long line

    def logs(
        *, since: int | None, follow: bool, stream: int | None = None, tail: int | None = None
    ) -> Iterator[LogFrame]:
        if follow:
            yield frame(STDOUT, base + 1_500, "whole\n")
            # The first piece of a long line, then a line on stderr.
            yield frame(STDOUT, base + 7_300, "piece")
            yield frame(STDERR, base + 9_999, "err\n")
            gate.wait()
            yield frame(STDOUT, base + 7_300, " end\n")

    pump = LogPump(logs, [])
    assert pump.resume_time is None  # nothing read yet
    pump.start()
    taken: list[str] = []
    wait_for(lambda: taken.append(pump.take()) or "err\n" in "".join(taken))
    assert "".join(taken) == "whole\nerr\n"
    # The stdout line is unfinished: an adopter reads it again from its first piece (rounded
    # down to the microsecond the database keeps), never its end without its start.
    assert pump.resume_time == started + timedelta(microseconds=7)
    gate.set()
    pump.container_exited()
    assert pump.join(10)
    assert pump.take() == "piece end\n"
    # Nothing unfinished: the first microsecond after the last frame read.
    assert pump.resume_time == started + timedelta(microseconds=10)


def test_the_pump_stops_reading_while_the_supervisor_is_behind() -> None:
    line = "y" * 99_999 + "\n"
    pulled: list[int] = []

    def logs(
        *, since: int | None, follow: bool, stream: int | None = None, tail: int | None = None
    ) -> Iterator[LogFrame]:
        for n in range(100 if follow else 0):
            pulled.append(n)
            yield frame(STDOUT, n, line)

    pump = LogPump(logs, [])
    pump.start()
    # Once the text it holds passes MAX_READY, the pump reads one more frame and holds it.
    held = MAX_READY // len(line) + 1
    wait_for(lambda: len(pulled) == held + 1)
    assert pump.take() == line * held
    pump.container_exited()
    texts: list[str] = []
    wait_for(lambda: texts.append(pump.take()) or pump.join(0))
    texts.append(pump.take())
    assert "".join(texts) == line * (100 - held)
    assert max(len(text) for text in texts) <= MAX_READY + len(line)


# --- through real containers -------------------------------------------------------------------


def sh(name: str, script: str) -> dict[str, Any]:
    """A definition running ``script`` in busybox sh, wanting the secret ``API_TOKEN``."""
    return {
        "name": name,
        "image": TEST_IMAGE,
        "command": ["sh", "-c", script],
        "secrets": ["API_TOKEN"],
    }


def run_all(server: LiveServer, definition: str, count: int) -> list[str]:
    """Submit ``count`` jobs of ``definition`` at once; their stored logs once they succeeded."""
    ids = [
        server.submit(definition=definition, secret_env={"API_TOKEN": SECRET})["id"]
        for _ in range(count)
    ]
    for job_id in ids:
        done = server.wait_job(job_id)
        assert done["status"] == "succeeded", done
    return [server.logs(job_id) for job_id in ids]


def test_output_ending_without_a_newline_is_stored_every_time(make_server: Any) -> None:
    # Docker 20.10 ends the followed stream before such a last line arrives more often than
    # not. The second job's last piece completes a value Docker cut at 16 KiB: without it, the
    # first half of the value would be stored unmasked.
    server = make_server(runner_capacity=6)
    server.register(sh("done", "echo first; sleep 0.2; printf done"))
    cut = f'head -c {DOCKER_LOG_CHUNK - 10} /dev/zero | tr "\\0" x; printf "%s" "$API_TOKEN"'
    server.register(sh("cut", f"echo first; sleep 0.2; {cut}"))
    assert run_all(server, "done", 6) == ["first\ndone"] * 6
    expected = "first\n" + "x" * (DOCKER_LOG_CHUNK - 10) + "***"
    assert run_all(server, "cut", 4) == [expected] * 4


def test_interleaved_streams_keep_their_lines_whole_and_masked(make_server: Any) -> None:
    # Each stream has a line longer than Docker's 16 KiB pieces, cut inside the value, and
    # the other stream writes between its pieces; the second half comes after a pause.
    script = (
        'T="$API_TOKEN"; '
        f'head -c {DOCKER_LOG_CHUNK - 10} /dev/zero | tr "\\0" o; printf "%s" "${{T:0:10}}"; '
        'echo "err one $T" >&2; '
        f'head -c {DOCKER_LOG_CHUNK - 4} /dev/zero | tr "\\0" e >&2; printf "%s" "${{T:0:4}}" >&2; '
        "sleep 0.3; "
        'printf "%s and more\\n" "${T:10}"; echo "out two"; '
        "sleep 0.3; "
        'printf "%s end\\n" "${T:4}" >&2; '
        'printf "out last %s" "$T"'
    )
    server = make_server(runner_capacity=3)
    server.register(sh("interleaved", script))
    expected_out = ["o" * (DOCKER_LOG_CHUNK - 10) + "*** and more", "out two", "out last ***"]
    expected_err = ["err one ***", "e" * (DOCKER_LOG_CHUNK - 4) + "*** end"]
    for log in run_all(server, "interleaved", 3):
        lines = log.split("\n")
        # Each stream's lines, whole and in their order (the streams' order is Docker's).
        assert [line for line in lines if line.startswith(("o", "out"))] == expected_out
        assert [line for line in lines if line.startswith("e")] == expected_err
        assert len(lines) == len(expected_out) + len(expected_err)
        assert SECRET[:8] not in log and SECRET[-8:] not in log


def test_an_adopted_attempt_stores_each_line_once(
    make_server: Any, docker_client: docker.DockerClient
) -> None:
    # One job prints on both streams without pause through the restart; the other is in the
    # middle of a long line (its first 16 KiB piece printed, cut inside the value) when the
    # runner stops.
    printer = (
        "i=0; while [ ! -e /tmp/go ]; do i=$((i+1)); "
        'echo "out $i"; usleep 2000; echo "err $i" >&2; usleep 2000; done; echo "end $i"'
    )
    long_line = (
        'T="$API_TOKEN"; echo before; '
        f'head -c {DOCKER_LOG_CHUNK - 10} /dev/zero | tr "\\0" x; printf "%s" "${{T:0:10}}"; '
        "touch /tmp/printed; while [ ! -e /tmp/go ]; do usleep 20000; done; "
        'printf "%s rest\\n" "${T:10}"; echo after'
    )
    first = make_server()
    first.register(sh("printer", printer))
    first.register(sh("long-line", long_line))
    jobs = {
        name: first.submit(definition=name, secret_env={"API_TOKEN": SECRET})["id"]
        for name in ("printer", "long-line")
    }
    wait_for(lambda: first.logs(jobs["printer"]).count("\n") > 50)
    (long_container,) = containers_of(docker_client, jobs["long-line"])
    wait_for(lambda: long_container.exec_run(["test", "-e", "/tmp/printed"]).exit_code == 0)
    wait_for(lambda: first.logs(jobs["long-line"]) == "before\n")
    first.stop()

    second = make_server()
    # Lines were stored before the restart, and the adopter stores more: those printed while
    # no runner was reading, and after.
    stored = second.logs(jobs["printer"]).count("\n")
    wait_for(lambda: second.logs(jobs["printer"]).count("\n") > stored + 100, timeout=60)
    for name in jobs:
        (container,) = containers_of(docker_client, jobs[name])
        container.exec_run(["touch", "/tmp/go"])
    done = {name: second.wait_job(job_id) for name, job_id in jobs.items()}
    assert {job["status"] for job in done.values()} == {"succeeded"}, done

    assert second.logs(jobs["long-line"]) == (
        "before\n" + "x" * (DOCKER_LOG_CHUNK - 10) + "*** rest\nafter\n"
    )
    lines = second.logs(jobs["printer"]).splitlines()
    # The two streams are stamped apart: the last stderr line may sort after stdout's "end".
    (last,) = [int(line.removeprefix("end ")) for line in lines if line.startswith("end ")]
    assert [line for line in lines if line.startswith("out ")] == [
        f"out {i}" for i in range(1, last + 1)
    ]
    assert [line for line in lines if line.startswith("err ")] == [
        f"err {i}" for i in range(1, last + 1)
    ]
    assert len(lines) == 2 * last + 1


def test_output_printed_while_the_engine_was_unreachable_is_stored(
    make_server: Any, docker_client: docker.DockerClient
) -> None:
    # The runner reaches Docker through a proxy the test takes down: the followed stream breaks
    # while the container goes on printing, and exits. Once the engine is back, what the stream
    # left out is read from where it broke.
    proxy = EngineProxy()
    proxy.up()
    try:
        server = make_server(docker_host=proxy.url)
        script = (
            "i=0; while [ ! -e /tmp/go ]; do i=$((i+1)); "
            'echo "line $i"; usleep 5000; done; printf "end $i"'
        )
        server.register(sh("steady", script))
        job = server.submit(definition="steady", secret_env={"API_TOKEN": SECRET})
        wait_for(lambda: server.logs(job["id"]).count("\n") > 20)
        proxy.down()
        (container,) = containers_of(docker_client, job["id"])
        container.exec_run(["touch", "/tmp/go"])
        assert container.wait(timeout=30)["StatusCode"] == 0
        proxy.up()
        done = server.wait_job(job["id"])
    finally:
        proxy.down()
    assert done["status"] == "succeeded", done
    lines = server.logs(job["id"]).split("\n")
    # The two streams are stamped apart: the last stderr line may sort after stdout's "end".
    (last,) = [int(line.removeprefix("end ")) for line in lines if line.startswith("end ")]
    assert lines == [f"line {i}" for i in range(1, last + 1)] + [f"end {last}"]
