"""Fixtures: a fresh host app per test, on SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import atexit
import os
import uuid

import pytest
from sqlalchemy import create_engine, make_url, text

from tests.hostapp import create_app, db, engage
from tests.smtp_sink import Inbox, free_port

REDIS_URL = os.environ.get("ENGAGE_TEST_REDIS_URL")
#: The second host app's own suite runs in its own virtualenv (test_second_host.py).
collect_ignore = ["second_host"]


def _private_postgres(url: str | None) -> str | None:
    """A database of this test process's own on the configured server.

    Concurrent test runs (several terminals, xdist workers, CI) never share tables;
    subprocesses started by tests inherit it through ENGAGE_TEST_DATABASE_URL.
    """
    if not url:
        return url
    base = make_url(url)
    name = f"{base.database}_{os.getpid()}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
        # Tests need no durability: commits need not wait for the disk.
        conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    engine.dispose()
    private = base.set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        engine = create_engine(base, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()

    atexit.register(drop)
    os.environ["ENGAGE_TEST_DATABASE_URL"] = private
    return private


_BASE_URL = os.environ.get("ENGAGE_TEST_BASE_DATABASE_URL") or os.environ.get(
    "ENGAGE_TEST_DATABASE_URL"
)
if _BASE_URL:
    os.environ["ENGAGE_TEST_BASE_DATABASE_URL"] = _BASE_URL
POSTGRES_URL = _private_postgres(_BASE_URL)

DATABASES = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])


def database_url(kind: str, tmp_path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return POSTGRES_URL


def reset_postgres(app) -> None:
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))


def clean_queue(name: str) -> None:
    """Delete a test queue, its registries and its jobs from Redis."""
    from redis import Redis
    from rq import Queue

    connection = Redis.from_url(REDIS_URL)
    queue = Queue(name, connection=connection)
    ids = set(queue.get_job_ids())
    for registry in (
        queue.started_job_registry,
        queue.finished_job_registry,
        queue.failed_job_registry,
        queue.scheduled_job_registry,
        queue.deferred_job_registry,
        queue.canceled_job_registry,
    ):
        ids.update(registry.get_job_ids())
    keys = [f"rq:job:{i}" for i in ids] + [f"rq:results:{i}" for i in ids]
    keys += list(connection.scan_iter(f"*{name}*"))
    if keys:
        connection.delete(*keys)
    connection.srem("rq:queues", queue.key)
    connection.close()


@pytest.fixture
def queue_name():
    name = f"engage-test-{uuid.uuid4().hex[:12]}"
    yield name
    if REDIS_URL:
        clean_queue(name)


#: The CSRF token the ``admin`` fixture's client carries (forms post it as ``csrf_token``).
ADMIN_TOKEN = "admin-test-token"


@pytest.fixture
def admin(client):
    """A test client of the admin, carrying its CSRF token (:data:`ADMIN_TOKEN`)."""
    with client.session_transaction() as session:
        session["_engage_admin_csrf"] = ADMIN_TOKEN
    return client


@pytest.fixture(params=DATABASES)
def db_kind(request) -> str:
    return request.param


@pytest.fixture
def app_config() -> dict:
    """Extra config for the app fixture (override in a test module)."""
    return {}


@pytest.fixture
def app(db_kind, tmp_path, app_config):
    app = create_app(database_url(db_kind, tmp_path), **app_config)
    if db_kind == "postgresql":
        reset_postgres(app)
    with app.app_context():
        db.create_all()
        engage.create_all()
        yield app
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def session(app):
    return db.session


@pytest.fixture
def smtp():
    """A real SMTP server on 127.0.0.1: (inbox, port)."""
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield inbox, controller.port
    controller.stop()
