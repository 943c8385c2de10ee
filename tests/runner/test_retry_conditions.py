"""Failure reasons and retry conditions with real containers, on SQLite and PostgreSQL: an
out-of-memory kill retried by its own rule, a job failing fast on one exit code while retrying
on another, a rule on the last log line, a missing image never retried, and the reasons a
timeout and a cancel leave on the job and its events, and a ``fail`` rule on an interruption."""

from __future__ import annotations

from typing import Any

import docker

from ..conftest import TEST_IMAGE, LiveServer, containers_of, wait_for


def sh(script: str, **spec: Any) -> dict[str, Any]:
    """A definition running ``script`` with busybox sh."""
    return {"image": TEST_IMAGE, "command": ["sh", "-c", script], **spec}


def reasons(server: LiveServer, job_id: str, kind: str) -> list[str | None]:
    """The ``reason`` of each of the job's events of type ``kind``, in order."""
    return [e["detail"].get("reason") for e in server.events(job_id) if e["type"] == kind]


def test_an_out_of_memory_kill_is_retried_by_its_own_rule(server: LiveServer) -> None:
    # ``tail`` holds a line with no end: 200 MiB of zeros, over the 32 MiB limit.
    script = '[ "$ORCH_ATTEMPT" -ge 2 ] && exit 0; head -c 200m /dev/zero | tail'
    # Without the rule, on_exit_codes (3 only) would fail the killed attempt's 137.
    retry = {
        "attempts": 3,
        "on_exit_codes": [3],
        "on": [{"reasons": ["oom_killed"], "action": "retry"}],
        "backoff": "100ms",
    }
    server.register(sh(script, name="hungry", resources={"memory": "32Mi"}, retry=retry))
    done = server.wait_job(server.submit(definition="hungry")["id"])

    assert (done["status"], done["attempt"], done["reason"]) == ("succeeded", 2, None)
    assert reasons(server, done["id"], "retrying") == ["oom_killed"]

    # The same kill with no rule for it: failed at once, the reason on the job.
    server.register(
        sh(
            script,
            name="hungry-no-rule",
            resources={"memory": "32Mi"},
            retry={"attempts": 3, "on_exit_codes": [3]},
        )
    )
    failed = server.wait_job(server.submit(definition="hungry-no-rule")["id"])
    assert (failed["status"], failed["attempt"]) == ("failed", 1)
    assert (failed["reason"], failed["exit_code"]) == ("oom_killed", 137)
    assert reasons(server, failed["id"], "failed") == ["oom_killed"]


def test_exit_2_fails_fast_while_exit_1_is_retried(server: LiveServer) -> None:
    retry = {
        "attempts": 5,
        "on": [
            {"exit_codes": [2], "action": "fail"},
            {"exit_codes": [1, "3-5"], "action": "retry"},
        ],
        "backoff": "100ms",
    }
    # Exit 1, then 4, then 2: two retries, then the fail rule ends it with attempts left.
    codes = 'case "$ORCH_ATTEMPT" in 1) exit 1;; 2) exit 4;; *) exit 2;; esac'
    server.register(sh(codes, name="one-then-two", retry=retry))
    server.register(sh("exit 2", name="two", retry=retry))
    server.register(sh("exit 9", name="nine", retry=retry))
    chain = server.submit(definition="one-then-two")
    two = server.submit(definition="two")
    nine = server.submit(definition="nine")

    done = server.wait_job(chain["id"])
    assert (done["status"], done["attempt"], done["exit_code"]) == ("failed", 3, 2)
    assert done["reason"] == "exit_code"
    assert reasons(server, done["id"], "retrying") == ["exit_code", "exit_code"]
    assert reasons(server, done["id"], "failed") == ["exit_code"]

    fast = server.wait_job(two["id"])
    assert (fast["status"], fast["attempt"], fast["reason"]) == ("failed", 1, "exit_code")
    # No rule matched 9: the default retries it while attempts remain.
    unmatched = server.wait_job(nine["id"])
    assert (unmatched["status"], unmatched["attempt"]) == ("failed", 5)


def test_a_rule_on_the_last_log_line(server: LiveServer) -> None:
    script = (
        'echo "step 1 done"; [ "$ORCH_ATTEMPT" -ge 2 ] && exit 0; '
        'echo "error: connection reset by peer"; exit 5'
    )
    retry = {
        "attempts": 2,
        "on_exit_codes": [1],
        "on": [{"log_line": "*connection reset*", "action": "retry"}],
        "backoff": "100ms",
    }
    server.register(sh(script, name="flaky-network", retry=retry))
    server.register(sh('echo "disk full"; exit 5', name="full-disk", retry=retry))
    network = server.submit(definition="flaky-network")
    disk = server.submit(definition="full-disk")

    assert server.wait_job(network["id"])["attempt"] == 2
    assert server.job(network["id"])["status"] == "succeeded"
    # Another last line: no rule matches, and on_exit_codes does not list 5.
    full = server.wait_job(disk["id"])
    assert (full["status"], full["attempt"], full["reason"]) == ("failed", 1, "exit_code")


def test_a_missing_image_is_never_retried(server: LiveServer) -> None:
    retry = {"attempts": 3, "on": [{"exit_codes": ["0-255"], "action": "retry"}]}
    server.register(
        {
            "name": "ghost",
            "image": "no-such-registry.invalid/ghost:9",
            "command": ["x"],
            "retry": retry,
        }
    )
    done = server.wait_job(server.submit(definition="ghost")["id"], timeout=90)

    assert (done["status"], done["attempt"], done["reason"]) == ("failed", 1, "image_missing")
    assert "no-such-registry.invalid/ghost:9" in done["error"]
    assert reasons(server, done["id"], "failed") == ["image_missing"]
    assert reasons(server, done["id"], "retrying") == []


def test_timeout_and_cancel_leave_their_reasons(server: LiveServer) -> None:
    server.register(sh("sleep 60", name="sleeper", timeout="1s"))
    timed_out = server.wait_job(server.submit(definition="sleeper")["id"], timeout=30)
    assert (timed_out["status"], timed_out["reason"]) == ("failed", "timed_out")
    assert reasons(server, timed_out["id"], "timed_out") == ["timed_out"]
    assert reasons(server, timed_out["id"], "failed") == ["timed_out"]

    waiting = server.submit(definition="sleeper", schedule_at="2999-01-01T00:00:00Z")
    response = server.http.post(f"/v1/projects/default/jobs/{waiting['id']}/cancel")
    assert response.status_code == 200, response.text
    cancelled = server.job(waiting["id"])
    assert (cancelled["status"], cancelled["reason"]) == ("cancelled", "cancelled")
    assert reasons(server, waiting["id"], "cancelled") == ["cancelled"]
    # A list shows the reason too.
    listed = server.http.get("/v1/projects/default/jobs").json()["items"]
    assert {job["id"]: job["reason"] for job in listed}[waiting["id"]] == "cancelled"


def test_a_fail_rule_on_an_interruption_fails_the_job_at_once(
    server: LiveServer, docker_client: docker.DockerClient
) -> None:
    retry = {"attempts": 3, "on": [{"reasons": ["container_vanished"], "action": "fail"}]}
    server.register(sh('echo "attempt $ORCH_ATTEMPT"; sleep 60', name="fragile", retry=retry))
    job_id = server.submit(definition="fragile")["id"]
    wait_for(lambda: "attempt 1" in server.logs(job_id), timeout=30)
    (container,) = containers_of(docker_client, job_id)
    container.remove(force=True)

    done = server.wait_job(job_id, timeout=60)
    # Without the rule, a vanished container is retried without counting (test_installations).
    assert (done["status"], done["attempt"], done["reason"]) == ("failed", 1, "container_vanished")
    assert "a retry rule fails the job on this reason" in done["error"]
    assert reasons(server, job_id, "interrupted") == ["container_vanished"]
    assert reasons(server, job_id, "failed") == ["container_vanished"]


def test_a_jobs_own_retry_policy_is_laid_over_its_definitions(server: LiveServer) -> None:
    # The definition gives one attempt, and a rule failing exit 2 at once.
    retry = {"attempts": 1, "on": [{"exit_codes": [2], "action": "fail"}], "backoff": "100ms"}
    third_time_lucky = '[ "$ORCH_ATTEMPT" -ge 3 ] && exit 0; exit 1'
    server.register(sh(third_time_lucky, name="lucky", retry=retry))
    server.register(sh("exit 2", name="always-two", retry=retry))

    plain = server.submit(definition="lucky")
    more = server.submit(definition="lucky", retry={"attempts": 3})
    kept_rule = server.submit(definition="always-two", retry={"attempts": 3})
    cleared = server.submit(definition="always-two", retry={"attempts": 3, "on": []})

    # The definition's one attempt.
    assert server.wait_job(plain["id"])["status"] == "failed"
    assert server.job(plain["id"])["attempt"] == 1
    # The job's attempts over it: a third attempt succeeds.
    done = server.wait_job(more["id"])
    assert (done["status"], done["attempt"], done["max_attempts"]) == ("succeeded", 3, 3)
    assert reasons(server, more["id"], "retrying") == ["exit_code", "exit_code"]
    # Fields it did not give are the definition's: the rule and the backoff.
    assert done["retry"]["on"] == [{"exit_codes": [2], "action": "fail"}]
    assert done["retry"]["backoff"]["delay"] == 0.1
    # The definition's fail rule still ends exit 2 at once, with attempts left.
    fast = server.wait_job(kept_rule["id"])
    assert (fast["status"], fast["attempt"], fast["max_attempts"]) == ("failed", 1, 3)
    # ``on: []`` clears the definition's rules: exit 2 is retried like any failure.
    slow = server.wait_job(cleared["id"])
    assert (slow["status"], slow["attempt"], slow["exit_code"]) == ("failed", 3, 2)
    assert "on" not in slow["retry"]
