"""The web console in a real browser against a real server with real containers: sign-in,
a job's status changing live, a running job's log followed and the job cancelled, a queue
paused, a read-only token's view, refused cross-site posts, and no console errors anywhere."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import docker
import httpx
import pytest
from playwright.sync_api import expect

from orchestrator.services import attempts, runners
from orchestrator.storage.models import utcnow
from tests.conftest import TEST_IMAGE, LiveServer, admin_token, containers_of, wait_for
from tests.console.conftest import screenshot
from tests.receiver import Receiver

pytestmark = pytest.mark.docker

SECRET = "s3cr3t-console-value"


def sign_in(page: Any, server: LiveServer, token: str, then: str = "/ui/jobs") -> None:
    """Open ``then`` signed out (redirected to the sign-in page) and sign in with ``token``."""
    page.goto(server.url + then)
    page.wait_for_url(re.compile(r"/ui/signin"))
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(re.escape(then) + r"$"))


def api(server: LiveServer, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return server.http.request(method, path, **kwargs)


def define(server: LiveServer, name: str, script: str, project: str = "default") -> None:
    server.register({"name": name, "image": TEST_IMAGE, "command": ["sh", "-c", script]}, project)


def queue(server: LiveServer, name: str, project: str = "default", **spec: Any) -> None:
    response = api(server, "POST", f"/v1/projects/{project}/queues", json={"name": name, **spec})
    assert response.status_code == 201, response.text


def test_sign_in_keeps_the_token_in_a_strict_httponly_cookie_and_sign_out_forgets_it(
    console_server: LiveServer, new_page: Callable[[], Any]
) -> None:
    page = new_page()
    page.goto(console_server.url + "/")
    page.wait_for_url(re.compile(r"/ui/signin\?then="))
    screenshot(page, "signin")
    page.fill("#token", "not-a-token")
    page.click("button[type=submit]")
    assert "not valid" in page.inner_text("[role=alert]")

    page.fill("#token", admin_token(console_server.settings))
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/ui/jobs$"))
    session = {c["name"]: c for c in page.context.cookies()}["orch_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["path"] == "/ui"
    assert "admin" in page.inner_text("header")

    page.click("text=Sign out")
    page.wait_for_url(re.compile(r"/ui/signin$"))
    assert "orch_session" not in {c["name"] for c in page.context.cookies()}
    page.goto(console_server.url + "/ui/queues")
    page.wait_for_url(re.compile(r"/ui/signin\?then=/ui/queues"))


def test_a_job_goes_from_queued_to_succeeded_on_the_jobs_page_without_a_reload(
    console_server: LiveServer, new_page: Callable[[], Any]
) -> None:
    define(console_server, "hello", "echo hello; echo '{\"ok\": true}' > $ORCH_OUTPUT")
    queue(console_server, "held", paused=True)
    job = console_server.submit(definition="hello", queue="held", name="live-one")
    page = new_page()
    sign_in(page, console_server, admin_token(console_server.settings))
    row = page.locator(f"tr[data-job='{job['id']}']")
    assert "queued" in row.inner_text()
    page.evaluate("window.notReloaded = true")

    response = api(
        console_server, "PATCH", "/v1/projects/default/queues/held", json={"paused": False}
    )
    assert response.status_code == 200, response.text
    page.wait_for_selector(f"tr[data-job='{job['id']}'] .status-succeeded")
    assert page.evaluate("window.notReloaded") is True
    assert "succeeded" in row.inner_text()  # as text, not only as a colour

    # Its page: the output, the attempt's exit code; resubmit makes a new job of the same spec.
    row.locator("a").click()
    page.wait_for_url(re.compile(job["id"]))
    assert '"ok": true' in page.inner_text("#job-live")
    assert "succeeded" in page.inner_text("table.attempts")
    page.click("button:has-text('Resubmit')")
    page.wait_for_url(lambda url: "/jobs/" in url and job["id"] not in url)
    new_id = page.url.rsplit("/", 1)[1]
    assert console_server.wait_job(new_id)["status"] == "succeeded"


def test_a_running_jobs_log_follows_live_and_cancel_removes_its_container(
    console_server: LiveServer,
    new_page: Callable[[], Any],
    docker_client: docker.DockerClient,
) -> None:
    define(
        console_server, "ticker", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"
    )
    job = console_server.submit(
        definition="ticker", name="ticker", secret_env={"API_KEY": SECRET}, env={"MODE": "plain"}
    )
    console_server.wait_job(job["id"], {"running"})
    page = new_page()
    sign_in(
        page,
        console_server,
        admin_token(console_server.settings),
        f"/ui/projects/default/jobs/{job['id']}",
    )
    shown = page.inner_text("#log")
    # A line written after the page was rendered: the log follows live.
    last = max((int(n) for n in re.findall(r"tick (\d+)", shown)), default=-1)
    expect(page.locator("#log")).to_contain_text(f"tick {last + 5}")
    assert "following" in page.inner_text("#log-state")
    assert "***" in page.inner_text("main") and "plain" in page.inner_text("main")
    screenshot(page, "job")
    assert SECRET not in page.content()

    page.click("button:has-text('Cancel')")
    page.wait_for_selector("#job-live .status-cancelled")
    assert "cancelled" in page.inner_text("#job-live")
    wait_for(lambda: not containers_of(docker_client, job["id"]), timeout=30)
    assert SECRET not in page.content()


def test_a_queue_is_paused_and_resumed_from_the_queues_page(
    console_server: LiveServer, new_page: Callable[[], Any]
) -> None:
    queue(console_server, "nightly", priority=5, max_concurrency=2)
    page = new_page()
    sign_in(page, console_server, admin_token(console_server.settings), "/ui/queues")
    row = page.locator("tr[data-queue='nightly']")
    assert "active" in row.inner_text()
    row.locator("button:has-text('Pause')").click()
    page.wait_for_selector("tr[data-queue='nightly'] .status-paused")
    assert api(console_server, "GET", "/v1/projects/default/queues/nightly").json()["paused"]
    screenshot(page, "queues")
    page.locator("tr[data-queue='nightly'] button:has-text('Resume')").click()
    page.wait_for_selector("tr[data-queue='nightly'] .status-active")
    assert not api(console_server, "GET", "/v1/projects/default/queues/nightly").json()["paused"]


def test_a_read_only_token_sees_no_write_buttons_and_no_other_projects_job(
    console_server: LiveServer, new_page: Callable[[], Any]
) -> None:
    define(console_server, "quick", "echo quick")
    mine = console_server.submit(definition="quick", name="read-view")
    response = api(console_server, "POST", "/v1/projects", json={"name": "elsewhere"})
    assert response.status_code == 201, response.text
    define(console_server, "quick", "echo quick", project="elsewhere")
    response = api(
        console_server, "POST", "/v1/projects/elsewhere/jobs", json={"definition": "quick"}
    )
    theirs = response.json()
    response = api(
        console_server,
        "POST",
        "/v1/tokens",
        json={"name": "viewer", "role": "read", "project": "default"},
    )
    token = response.json()["token"]

    page = new_page()
    sign_in(page, console_server, token, f"/ui/projects/default/jobs/{mine['id']}")
    assert page.locator("#job-live").count() == 1
    assert page.locator("form[action$='/cancel'], form[action$='/resubmit']").count() == 0
    page.goto(console_server.url + "/ui/queues")
    assert page.locator("tr[data-queue='default']").count() == 1
    assert page.locator("tr form").count() == 0
    page.goto(console_server.url + "/ui/projects/default/definitions/quick")
    assert "echo quick" in page.inner_text("pre.yaml")
    assert page.locator("form[action*='/submit']").count() == 0
    # Not only hidden: the server refuses the write as the API would (403).
    csrf = {c["name"]: c["value"] for c in page.context.cookies()}["orch_csrf"]
    refused = page.request.post(
        console_server.url + "/ui/projects/default/queues/default/pause", form={"csrf": csrf}
    )
    assert refused.status == 403

    answer = page.goto(console_server.url + f"/ui/projects/elsewhere/jobs/{theirs['id']}")
    assert answer is not None and answer.status == 404
    assert "not found" in page.inner_text("[role=alert]")
    assert theirs["id"] not in page.content()


def test_a_post_without_the_csrf_value_is_refused(
    console_server: LiveServer, new_page: Callable[[], Any]
) -> None:
    queue(console_server, "guarded", paused=True)
    define(console_server, "quick", "echo quick")
    job = console_server.submit(definition="quick", queue="guarded")
    page = new_page()
    sign_in(page, console_server, admin_token(console_server.settings))
    cancel = f"{console_server.url}/ui/projects/default/jobs/{job['id']}/cancel"
    assert page.request.post(cancel, form={}).status == 403
    assert page.request.post(cancel, form={"csrf": "forged"}).status == 403
    assert console_server.job(job["id"])["status"] == "queued"
    # The same post with the page's value is carried out.
    csrf = {c["name"]: c["value"] for c in page.context.cookies()}["orch_csrf"]
    assert page.request.post(cancel, form={"csrf": csrf}, max_redirects=0).status == 303
    assert console_server.job(job["id"])["status"] == "cancelled"


def test_a_long_log_shows_its_tail_and_loads_earlier_parts_on_demand(
    console_server: LiveServer, new_page: Callable[[], Any]
) -> None:
    queue(console_server, "parked", paused=True)
    define(console_server, "quick", "echo quick")
    job = console_server.submit(definition="quick", queue="parked", name="long-log")
    # 450 chunks, stored as the runner's log pump stores them.
    with console_server.services.db.transaction() as session:
        chunks = [(utcnow(), f"chunk {i}\n") for i in range(450)]
        attempts.append_logs(session, None, job["id"], 1, chunks)
    page = new_page()
    sign_in(
        page,
        console_server,
        admin_token(console_server.settings),
        f"/ui/projects/default/jobs/{job['id']}",
    )
    log = page.locator("#log")
    assert "chunk 449" in log.inner_text() and "chunk 249\n" not in log.inner_text()
    assert "chunk 250" in log.inner_text()
    page.click("#log-earlier")
    expect(log).to_contain_text("chunk 50\n")
    assert "chunk 49\n" not in log.inner_text()
    page.click("#log-earlier")
    expect(log).to_contain_text("chunk 0\n")
    expect(page.locator("#log-earlier")).to_have_count(0)
    assert log.inner_text().count("chunk 1\n") == 1


def test_the_console_works_from_the_keyboard_and_fits_a_phone(
    console_server: LiveServer, new_page: Callable[[], Any]
) -> None:
    define(console_server, "quick", "echo quick")
    job = console_server.submit(definition="quick", name="by-keyboard")
    console_server.wait_job(job["id"])
    page = new_page()
    page.goto(console_server.url + "/ui/jobs")
    page.keyboard.type(admin_token(console_server.settings))  # the token field has the focus
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/ui/jobs$"))
    screenshot(page, "jobs")  # the module's jobs by now, in every status
    link = page.locator(f"tr[data-job='{job['id']}'] a")
    for _ in range(40):
        page.keyboard.press("Tab")
        if link.evaluate("element => element === document.activeElement"):
            break
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(job["id"]))

    # A filter on the time of creation: before the job, none.
    page.goto(console_server.url + "/ui/jobs?created_before=2000-01-01T00:00")
    assert "No jobs match" in page.inner_text("main")

    page.set_viewport_size({"width": 390, "height": 844})
    for path in ("/ui/jobs", f"/ui/projects/default/jobs/{job['id']}", "/ui/queues", "/ui/runners"):
        page.goto(console_server.url + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} is {width} px wide on a 390 px screen"
        if path == "/ui/jobs":
            screenshot(page, "jobs-phone")


def test_a_definitions_versions_yaml_and_diff_and_the_runners(
    console_server: LiveServer, new_page: Callable[[], Any]
) -> None:
    define(console_server, "report", "echo v1")
    define(console_server, "report", "echo v2")
    page = new_page()
    sign_in(page, console_server, admin_token(console_server.settings), "/ui/definitions")
    row = page.locator("tr[data-definition='report']")
    assert "2" in row.inner_text() and TEST_IMAGE in row.inner_text()
    row.locator("a").click()
    page.wait_for_url(re.compile(r"/definitions/report$"))
    assert "echo v2" in page.inner_text("pre.yaml")
    page.click("text=version 1")
    assert "echo v1" in page.inner_text("pre.yaml")
    page.click("text=diff with 1")
    assert "echo v2" in page.inner_text("pre.diff del") and "echo v1" in page.inner_text(
        "pre.diff ins"
    )
    page.goto(console_server.url + "/ui/projects/default/definitions/report?version=2&compare=1")
    screenshot(page, "definition")

    page.click("nav >> text=Runners")
    runner = page.locator(f"tr[data-runner='{console_server.settings.runner_name}']")
    text = runner.inner_text()
    assert "active" in text and "ok" in text and "/ 4" in text
    screenshot(page, "runners")


def test_a_job_is_submitted_from_its_definitions_form_with_a_secret_as_a_password(
    console_server: LiveServer, new_page: Callable[[], Any]
) -> None:
    console_server.register(
        {
            "name": "greet",
            "image": TEST_IMAGE,
            "command": ["sh", "-c", "echo hello Param::who with $API_KEY"],
            "parameters": {"who": "world"},
            "secrets": ["API_KEY"],
        }
    )
    page = new_page()
    sign_in(
        page,
        console_server,
        admin_token(console_server.settings),
        "/ui/projects/default/definitions/greet",
    )
    assert page.get_attribute("input[name='secret.API_KEY']", "type") == "password"
    page.fill("textarea[name=input]", "{not json")
    page.click("button:has-text('Submit')")
    assert "input: not JSON" in page.inner_text("[role=alert]")
    page.go_back()
    page.fill("input[name='param.who']", "console")
    page.fill("input[name='secret.API_KEY']", SECRET)
    page.fill("textarea[name=input]", '{"n": 1}')
    screenshot(page, "definition-submit")
    page.click("button:has-text('Submit')")
    page.wait_for_url(re.compile(r"/ui/projects/default/jobs/[0-9a-f-]{36}$"))
    job_id = page.url.rsplit("/", 1)[1]
    assert console_server.wait_job(job_id)["status"] == "succeeded"
    assert console_server.logs(job_id) == "hello console with ***\n"
    page.reload()
    assert "console" in page.inner_text("main") and SECRET not in page.content()


def test_a_jobs_webhook_deliveries_are_shown_and_redelivered(
    console_server: LiveServer, new_page: Callable[[], Any], receiver: Receiver
) -> None:
    define(console_server, "quick", "echo quick")
    hook = receiver.url.replace("://", "://user:hook-password@") + "/hook"
    job = console_server.submit(definition="quick", webhook=hook)
    console_server.wait_job(job["id"])

    def delivered() -> bool:
        path = f"/v1/projects/default/jobs/{job['id']}/deliveries"
        items = api(console_server, "GET", path).json()["items"]
        return bool(items) and items[0]["status"] == "delivered"

    wait_for(delivered)
    page = new_page()
    sign_in(
        page,
        console_server,
        admin_token(console_server.settings),
        f"/ui/projects/default/jobs/{job['id']}",
    )
    first = page.locator("tr[data-delivery='1']")
    expect(first).to_contain_text("delivered")
    assert "hook-password" not in page.content()  # the URL's credentials are ***
    first.locator("button:has-text('Redeliver')").click()
    expect(page.locator("tr[data-delivery='2']")).to_contain_text("again of 1")
    assert [r.path for r in receiver.wait_for_requests(2)] == ["/hook", "/hook"]


def test_a_schedules_fire_times_and_runs_with_pause_resume_and_run_now(
    console_server: LiveServer, new_page: Callable[[], Any]
) -> None:
    define(console_server, "quick", "echo quick")
    body = {
        "name": "nightly-quick",
        "cron": "0 3 * * *",
        "timezone": "Asia/Tokyo",
        "target": {"job": {"definition": "quick", "secret_env": {"API_KEY": SECRET}}},
    }
    response = api(console_server, "POST", "/v1/projects/default/schedules", json=body)
    assert response.status_code == 201, response.text
    page = new_page()
    sign_in(page, console_server, admin_token(console_server.settings), "/ui/schedules")
    row = page.locator("tr[data-schedule='nightly-quick']")
    assert "active" in row.inner_text() and "18:00:00" in row.inner_text()  # 03:00 in Tokyo
    row.locator("a").click()
    page.wait_for_url(re.compile(r"/schedules/nightly-quick$"))
    assert page.locator("#preview-h + ol li").count() == 10
    page.click("button:has-text('Pause')")
    expect(page.locator(".summary .status")).to_have_text("paused")
    page.click("button:has-text('Run now')")
    run = page.locator("table.runs tbody tr").first
    expect(run).to_contain_text("manual")
    job_id = run.locator("a").get_attribute("href").rsplit("/", 1)[1]
    assert console_server.wait_job(job_id)["status"] == "succeeded"
    page.click("button:has-text('Resume')")
    expect(page.locator(".summary .status")).to_have_text("active")
    page.reload()
    expect(page.locator("table.runs tbody tr").first).to_contain_text("succeeded")
    assert SECRET not in page.content()
    screenshot(page, "schedule")


def test_an_admin_drains_a_runner_and_a_project_token_cannot(
    console_server: LiveServer, new_page: Callable[[], Any]
) -> None:
    # A second runner's registration, as its process would write it (it never claims here).
    name = f"other-{uuid.uuid4().hex[:8]}"
    identity = runners.Identity(
        name=name, session=uuid.uuid4().hex, docker_host="tcp://elsewhere:2375", capacity=2,
        queues=None, version="0",
    )  # fmt: skip
    with console_server.services.db.transaction() as session:
        runners.register(session, identity, console_server.settings.runner_lease)
    response = api(
        console_server,
        "POST",
        "/v1/tokens",
        json={"name": "writer", "role": "write", "project": "default"},
    )
    writer = response.json()["token"]
    page = new_page()
    sign_in(page, console_server, writer, "/ui/runners")
    assert page.locator(f"tr[data-runner='{name}']").count() == 1
    assert page.locator("form[action$='/drain']").count() == 0
    csrf = {c["name"]: c["value"] for c in page.context.cookies()}["orch_csrf"]
    refused = page.request.post(
        console_server.url + f"/ui/runners/{name}/drain", form={"csrf": csrf}
    )
    assert refused.status == 403

    admin = new_page()
    sign_in(admin, console_server, admin_token(console_server.settings), "/ui/runners")
    admin.locator(f"tr[data-runner='{name}'] button:has-text('Drain')").click()
    expect(admin.locator(f"tr[data-runner='{name}'] .status").first).to_have_text("draining")
    runner = api(console_server, "GET", f"/v1/runners/{name}").json()
    assert runner["state"] == "draining"


def test_an_arrays_children_and_its_dependent_are_shown_paged_linked_and_live(
    console_server: LiveServer, new_page: Callable[[], Any]
) -> None:
    define(console_server, "fan", "true")
    queue(console_server, "fanout", paused=True)
    # 51 children: one more than a page of them.
    parent = console_server.submit(definition="fan", queue="fanout", array={"size": 51})["id"]
    dependent = console_server.submit(
        definition="fan", queue="fanout", depends_on=[{"job": parent}]
    )["id"]
    page = new_page()
    sign_in(
        page,
        console_server,
        admin_token(console_server.settings),
        f"/ui/projects/default/jobs/{parent}",
    )
    assert page.locator("[data-children-status=queued]").inner_text() == "51 queued"
    rows = page.locator("table.children tbody tr")
    expect(rows).to_have_count(50)
    assert rows.first.get_attribute("data-child") == "50"
    assert page.locator(f"li[data-dependent='{dependent}']").inner_text().endswith("pending")
    page.click("#children-next")
    expect(rows).to_have_count(1)
    assert rows.first.get_attribute("data-child") == "0"
    child = rows.first.locator("a").get_attribute("href")

    # The queue resumed: the counts and the children on this page change without a reload.
    api(console_server, "PATCH", "/v1/projects/default/queues/fanout", json={"paused": False})
    expect(page.locator("[data-children-status=succeeded]")).to_have_text(
        "51 succeeded", timeout=120_000
    )
    expect(rows.first.locator(".status-succeeded")).to_be_visible()
    page.goto(console_server.url + f"/ui/projects/default/jobs/{parent}")
    screenshot(page, "job-array")
    page.select_option("#children-status", "failed")
    page.click("#children-status ~ button")
    expect(page.locator("section[aria-labelledby=children-h] .empty")).to_be_visible()

    # A child links its parent; the dependent shows what it waited for, settled and met.
    assert child is not None
    page.goto(console_server.url + child)
    page.click("#array-parent a")
    page.wait_for_url(re.compile(re.escape(parent) + r"$"))
    console_server.wait_job(dependent)
    page.goto(console_server.url + f"/ui/projects/default/jobs/{dependent}")
    link = page.locator(f"tr[data-dependency='{parent}']")
    assert "succeeded" in link.inner_text() and "yes, met" in link.inner_text()
    link.locator("a").click()
    page.wait_for_url(re.compile(re.escape(parent) + r"$"))


def test_stderr_lines_are_labelled_in_the_log_followed_and_stored(
    console_server: LiveServer, new_page: Callable[[], Any]
) -> None:
    define(
        console_server,
        "two-streams",
        'echo "out first"; echo "err $API_KEY" >&2; sleep 3; '
        'echo "out later"; echo "err later" >&2; sleep 1',
    )
    job = console_server.submit(definition="two-streams", secret_env={"API_KEY": SECRET})
    console_server.wait_job(job["id"], {"running"})
    page = new_page()
    sign_in(
        page,
        console_server,
        admin_token(console_server.settings),
        f"/ui/projects/default/jobs/{job['id']}",
    )
    log = page.locator("#log")
    # Written after the page was rendered, so followed live.
    expect(log.locator(".stderr", has_text="err later")).to_have_count(1)
    expect(page.locator("#log-state")).to_have_text("the job has ended")
    for reload in (False, True):
        if reload:  # the same, from the stored log
            page.reload()
        errors = log.locator(".stderr")
        expect(errors).to_have_count(2)
        texts = [text.strip() for text in errors.all_inner_texts()]
        assert texts == ["stderr err ***", "stderr err later"]
        # The label is text a screen reader reads, not colour alone.
        assert errors.first.locator(".stream-label").inner_text().strip() == "stderr"
        assert "out first" in log.inner_text() and "stderr out" not in log.inner_text()
        assert SECRET not in page.content()
    log.scroll_into_view_if_needed()
    screenshot(page, "job-streams")


def test_the_queues_chart_draws_each_queues_last_hour_from_its_samples(
    console_server: LiveServer, new_page: Callable[[], Any]
) -> None:
    define(console_server, "blip", "true")
    queue(console_server, "charted")
    ids = [console_server.submit(definition="blip", queue="charted")["id"] for _ in range(3)]
    for job_id in ids:
        assert console_server.wait_job(job_id)["status"] == "succeeded"
    samples = "/ui/queues/samples?project=default"
    page = new_page()
    sign_in(page, console_server, admin_token(console_server.settings), "/ui/queues")

    def ended() -> int:
        data = page.evaluate(f"fetch('{samples}').then((r) => r.json())")
        return sum(data["queues"].get("charted", {}).get("ended", []))

    # The sampler writes a second after the jobs end (ORCH_QUEUE_SAMPLE_INTERVAL=1 here).
    wait_for(lambda: ended() == 3)
    page.reload()
    figure = page.locator("figure[data-chart='charted']")
    expect(figure.locator("canvas")).to_have_count(1)
    assert int(figure.get_attribute("data-points") or 0) >= 1
    expect(figure.locator(".chart-summary")).to_contain_text("waiting")
    expect(page.locator("figure[data-chart] canvas")).to_have_count(
        page.locator("tr[data-queue]").count()
    )
    screenshot(page, "queues-chart")


def test_the_browser_revalidates_a_live_fragment_with_its_etag(
    console_server: LiveServer, new_page: Callable[[], Any]
) -> None:
    define(console_server, "idle-one", "true")
    queue(console_server, "still", paused=True)
    job = console_server.submit(definition="idle-one", queue="still")
    page = new_page()
    polls: list[tuple[str | None, str | None]] = []  # (If-None-Match sent, ETag answered)

    def seen(response: Any) -> None:
        if "/live" in response.url:
            sent = response.request.all_headers().get("if-none-match")
            polls.append((sent, response.all_headers().get("etag")))

    page.on("response", seen)
    sign_in(
        page,
        console_server,
        admin_token(console_server.settings),
        f"/ui/projects/default/jobs/{job['id']}",
    )
    for _ in range(3):
        page.wait_for_event("response", lambda response: "/live" in response.url)
    # Chromium sends the fragment's ETag back (the server answers 304 while nothing moved,
    # test_console_polls.py; Chromium then shows its copy, reported here as a 200).
    assert polls[1][0] is not None and polls[1][0] == polls[0][1]
    assert "queued" in page.inner_text("#job-live")
    api(console_server, "POST", f"/v1/projects/default/jobs/{job['id']}/cancel")
    page.wait_for_selector("#job-live .status-cancelled")
