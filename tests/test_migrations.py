"""Engage's own Alembic migrations, and a host's Flask-Migrate autogenerate ignoring them."""

from __future__ import annotations

import logging

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import inspect, text

from flask_engage.migrations import VERSION_TABLE, alembic_config, is_engage_table
from flask_engage.models import metadata
from tests.conftest import database_url, reset_postgres
from tests.hostapp import db, engage

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def engage_tables() -> set[str]:
    return {name for name in inspect(db.engine).get_table_names() if is_engage_table(name)}


def schema_diffs() -> list:
    def include_name(name, type_, parent_names):
        return type_ != "table" or (is_engage_table(name) and name != VERSION_TABLE)

    with db.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"include_name": include_name, "compare_type": True}
        )
        return compare_metadata(context, metadata)


def test_upgrade_gives_the_create_all_schema_and_downgrade_drops_it(app):
    assert schema_diffs() == []  # create_all, the reference
    engage.drop_all()
    assert engage_tables() == set()
    runner = app.test_cli_runner()
    assert runner.invoke(args=["engage", "db", "current"]).output.startswith("none")

    result = runner.invoke(args=["engage", "db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert schema_diffs() == []
    assert VERSION_TABLE in engage_tables()
    assert engage.get_segment("all") is not None
    db.session.remove()  # end the read transaction, or PostgreSQL's DROP TABLE waits for it
    current = runner.invoke(args=["engage", "db", "current"])
    assert current.exit_code == 0 and current.output.strip() == HEAD

    result = runner.invoke(args=["engage", "db", "downgrade", "base"])
    assert result.exit_code == 0, result.output
    assert engage_tables() <= {VERSION_TABLE}
    assert inspect(db.engine).has_table("host_users")  # the host's tables are untouched


@pytest.fixture
def engage_log_kept():
    """The host's generated env.py calls ``logging.config.fileConfig``, which disables every
    logger this process already has, Engage's too: later tests in the process need it."""
    yield
    logging.getLogger("flask_engage").disabled = False


@pytest.mark.parametrize("order", ["migrate-first", "engage-first"])
@pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")  # its env.py
@pytest.mark.usefixtures("engage_log_kept")
def test_host_autogenerate_never_drops_engage_tables(db_kind, tmp_path, order):
    from flask_migrate import Migrate

    host = Flask(__name__)
    host.config.update(SQLALCHEMY_DATABASE_URI=database_url(db_kind, tmp_path), TESTING=True)
    db.init_app(host)
    migrate = Migrate()
    if order == "migrate-first":
        migrate.init_app(host, db)
        engage.init_app(host, db=db)
    else:
        engage.init_app(host, db=db)
        migrate.init_app(host, db)
    if db_kind == "postgresql":
        reset_postgres(host)
    directory = str(tmp_path / "host_migrations")
    with host.app_context():
        db.create_all()
        engage.create_all()
        with db.engine.begin() as connection:  # a real change for autogenerate to find
            connection.execute(text("DROP TABLE host_notes"))
        runner = host.test_cli_runner()
        assert runner.invoke(args=["db", "init", "-d", directory]).exit_code == 0
        result = runner.invoke(args=["db", "migrate", "-d", directory, "-m", "host change"])
        assert result.exit_code == 0, result.output
        (script,) = (tmp_path / "host_migrations" / "versions").glob("*.py")
        source = script.read_text()
        assert "op.create_table('host_notes'" in source
        assert "engage_" not in source
        db.session.remove()
        db.engine.dispose()
