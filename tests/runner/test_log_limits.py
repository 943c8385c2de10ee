"""The stored log of an attempt is bounded by ``ORCH_MAX_LOG_BYTES``: the head as it came, a
marker of what was cut, the tail; the budget's rules alone, then through real containers."""

from __future__ import annotations

from collections.abc import Iterator
from random import Random
from typing import Any

import docker

from orchestrator.runner.log_budget import LogBudget, cut_marker, cutting_marker
from orchestrator.runner.log_pump import MAX_PARTIAL_LINE, LogPump

from ..conftest import TEST_IMAGE, LiveServer, containers_of, wait_for

LIMIT = 8192  # the smallest budget the setting allows is 4096; this one keeps 4096 + 4096
HALF = LIMIT // 2
SECRET = "s3cret-Value-42"
CUTTING = cutting_marker(LIMIT, HALF)


def numbered(first: int, last: int) -> str:
    """Lines ``first`` to ``last`` as the containers below print them (34 bytes each)."""
    return "".join(f"line {i:05d} of the numbered output\n" for i in range(first, last + 1))


def print_numbered(first: int, last: int) -> str:
    """A shell command printing ``numbered(first, last)``."""
    return (
        f"awk 'BEGIN {{ for (i = {first}; i <= {last}; i++)"
        f' printf "line %05d of the numbered output\\n", i }}\''
    )


def feed(budget: LogBudget, text: str, piece: int) -> list[str]:
    """What ``budget`` stores of ``text`` given ``piece`` characters at a time, then flushed."""
    stored: list[str] = []
    for start in range(0, len(text), piece):
        stored += budget.add(text[start : start + piece])
    return stored + budget.flush()


def bounded(output: str, max_bytes: int = LIMIT) -> str:
    """The stored form of ASCII ``output`` made of short lines, as the budget promises it."""
    if len(output) <= max_bytes:
        return output
    head = output[: max_bytes // 2]
    tail = output[output.index("\n", len(output) - HALF - 1) + 1 :]
    cut = output[len(head) : len(output) - len(tail)]
    opener = "" if head.endswith("\n") else "\n"
    return head + opener + CUTTING + cut_marker(len(cut), cut.count("\n")) + tail


# --- the budget alone --------------------------------------------------------------------------


def test_output_within_the_budget_is_stored_exactly_as_it_came() -> None:
    budget = LogBudget(LIMIT)
    assert budget.add("one\n") == ["one\n"]
    assert budget.add("") == []
    head = "h" * (HALF - 5) + "\n"
    assert budget.add(head) == [head]
    # The head is full to the byte: the rest is held, and stored when the attempt ends.
    rest = "t" * (HALF - 1) + "\n"
    assert budget.add(rest) == []
    assert budget.flush() == [rest]
    assert budget.flush() == []


def test_head_cut_inside_a_line_then_the_marker_on_its_own_line_once() -> None:
    budget = LogBudget(LIMIT)
    assert budget.add("x" * 5000) == ["x" * HALF]
    assert budget.add("x" * 4000 + "\n") == ["\n" + CUTTING]
    assert budget.add("more\n") == []
    kept = "x" * (HALF - 6) + "\n" + "more\n"
    cut = 5000 + 4000 - HALF - (HALF - 6)
    assert budget.flush() == [f"[orchestrator: {cut} bytes (0 lines) cut here]\n", kept]


def test_tail_keeps_the_latest_whole_lines_and_counts_what_was_cut() -> None:
    output = numbered(1, 3000)
    # Pieces of 700 characters: lines are split across them, as they can be in a container's output.
    stored = feed(LogBudget(LIMIT), output, 700)
    assert "".join(stored) == bounded(output)
    head, tail = "".join(stored[:-3]), stored[-1]
    assert stored[-3:-1] == ["\n" + CUTTING, "[orchestrator: 93824 bytes (2760 lines) cut here]\n"]
    assert head == output[:HALF]
    assert tail.startswith("line ") and output.endswith(tail)
    # Whole lines: the tail wastes less than one line of its half.
    assert HALF - 34 < len(tail) <= HALF
    assert len(head) + 93824 + len(tail) == len(output)


def test_multi_byte_characters_are_never_split() -> None:
    # 3 bytes each: the head ends one byte short rather than inside a character.
    budget = LogBudget(LIMIT)
    stored = budget.add("€" * 2000)
    assert stored == ["€" * (HALF // 3)]
    assert len(stored[0].encode()) == HALF - 1
    # The tail, cut inside one long line, starts on a whole character too.
    stored += budget.add("ü€" * 3000)
    assert stored[-1] == "\n" + CUTTING
    marker, tail = budget.flush()
    assert tail == "ü€" * 819
    assert len(tail.encode()) == HALF - 1
    assert marker == "[orchestrator: 12810 bytes (0 lines) cut here]\n"


def test_a_line_longer_than_the_tail_keeps_its_end() -> None:
    budget = LogBudget(LIMIT)
    assert budget.add("h" * (HALF - 1) + "\n") == ["h" * (HALF - 1) + "\n"]
    assert budget.add("y" * 20_000 + "\n") == [CUTTING]
    assert budget.flush() == [cut_marker(20_001 - HALF, 0), "y" * (HALF - 1) + "\n"]
    # A short line after a long one does not throw the long one's end away: a cut at a line
    # start is taken only while it keeps at least half the tail.
    budget.add("z" * 10_000 + "\n" + "done\n")
    assert budget.flush() == [cut_marker(10_006 - HALF, 0), "z" * (HALF - 6) + "\ndone\n"]


def test_any_output_in_any_pieces_is_accounted_for_to_the_byte() -> None:
    random = Random(7)  # seeded: the same cases on every run
    for _ in range(300):
        output = "".join(
            random.choice(["a", "\n", "é", "€", "😀"]) * random.choice([1, 1, 3, 50, 900])
            for _ in range(random.choice([10, 300, 3000]))
        )
        budget, stored, start = LogBudget(LIMIT), [], 0
        while start < len(output):
            size = random.choice([1, 7, 100, 3000, 20_000])
            stored += budget.add(output[start : start + size])
            start += size
        flushed = budget.flush()
        if not flushed or not flushed[0].startswith("[orchestrator:"):
            assert "".join(stored + flushed) == output  # nothing cut: stored as it came
            continue
        head, tail = "".join(stored[:-1]), flushed[1]
        assert stored[-1] == ("\n" + CUTTING if not head.endswith("\n") else CUTTING)
        assert output.startswith(head) and output.endswith(tail)
        assert HALF - 3 <= len(head.encode()) <= HALF
        assert HALF // 2 - 3 <= len(tail.encode()) <= HALF
        cut = output.encode()[len(head.encode()) : -len(tail.encode())]
        assert flushed[0] == cut_marker(len(cut), cut.count(b"\n"))


def test_an_adopted_attempt_goes_on_with_the_budget_already_used() -> None:
    within_head = LogBudget(LIMIT, stored=100)
    assert within_head.add("a" * 5000) == ["a" * (HALF - 100)]
    # Past the head, the earlier runner stored the marker (or a tail): it is not repeated.
    past_head = LogBudget(LIMIT, stored=HALF + 500)
    assert past_head.add("b" * 9000 + "\n") == []
    assert past_head.flush() == [cut_marker(9001 - HALF, 0), "b" * (HALF - 1) + "\n"]


def test_a_secret_across_the_head_boundary_is_masked_before_the_cut() -> None:
    pump = LogPump(lambda: iter(()), [SECRET])
    pump.feed(b"f" * (HALF - 6) + f"key={SECRET} end\n".encode() + numbered(1, 400).encode())
    pump.feed(b"", final=True)
    stored = "".join(feed(LogBudget(LIMIT), pump.take(), 10_000))
    assert stored.startswith("f" * (HALF - 6) + "key=**\n[orchestrator: log over")
    assert SECRET[:5] not in stored and SECRET[-5:] not in stored
    assert stored.endswith(numbered(400, 400))


def test_a_secret_across_the_cut_of_a_long_line_is_masked() -> None:
    # A line longer than MAX_PARTIAL_LINE is let go in pieces before its newline arrives.
    pump = LogPump(lambda: iter(()), [SECRET])
    pump.feed(b"y" * MAX_PARTIAL_LINE + SECRET[:6].encode())
    first = pump.take()
    assert first and SECRET[:6] not in first
    pump.feed(SECRET[6:].encode() + b" end\n")
    assert first + pump.take() == "y" * MAX_PARTIAL_LINE + "*** end\n"


def test_nul_bytes_become_replacement_characters() -> None:
    pump = LogPump(lambda: iter(()), [])
    pump.feed(b"a\x00b\n")
    assert pump.take() == "a\ufffdb\n"


# --- through real containers -------------------------------------------------------------------


def follow(server: LiveServer, job_id: str, **params: Any) -> Iterator[str]:
    """The job's log as ``follow=true`` streams it, until the job ends."""
    url = f"/v1/projects/default/jobs/{job_id}/logs"
    with server.http.stream("GET", url, params={"follow": "true", **params}) as response:
        assert response.status_code == 200
        yield from response.iter_text()


def test_a_large_log_keeps_head_marker_and_tail_within_the_budget(make_server: Any) -> None:
    server = make_server(max_log_bytes=LIMIT)
    script = f'echo "first $TOKEN"; {print_numbered(1, 6000)}; echo "last $TOKEN"'
    server.register({"name": "chatty", "image": TEST_IMAGE, "command": ["sh", "-c", script]})
    job = server.submit(definition="chatty", secret_env={"TOKEN": SECRET})
    followed = "".join(follow(server, job["id"]))
    done = server.wait_job(job["id"])
    assert done["status"] == "succeeded", done

    output = "first ***\n" + numbered(1, 6000) + "last ***\n"
    log = server.logs(job["id"])
    assert log == bounded(output)
    assert followed == log
    assert log.startswith("first ***\nline 00001 of the numbered output\n")
    assert log.endswith("line 06000 of the numbered output\nlast ***\n")
    assert "[orchestrator: log over ORCH_MAX_LOG_BYTES (8192 bytes); output is being cut" in log
    head, _, rest = log.partition("\n[orchestrator: log over")
    tail = rest.split(" cut here]\n")[1]
    cut = output[len(head) : len(output) - len(tail)]
    lines = cut.count("\n")
    assert f"[orchestrator: {len(cut)} bytes ({lines} lines) cut here]\n" in log
    assert log.count("[orchestrator:") == 2
    markers = len(CUTTING) + 1 + len(cut_marker(len(cut), lines))
    assert len(log.encode()) <= LIMIT + markers
    assert SECRET not in log


def test_a_log_under_the_limit_is_untouched_and_each_attempt_has_its_own_budget(
    make_server: Any,
) -> None:
    server = make_server(max_log_bytes=LIMIT)
    # Over the head but within the budget: stored whole, no marker.
    server.register(
        {"name": "fits", "image": TEST_IMAGE, "command": ["sh", "-c", print_numbered(1, 230)]}
    )
    fits = server.submit(definition="fits")
    retry = {"attempts": 2, "on_exit_codes": [3], "backoff": "100ms"}
    script = f"{print_numbered(1, 1000)}; exit 3"
    server.register(
        {"name": "loud", "image": TEST_IMAGE, "command": ["sh", "-c", script], "retry": retry}
    )
    loud = server.submit(definition="loud")

    assert server.wait_job(fits["id"])["status"] == "succeeded", server.job(fits["id"])
    assert server.logs(fits["id"]) == numbered(1, 230)
    assert "".join(follow(server, fits["id"])) == numbered(1, 230)

    done = server.wait_job(loud["id"])
    assert (done["status"], done["attempt"]) == ("failed", 2)
    url = f"/v1/projects/default/jobs/{loud['id']}/logs"
    for attempt in (1, 2):
        response = server.http.get(url, params={"attempt": attempt})
        assert response.text == bounded(numbered(1, 1000))
    assert server.logs(loud["id"]) == bounded(numbered(1, 1000)) * 2


def test_the_tail_survives_a_runner_restart(
    make_server: Any, docker_client: docker.DockerClient
) -> None:
    first = make_server(max_log_bytes=LIMIT)
    script = (
        f"{print_numbered(1, 3000)}; touch /tmp/printed; "
        f"while [ ! -e /tmp/go ]; do sleep 0.05; done; {print_numbered(3001, 6000)}"
    )
    first.register({"name": "long", "image": TEST_IMAGE, "command": ["sh", "-c", script]})
    job = first.submit(definition="long")
    wait_for(lambda: "output is being cut" in first.logs(job["id"]), timeout=30)
    (container,) = containers_of(docker_client, job["id"])
    wait_for(lambda: container.exec_run(["test", "-e", "/tmp/printed"]).exit_code == 0)
    # Stopping lets the container run on; the runner stores the tail it held before it goes.
    first.stop()

    second = make_server(max_log_bytes=LIMIT)
    before = second.logs(job["id"])
    head, _, rest = before.partition("\n" + CUTTING)
    assert head == numbered(1, 3000)[:HALF]
    # The runner had read up to some line k when it stopped: whatever k, the tail ends at it,
    # holds whole lines, and the marker counts exactly what lies between head and tail.
    assert rest.startswith("[orchestrator: ")
    tail = rest.split("\n", 1)[1]
    k = int(tail.rsplit("line ", 1)[1][:5])
    printed = numbered(1, k)
    assert tail.startswith("line ") and printed.endswith(tail)
    assert 0 < len(tail) <= HALF
    cut = printed[HALF : len(printed) - len(tail)]
    first_cut = cut_marker(len(cut), cut.count("\n"))
    assert rest == first_cut + tail

    container.exec_run(["touch", "/tmp/go"])
    done = second.wait_job(job["id"], timeout=60)
    assert done["status"] == "succeeded", done
    after = second.logs(job["id"])
    # What was stored before the restart stays; the adopter reads on after line k (nothing
    # dropped, nothing repeated) and adds its own marker and tail.
    assert after.startswith(before)
    resumed = numbered(k + 1, 6000)
    tail2 = resumed[resumed.index("\n", len(resumed) - HALF - 1) + 1 :]
    cut2 = resumed[: -len(tail2)]
    second_cut = cut_marker(len(cut2), cut2.count("\n"))
    assert after[len(before) :] == second_cut + tail2
    assert after.endswith(numbered(6000, 6000))
    # A restart while cutting adds at most one more tail to the budget, plus its marker.
    markers = len("\n" + CUTTING) + len(first_cut) + len(second_cut)
    assert len(after.encode()) - markers <= LIMIT + HALF


def test_each_stored_text_keeps_its_stream_through_the_cut_and_the_markers_have_none() -> None:
    budget = LogBudget(LIMIT)
    assert budget.add_stream(1, "o" * (HALF - 1) + "\n") == [(1, "o" * (HALF - 1) + "\n")]
    assert budget.add_stream(2, "e" * 3000 + "\n") == []
    assert budget.add_stream(1, "p" * 1500 + "\n") == [(None, CUTTING)]
    flushed = budget.flush_streams()
    assert flushed[0][0] is None and "cut here" in flushed[0][1]
    # The tail: what is left of the stderr line, then the stdout line, each with its stream.
    assert [stream for stream, _ in flushed[1:]] == [2, 1]
    assert flushed[2] == (1, "p" * 1500 + "\n")
    assert set(flushed[1][1]) <= {"e", "\n"}
