"""Fixtures: a fresh host app per test, on SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import text

from tests.hostapp import create_app, db, engage

POSTGRES_URL = os.environ.get("ENGAGE_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("ENGAGE_TEST_REDIS_URL")

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
