"""Schema migrations on SQLite and PostgreSQL: an empty database reaches the models' schema
exactly; a database at the previous revision, or made before migrations, keeps its data; two
processes migrating at once; the ``db`` commands; a server starting on an old database; webhook
URL credentials taken out of the clear columns (0007); the idempotency keys' table (0013);
jobs' failure reason (0014); array jobs (0015); TES tasks (0017)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel
from typer.testing import CliRunner

from orchestrator.cli import app as cli_app
from orchestrator.rules.definition_spec import DefinitionSpec, spec_hash
from orchestrator.services import runners
from orchestrator.storage import migrations
from orchestrator.storage.db import Database, Outage

from ..api.test_secrets_at_rest import database_bytes
from ..conftest import TEST_IMAGE, LiveServer, bearer
from ..receiver import Receiver

HEAD = migrations.head()
OLD_TOKEN = "orch_old-read-token"
OLD_TIME = datetime(2026, 1, 2, 3, 4, 5)
# status -> (name, attempt, output): one job in each state a job can be in.
OLD_JOBS = {
    "scheduled": ("nightly", 0, None),
    "queued": ("next", 0, None),
    "running": (None, 1, None),
    "succeeded": ("done", 1, {"rows": 3}),
    "failed": (None, 2, None),
    "cancelled": (None, 0, None),
}


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    yield db
    db.dispose()


def migrate_to(db: Database, revision: str) -> None:
    """Upgrade the database to ``revision`` (not further), as an older release would have."""
    with db.write_engine.connect() as connection:
        config = Config()
        config.set_main_option("script_location", str(migrations.SCRIPT_LOCATION))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def applied_revisions(result: migrations.Upgrade) -> list[str]:
    """The revisions an upgrade applied, in order."""
    return [line.split(":")[0] for line in result.applied]


def revisions_from(first: str) -> list[str]:
    """Every revision from ``first`` to the head, in order: what upgrading from the one before
    ``first`` applies, however many revisions later releases add."""
    versions = Path(migrations.__file__).parent / "versions"
    numbers = sorted(path.name[:4] for path in versions.glob("[0-9][0-9][0-9][0-9]_*.py"))
    return [number for number in numbers if first <= number <= HEAD]


def table_names(db: Database) -> set[str]:
    with db.read_engine.connect() as connection:
        return set(sa.inspect(connection).get_table_names())


def seed(db: Database) -> None:
    """Rows of every kind in a database at revision 0001, written as that release wrote them."""
    with db.write_engine.begin() as connection:
        meta = sa.MetaData()
        meta.reflect(connection)
        tables = meta.tables

        def insert(table: str, **row: Any) -> None:
            connection.execute(tables[table].insert().values(**row))

        insert("projects", name="default", description="The default project", create_time=OLD_TIME)
        insert(
            "queues", project="default", name="default", display_name="Default", description="",
            priority=0, max_concurrency=None, paused=False, default_definition=None,
            create_time=OLD_TIME, update_time=OLD_TIME,
        )  # fmt: skip
        insert(
            "definitions", project="default", name="etl", version=1,
            spec={"image": "busybox:1.36", "command": ["echo", "Param::who"]},
            spec_hash="a" * 64, create_time=OLD_TIME,
        )  # fmt: skip
        for status, (name, attempt, output) in OLD_JOBS.items():
            job_id = f"00000000-0000-0000-0000-{status:0>12}"[:36]
            insert(
                "jobs", id=job_id, project="default", queue="default", definition_name="etl",
                definition_version=1, name=name, status=status, priority=0, attempt=attempt,
                max_attempts=3, command=["echo", "hi"], parameters={"who": "hi"}, env={},
                secret_env_keys=[], secret_env_ciphertext=None, input={"n": 1}, metadata={},
                container={}, output=output, exit_code=None, error=None, container_id=None,
                runner=None, webhook=None, timeout=None, cancel_requested=False,
                schedule_at=None, run_after=None, create_time=OLD_TIME, update_time=OLD_TIME,
                start_time=None, finish_time=None,
            )  # fmt: skip
            insert(
                "job_events", job_id=job_id, time=OLD_TIME, type="created", attempt=0,
                status=status, detail={"by": "old release"},
            )  # fmt: skip
            insert("job_logs", job_id=job_id, attempt=1, time=OLD_TIME, text=f"log of {status}\n")
        insert(
            "tokens", id="11111111-1111-1111-1111-111111111111", name="old reader", role="read",
            project="default", token_hash=hashlib.sha256(OLD_TOKEN.encode()).hexdigest(),
            prefix=OLD_TOKEN[:9], create_time=OLD_TIME, revoke_time=None,
        )  # fmt: skip


def job_id_of(status: str) -> str:
    return f"00000000-0000-0000-0000-{status:0>12}"[:36]


def assert_seeded_data_intact(db: Database) -> None:
    with db.read_engine.connect() as connection:
        jobs = connection.execute(
            sa.text(
                "SELECT id, status, name, attempt, interrupted_attempts, parameters, output "
                "FROM jobs ORDER BY seq"
            )
        ).all()
        counts = {
            table: connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("projects", "queues", "definitions", "job_events", "job_logs", "tokens")
        }
    assert [job.status for job in jobs] == list(OLD_JOBS)
    for job in jobs:
        name, attempt, _ = OLD_JOBS[job.status]
        assert (job.id, job.name, job.attempt) == (job_id_of(job.status), name, attempt)
        assert job.interrupted_attempts == 0
    assert counts == {
        "projects": 1,
        "queues": 1,
        "definitions": 1,
        "job_events": len(OLD_JOBS),
        "job_logs": len(OLD_JOBS),
        "tokens": 1,
    }


def test_empty_database_upgrades_to_exactly_the_models_schema(database: Database) -> None:
    result = database.upgrade_schema()

    assert (result.before, result.after, result.stamped) == (None, HEAD, False)
    assert [line.split(":")[0] for line in result.applied] == [
        "0001",
        "0002",
        "0003",
        "0004",
        "0005",
        "0006",
        "0007",
        "0008",
        "0009",
        "0010",
        "0011",
        "0012",
        "0013",
        "0014",
        "0015",
        "0016",
        "0017",
        "0018",
    ]
    with database.read_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, SQLModel.metadata)
    # Alembic cannot compare an index with a DESC column: it reports it removed and re-added.
    # test_the_claim_index_orders_priority_descending checks that one.
    differences = [
        difference
        for difference in differences
        if not (
            difference[0] in ("add_index", "remove_index")
            and difference[1].name == "ix_jobs_queue_claim"
        )
    ]
    # A model change without its revision (or a revision unlike its model) fails here.
    assert differences == []
    assert database.schema_revision() == HEAD


def test_the_newest_revision_by_file_name_is_alembics_head() -> None:
    # A start on a current schema compares with the file names and never imports Alembic.
    assert migrations.newest() == migrations.head()


def test_the_claim_index_orders_priority_descending(database: Database) -> None:
    database.upgrade_schema()
    # Not the read engine: its pooled connection read the schema before the upgrade, and
    # SQLite's PRAGMAs answer from that cached schema.
    with database.write_engine.connect() as connection:
        if database.is_postgres:
            definition = connection.execute(
                sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_jobs_queue_claim'")
            ).scalar_one()
            assert definition.endswith("(project, queue, status, priority DESC, seq)")
        else:
            rows = connection.execute(sa.text("PRAGMA index_xinfo(ix_jobs_queue_claim)")).all()
            # (name, descending) of the key columns; the rowid entry has no name.
            keys = [(row[2], row[3]) for row in rows if row[2] is not None]
            assert keys == [
                ("project", 0),
                ("queue", 0),
                ("status", 0),
                ("priority", 1),
                ("seq", 0),
            ]


def test_the_unfinished_name_index_stays_partial(database: Database) -> None:
    # compare_metadata does not compare an index's WHERE clause: check it here.
    database.upgrade_schema()
    model_index = next(
        index for index in SQLModel.metadata.tables["jobs"].indexes
        if index.name == "ux_jobs_unfinished_name"
    )  # fmt: skip
    with database.read_engine.connect() as connection:
        if database.is_postgres:
            where = str(model_index.dialect_options["postgresql"]["where"])
            definition = connection.execute(
                sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = :name"),
                {"name": model_index.name},
            ).scalar_one()
            # PostgreSQL rewrites the clause (IN becomes = ANY); its parts remain.
            assert "UNIQUE INDEX" in definition
            assert "WHERE ((name IS NOT NULL) AND" in definition
            for status in ("pending", "scheduled", "queued", "starting", "running"):
                assert f"'{status}'" in definition and f"'{status}'" in where
            assert "'succeeded'" not in definition
        else:
            where = str(model_index.dialect_options["sqlite"]["where"])
            definition = connection.execute(
                sa.text("SELECT sql FROM sqlite_master WHERE name = :name"),
                {"name": model_index.name},
            ).scalar_one()
            assert definition.startswith("CREATE UNIQUE INDEX")
            assert definition.endswith(f"WHERE {where}")


def test_upgrading_again_applies_nothing(database: Database) -> None:
    database.upgrade_schema()

    again = database.upgrade_schema()

    assert (again.before, again.after, again.applied) == (HEAD, HEAD, [])


def test_database_at_0001_with_data_upgrades_and_keeps_it(database: Database) -> None:
    migrate_to(database, "0001")
    seed(database)
    assert "runners" not in table_names(database)

    result = database.upgrade_schema()

    assert (result.before, result.after) == ("0001", HEAD)
    assert [line.split(":")[0] for line in result.applied] == [
        "0002",
        "0003",
        "0004",
        "0005",
        "0006",
        "0007",
        "0008",
        "0009",
        "0010",
        "0011",
        "0012",
        "0013",
        "0014",
        "0015",
        "0016",
        "0017",
        "0018",
    ]
    assert "runners" in table_names(database)
    assert_seeded_data_intact(database)


def test_database_made_before_migrations_is_stamped_then_upgraded(database: Database) -> None:
    # What create_all of the old models made: the baseline tables and no alembic_version.
    migrate_to(database, "0001")
    with database.write_engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE alembic_version"))
    seed(database)
    assert database.schema_revision() is None

    result = database.upgrade_schema()

    assert result.stamped
    assert (result.before, result.after) == ("0001", HEAD)
    assert_seeded_data_intact(database)


def cli_env(database_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    return {**env, "ORCH_DATABASE_URL": database_url, "ORCH_DATA_DIR": str(data_dir)}


def db_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "db", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_two_processes_upgrading_together_do_not_race(
    database: Database, database_url: str, tmp_path: Path
) -> None:
    env = cli_env(database_url, tmp_path)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "db", "upgrade"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=60) for process in processes]

    assert [process.returncode for process in processes] == [0, 0], outputs
    stdouts = sorted(out for out, _ in outputs)
    # Exactly one of them migrated; the other found the schema already at the head.
    assert stdouts == [
        f"the schema is at {HEAD}, the newest revision\n",
        f"upgraded the schema from empty to {HEAD}\n",
    ]
    assert database.schema_revision() == HEAD


def test_db_commands_print_the_revisions(database_url: str, tmp_path: Path) -> None:
    env = cli_env(database_url, tmp_path)

    before = db_command(env, "current")
    upgraded = db_command(env, "upgrade")
    after = db_command(env, "current")

    assert (before.returncode, before.stdout) == (0, "none\n"), before.stderr
    assert (upgraded.returncode, upgraded.stdout) == (
        0,
        f"upgraded the schema from empty to {HEAD}\n",
    )
    assert (after.returncode, after.stdout) == (0, f"{HEAD}\n")


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("not a url", "error: ORCH_DATABASE_URL is not a usable database URL (ArgumentError)\n"),
        (
            "postgresql+psycopg://orch:hunter2@127.0.0.1:1/orch",
            "error: cannot reach the database: connection failed:",
        ),
    ],
)
@pytest.mark.parametrize("subcommand", ["upgrade", "current"])
def test_db_commands_say_why_a_database_is_unusable(
    url: str, error: str, subcommand: str, tmp_path: Path
) -> None:
    result = db_command(cli_env(url, tmp_path), subcommand)

    assert result.returncode == 2
    assert result.stderr.startswith(error), result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert "hunter2" not in result.stderr


def test_a_db_command_run_in_process_leaves_the_process_s_outage_lines_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The CLI also runs inside other processes (the tests, an embedder): silencing its own
    # outage line must not silence the process's (it once set the logger's level for good).
    env = cli_env("postgresql+psycopg://orch:hunter2@127.0.0.1:1/orch", tmp_path)
    result = CliRunner().invoke(cli_app, ["db", "current"], env=env)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cannot reach the database: ")
    assert [r for r in caplog.records if r.name == "orchestrator.storage.db"] == []

    Outage().seen("not accepting connections")
    lines = [r.getMessage() for r in caplog.records if r.name == "orchestrator.storage.db"]
    assert lines == ["database unavailable: not accepting connections"]
    assert logging.getLogger("orchestrator.storage.db").filters == []


def test_server_starts_on_a_database_at_0001_and_serves_its_data(
    database_url: str, make_server: Callable[..., LiveServer]
) -> None:
    old = Database(database_url)
    try:
        migrate_to(old, "0001")
        seed(old)
    finally:
        old.dispose()

    # No runner: the old queued and running jobs stay as they were, for the assertions.
    server = make_server(runner_enabled=False)

    assert server.services.db.schema_revision() == HEAD
    done = server.job(job_id_of("succeeded"))
    assert (done["status"], done["name"], done["output"]) == ("succeeded", "done", {"rows": 3})
    assert server.logs(job_id_of("succeeded")) == "log of succeeded\n"
    assert [event["type"] for event in server.events(job_id_of("failed"))] == ["created"]
    old_reader = server.http.get(
        f"/v1/projects/default/jobs/{job_id_of('queued')}", headers=bearer(OLD_TOKEN)
    )
    assert old_reader.status_code == 200, old_reader.text
    assert old_reader.json()["status"] == "queued"


def test_runners_holding_jobs_before_0002_are_registered_and_can_be_recovered(
    database: Database,
) -> None:
    migrate_to(database, "0001")
    seed(database)
    with database.write_engine.begin() as connection:
        connection.execute(sa.text("UPDATE jobs SET runner = 'old-host' WHERE status = 'running'"))

    database.upgrade_schema()

    with database.read() as session:
        (view,) = runners.list_runners(session, lease=3600)
    assert (view.record.name, view.state, view.running) == ("old-host", "active", 1)
    assert view.record.heartbeat_time > OLD_TIME.replace(tzinfo=UTC)
    # Nobody comes back under that name: once the lease runs out the job is taken back.
    with database.transaction() as session:
        recovered = runners.recover_lost(session, None, lease=0.0, interruption_limit=3)
    assert recovered == {"old-host": [job_id_of("running")]}
    with database.read_engine.connect() as connection:
        status, runner = connection.execute(
            sa.text("SELECT status, runner FROM jobs WHERE id = :id"),
            {"id": job_id_of("running")},
        ).one()
    assert (status, runner) == ("queued", None)


# --- 0007: webhook URL credentials out of the clear columns ----------------------------------

OLD_USERINFO = "old-user:old-pw-canary-9f1"
OLD_SCHEDULE = "22222222-2222-2222-2222-222222222222"


def migrate_down_to(db: Database, revision: str) -> None:
    with db.write_engine.connect() as connection:
        config = Config()
        config.set_main_option("script_location", str(migrations.SCRIPT_LOCATION))
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def seed_webhooks(db: Database, hook: str) -> None:
    """At revision 0006, over ``seed``: webhook URLs with credentials, as releases before 0007
    stored them (a queued job's, a finished job's and its delivery, a schedule's job target)."""
    with db.write_engine.begin() as connection:
        tables = sa.MetaData()
        tables.reflect(connection)
        jobs = tables.tables["jobs"]
        for status in ("queued", "succeeded"):
            update = jobs.update().where(jobs.c.id == job_id_of(status))
            connection.execute(update.values(webhook=f"{hook}/{status}"))
        connection.execute(
            tables.tables["webhook_deliveries"].insert().values(
                job_id=job_id_of("succeeded"), number=1, project="default",
                message_id="msg_old", event_type="job.succeeded", url=f"{hook}/succeeded",
                body="{}", signing_key=None, status="delivered", attempts=1,
                next_attempt_at=None, lease_until=None, last_status_code=204, last_error=None,
                attempt_log=[], redelivery_of=None, create_time=OLD_TIME,
                delivered_time=OLD_TIME,
            )
        )  # fmt: skip
        connection.execute(
            tables.tables["schedules"].insert().values(
                id=OLD_SCHEDULE, project="default", name="hooked", cron="0 0 1 1 *",
                run_at=None, timezone="UTC", target_kind="job",
                target={"definition": "etl", "webhook": f"{hook}/scheduled", "secret_env": []},
                secret_ciphertext=None, overlap="allow", on_missed="skip", missed_window=3600.0,
                retry_delays=[], status="active", next_run_at=datetime(2099, 1, 1),
                last_run_at=None, last_outcome=None, create_time=OLD_TIME, update_time=OLD_TIME,
            )
        )  # fmt: skip


def stored_webhooks(db: Database) -> dict[str, Any]:
    """The webhook URLs as stored, and the rows of ``unsealed_webhook_credentials``."""
    with db.write_engine.connect() as connection:
        webhooks = connection.execute(
            sa.text("SELECT id, webhook FROM jobs WHERE webhook IS NOT NULL ORDER BY id")
        ).all()
        urls = connection.execute(sa.text("SELECT url FROM webhook_deliveries")).scalars().all()
        schedules = sa.table("schedules", sa.column("target", sa.JSON))
        (target,) = connection.execute(sa.select(schedules.c.target)).scalars().all()
        unsealed = []
        if sa.inspect(connection).has_table("unsealed_webhook_credentials"):
            unsealed = connection.execute(
                sa.text(
                    "SELECT job_id, schedule_id, userinfo FROM unsealed_webhook_credentials "
                    "ORDER BY id"
                )
            ).all()
    return {
        "jobs": [tuple(row) for row in webhooks],
        "deliveries": list(urls),
        "schedule": target["webhook"],
        "unsealed": [tuple(row) for row in unsealed],
    }


def basic_credentials(request: Any) -> bytes:
    return base64.b64decode(request.headers["authorization"].removeprefix("Basic "))


def test_0007_takes_webhook_credentials_out_of_the_urls_and_a_server_encrypts_them(
    database_url: str, make_server: Callable[..., LiveServer], receiver: Receiver
) -> None:
    hook = receiver.url.replace("://", f"://{OLD_USERINFO}@")
    masked = receiver.url.replace("://", "://***@")
    old = Database(database_url)
    try:
        migrate_to(old, "0001")
        seed(old)
        migrate_to(old, "0006")
        seed_webhooks(old, hook)

        result = old.upgrade_schema()

        assert applied_revisions(result) == revisions_from("0007")
        assert stored_webhooks(old) == {
            "jobs": [
                (job_id_of("queued"), f"{masked}/queued"),
                (job_id_of("succeeded"), f"{masked}/succeeded"),
            ],
            "deliveries": [f"{masked}/succeeded"],
            "schedule": f"{masked}/scheduled",
            # In the clear until a server, which holds the key, encrypts them.
            "unsealed": [
                (job_id_of("queued"), None, OLD_USERINFO),
                (job_id_of("succeeded"), None, OLD_USERINFO),
                (None, OLD_SCHEDULE, OLD_USERINFO),
            ],
        }
        assert_seeded_data_intact(old)
    finally:
        old.dispose()

    # No runner: the old queued job stays queued until it is cancelled.
    server = make_server(runner_enabled=False)

    assert stored_webhooks(server.services.db)["unsealed"] == []
    box = server.services.box
    with server.services.db.read() as session:
        jobs = sa.text("SELECT webhook_auth_ciphertext FROM jobs WHERE webhook IS NOT NULL")
        schedules = sa.text("SELECT webhook_auth_ciphertext FROM schedules")
        sealed = [*session.execute(jobs).scalars(), *session.execute(schedules).scalars()]
    assert [box.decrypt(text) for text in sealed] == [{"userinfo": OLD_USERINFO}] * 3
    assert server.job(job_id_of("queued"))["webhook"] == f"{masked}/queued"
    shown = server.http.get("/v1/projects/default/schedules/hooked").json()
    assert shown["target"]["job"]["webhook"] == f"{masked}/scheduled"

    # The credentials still reach the receiver: the old job's, and a job the schedule submits.
    server.register({"name": "etl", "image": TEST_IMAGE, "command": ["true"]})
    ticked = server.http.post("/v1/projects/default/schedules/hooked/trigger")
    assert ticked.status_code == 202, ticked.text
    for job_id in (job_id_of("queued"), ticked.json()["job_id"]):
        cancelled = server.http.post(f"/v1/projects/default/jobs/{job_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
    requests = receiver.wait_for_requests(2)
    assert sorted(request.path for request in requests) == ["/queued", "/scheduled"]
    assert {basic_credentials(request) for request in requests} == {OLD_USERINFO.encode()}

    server.stop()
    # Neither the database's live rows nor, on SQLite, the bytes the updates replaced.
    assert b"old-pw-canary-9f1" not in database_bytes(database_url)


def test_0007_downgrade_puts_unencrypted_credentials_back(
    database: Database, receiver: Receiver
) -> None:
    hook = receiver.url.replace("://", f"://{OLD_USERINFO}@")
    migrate_to(database, "0001")
    seed(database)
    migrate_to(database, "0006")
    seed_webhooks(database, hook)
    before = stored_webhooks(database)
    migrate_to(database, "0007")
    assert stored_webhooks(database)["schedule"] != before["schedule"]

    migrate_down_to(database, "0006")

    assert stored_webhooks(database) == before
    assert_seeded_data_intact(database)


def test_0008_gives_projects_a_retention_of_their_own_and_jobs_the_expiry_index(
    database: Database,
) -> None:
    migrate_to(database, "0001")
    seed(database)
    migrate_to(database, "0007")
    assert applied_revisions(database.upgrade_schema()) == revisions_from("0008")
    with database.read_engine.connect() as connection:
        inspector = sa.inspect(connection)
        columns = {c["name"]: c for c in inspector.get_columns("projects")}
        indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("jobs")}
        retention = connection.execute(sa.text("SELECT retention FROM projects")).scalars().all()
    assert columns["retention"]["nullable"] is True
    # Existing projects keep the server's setting.
    assert retention and set(retention) == {None}
    assert indexes["ix_jobs_project_finish"] == ["project", "finish_time"]
    assert_seeded_data_intact(database)
    migrate_down_to(database, "0007")
    with database.read_engine.connect() as connection:
        inspector = sa.inspect(connection)
        assert "retention" not in {c["name"] for c in inspector.get_columns("projects")}
        assert "ix_jobs_project_finish" not in {i["name"] for i in inspector.get_indexes("jobs")}


def stored_networks(db: Database) -> dict[str, Any]:
    """The ``network`` of each job's container by status, and of the definition with its hash."""
    with db.read_engine.connect() as connection:
        jobs = connection.execute(sa.text("SELECT status, container FROM jobs")).all()
        spec, digest = connection.execute(sa.text("SELECT spec, spec_hash FROM definitions")).one()
    containers = {job.status: job.container for job in jobs}
    if isinstance(spec, str):  # SQLite's JSON through a plain SELECT
        containers = {status: json.loads(value) for status, value in containers.items()}
        spec = json.loads(spec)
    networks = {
        status: container.get("network", "absent") for status, container in containers.items()
    }
    return {"jobs": networks, "definition": spec["network"], "hash": digest, "spec": spec}


def test_0009_moves_definitions_and_unfinished_jobs_off_the_bridge(database: Database) -> None:
    migrate_to(database, "0001")
    seed(database)
    migrate_to(database, "0008")
    # As 0008's release stored them: every definition and job with Docker's bridge.
    spec = {**definitions_spec(), "network": "bridge"}
    with database.write_engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE definitions SET spec = :spec, spec_hash = :digest"),
            {"spec": json.dumps(spec), "digest": spec_hash(spec)},
        )
        connection.execute(
            sa.text("UPDATE jobs SET container = :container"),
            {"container": json.dumps({"image": "busybox:1.36", "network": "bridge"})},
        )

    assert applied_revisions(database.upgrade_schema()) == revisions_from("0009")

    after = stored_networks(database)
    unfinished = {"scheduled", "queued", "starting", "running"}
    assert after["jobs"] == {s: None if s in unfinished else "bridge" for s in OLD_JOBS}
    assert after["definition"] is None
    # Registering the same file again finds the same version: the hash is today's.
    assert after["hash"] == spec_hash(after["spec"]) == spec_hash(definitions_spec())
    assert_seeded_data_intact(database)

    migrate_down_to(database, "0008")
    before = stored_networks(database)
    assert before["jobs"] == dict.fromkeys(OLD_JOBS, "bridge")
    assert before["definition"] == "bridge"
    assert before["hash"] == spec_hash(spec)


def test_0010_keeps_a_replaced_webhook_secret_and_its_downgrade_forgets_it(
    database: Database,
) -> None:
    migrate_to(database, "0001")
    seed(database)
    migrate_to(database, "0009")
    # As 0009's release stored them: a project's secret and SaladCloud's key, encrypted.
    with database.write_engine.begin() as connection:
        connection.execute(sa.text("UPDATE projects SET webhook_secret_ciphertext = 'ct-project'"))
        connection.execute(
            sa.text(
                "INSERT INTO api_secrets (name, secret_ciphertext, create_time, update_time) "
                "VALUES ('salad', 'ct-salad', :time, :time)"
            ),
            {"time": OLD_TIME},
        )

    assert applied_revisions(database.upgrade_schema()) == revisions_from("0010")

    def stored() -> tuple[list[Any], list[Any]]:
        with database.read_engine.connect() as connection:
            project = connection.execute(sa.text("SELECT * FROM projects")).mappings().all()
            api = connection.execute(sa.text("SELECT * FROM api_secrets")).mappings().all()
        return [dict(row) for row in project], [dict(row) for row in api]

    (project,), (api,) = stored()
    # Nothing was rotated under the new rule yet: no replaced secret, no grace.
    assert project["webhook_secret_ciphertext"] == "ct-project"
    assert project["previous_webhook_secret_ciphertext"] is None
    assert project["webhook_secret_rotate_time"] is None
    assert api["secret_ciphertext"] == "ct-salad" and api["previous_secret_ciphertext"] is None
    assert_seeded_data_intact(database)

    with database.write_engine.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE projects SET previous_webhook_secret_ciphertext = 'ct-old', "
                "webhook_secret_rotate_time = :time"
            ),
            {"time": OLD_TIME},
        )
        connection.execute(sa.text("UPDATE api_secrets SET previous_secret_ciphertext = 'ct-o'"))
    migrate_down_to(database, "0009")
    (project,), (api,) = stored()
    assert "previous_webhook_secret_ciphertext" not in project
    assert "webhook_secret_rotate_time" not in project
    assert "previous_secret_ciphertext" not in api
    # The current secrets stay: 0009's release signs with them alone.
    assert project["webhook_secret_ciphertext"] == "ct-project"
    assert api["secret_ciphertext"] == "ct-salad"
    assert_seeded_data_intact(database)


def definitions_spec() -> dict[str, Any]:
    """A definition's canonical spec as this release stores it (no network: its project's)."""
    return DefinitionSpec.model_validate({"name": "etl", "image": "busybox:1.36"}).canonical()


def test_0013_adds_the_idempotency_keys_and_its_downgrade_drops_them(database: Database) -> None:
    migrate_to(database, "0001")
    seed(database)
    migrate_to(database, "0012")
    assert "idempotency_keys" not in table_names(database)

    assert applied_revisions(database.upgrade_schema()) == revisions_from("0013")

    with database.write_engine.connect() as connection:
        inspector = sa.inspect(connection)
        unique = inspector.get_unique_constraints("idempotency_keys")
        indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("idempotency_keys")}
    assert [c["column_names"] for c in unique] == [["project", "route", "key"]]
    assert indexes["ix_idempotency_keys_create_time"] == ["create_time"]
    # One row per key of a project and route: the database, not the code, refuses a second.
    row = {"project": "default", "route": "jobs", "key": "k", "fingerprint": "f" * 64}
    insert = sa.text(
        "INSERT INTO idempotency_keys (project, route, key, fingerprint, response_headers, "
        "create_time) VALUES (:project, :route, :key, :fingerprint, '{}', :time)"
    )
    with database.write_engine.begin() as connection:
        connection.execute(insert, {**row, "time": OLD_TIME})
        connection.execute(insert, {**row, "route": "schedules", "time": OLD_TIME})
    with pytest.raises(sa.exc.IntegrityError), database.write_engine.begin() as connection:
        connection.execute(insert, {**row, "time": OLD_TIME})
    assert_seeded_data_intact(database)

    migrate_down_to(database, "0012")
    assert "idempotency_keys" not in table_names(database)
    assert_seeded_data_intact(database)


def test_0014_adds_a_null_reason_to_every_job_and_its_downgrade_drops_it(
    database: Database,
) -> None:
    migrate_to(database, "0001")
    seed(database)
    migrate_to(database, "0013")

    assert applied_revisions(database.upgrade_schema()) == revisions_from("0014")

    with database.read_engine.connect() as connection:
        columns = {c["name"]: c for c in sa.inspect(connection).get_columns("jobs")}
        reasons = connection.execute(sa.text("SELECT reason FROM jobs")).scalars().all()
    assert columns["reason"]["nullable"] is True
    # Jobs whose attempts ended before reasons were recorded have none.
    assert reasons and set(reasons) == {None}
    with database.write_engine.begin() as connection:
        connection.execute(sa.text("UPDATE jobs SET reason = 'container_vanished'"))
    assert_seeded_data_intact(database)

    migrate_down_to(database, "0013")
    with database.read_engine.connect() as connection:
        assert "reason" not in {c["name"] for c in sa.inspect(connection).get_columns("jobs")}
    assert_seeded_data_intact(database)


def test_0015_adds_array_columns_null_on_every_job_and_its_downgrade_drops_them(
    database: Database,
) -> None:
    migrate_to(database, "0001")
    seed(database)
    migrate_to(database, "0014")

    assert applied_revisions(database.upgrade_schema()) == revisions_from("0015")

    added = ("parent_id", "array_index", "array_size", "unfinished_children")
    with database.read_engine.connect() as connection:
        columns = {c["name"] for c in sa.inspect(connection).get_columns("jobs")}
        rows = connection.execute(sa.text(f"SELECT {', '.join(added)} FROM jobs")).all()
        indexes = {i["name"] for i in sa.inspect(connection).get_indexes("jobs")}
    assert set(added) <= columns
    # No job made before arrays is a parent or a child.
    assert rows and {tuple(row) for row in rows} == {(None, None, None, None)}
    assert {"ix_jobs_parent_seq", "ix_jobs_parent_status"} <= indexes
    assert_seeded_data_intact(database)

    migrate_down_to(database, "0014")
    with database.read_engine.connect() as connection:
        columns = {c["name"] for c in sa.inspect(connection).get_columns("jobs")}
    assert not set(added) & columns
    assert_seeded_data_intact(database)
