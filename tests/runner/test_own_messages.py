"""The runner's own messages are written whole: masking is for what a job produces.

A secret value that happens to occur inside one of our words (``xite`` in "exited") must not
turn the stored error into "e***d", which would both garble it and tell the value.
"""

from __future__ import annotations

from ..conftest import TEST_IMAGE, LiveServer


def test_an_error_we_write_is_not_masked_but_what_the_job_prints_is(server: LiveServer) -> None:
    server.register(
        {
            "name": "exits",
            "image": TEST_IMAGE,
            "command": ["sh", "-c", 'echo "it exited: $WORD"; exit 3'],
            "secrets": ["WORD"],
        }
    )
    job = server.submit(definition="exits", secret_env={"WORD": "xite"})
    done = server.wait_job(job["id"])
    assert (done["status"], done["exit_code"]) == ("failed", 3), done
    assert done["error"] == "the container exited with code 3"
    failed = next(e for e in server.events(job["id"]) if e["type"] == "failed")
    assert failed["detail"]["error"] == "the container exited with code 3"
    assert server.logs(job["id"]) == "it e***d: ***\n"
