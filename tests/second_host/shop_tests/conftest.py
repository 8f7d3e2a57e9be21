"""A fresh shop app per test, on SQLite (and PostgreSQL when SHOP_POSTGRES_URL is set)."""

from __future__ import annotations

import os

import pytest
from shop import create_app, db, engage
from sqlalchemy import create_engine, text

from flask_engage.testing import TEST_SETTINGS, fresh_tables

POSTGRES_URL = os.environ.get("SHOP_POSTGRES_URL")


def reset_postgres() -> None:
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite"] + (["postgresql"] if POSTGRES_URL else []))
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shop.db'}"
    reset_postgres()
    return POSTGRES_URL


@pytest.fixture
def app(database_url):
    app = create_app({**TEST_SETTINGS, "SQLALCHEMY_DATABASE_URI": database_url})
    with app.app_context(), fresh_tables(db, engage):
        yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def outbox(app):
    with app.extensions["mail"].record_messages() as sent:
        yield sent
