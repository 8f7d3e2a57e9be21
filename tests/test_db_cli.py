"""``flask engage db``: adopting tables made by create_all(), stamp, history, --sql,
and one-line errors instead of Alembic tracebacks."""

from __future__ import annotations

from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from flask_engage.migrations import VERSION_TABLE, alembic_config
from tests.hostapp import db

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def invoke(app, *args: str):
    db.session.remove()  # no read transaction of the test may hold a lock on the tables
    return app.test_cli_runner().invoke(args=["engage", "db", *args])


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_upgrade_adopts_tables_made_by_create_all(app):
    # the fixture made the tables with engage.create_all(), as tests and demos do
    assert invoke(app, "current").output.startswith("none")
    result = invoke(app, "upgrade")
    assert result.exit_code == 0, result.output
    assert f"engage tables made by create_all() match revision {HEAD}: stamped" in result.output
    assert invoke(app, "current").output.strip() == HEAD
    again = invoke(app, "upgrade")
    assert again.exit_code == 0 and "stamped" not in again.output


def test_tables_that_differ_are_refused_in_one_line_then_stamped_by_hand(app):
    with db.engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_engage_customers_email"))
    line = one_line_error(invoke(app, "upgrade"))
    assert line.startswith("Error: engage tables exist without a migration version and differ")
    assert "add_index ix_engage_customers_email" in line
    assert "flask engage db stamp REVISION" in line
    assert not inspect(db.engine).has_table(VERSION_TABLE)  # nothing half-done

    stamped = invoke(app, "stamp")
    assert (
        stamped.exit_code == 0
        and stamped.output.strip() == f"engage tables stamped at revision {HEAD}"
    )
    assert invoke(app, "upgrade").exit_code == 0


def test_history_lists_the_migrations_newest_first(app):
    invoke(app, "upgrade")
    lines = invoke(app, "history").output.strip().splitlines()
    assert f" -> {HEAD} (head, current): " in lines[0]
    assert lines[-1] == "<base> -> 0001: initial engage tables"


def test_upgrade_sql_prints_the_sql_and_changes_nothing(app, db_kind):
    result = invoke(app, "upgrade", "--sql")
    if db_kind == "sqlite":
        line = one_line_error(result)
        assert "SQLite cannot alter these tables without a live database" in line
    else:
        assert result.exit_code == 0, result.output
        assert "CREATE TABLE engage_customers" in result.output
        assert "ALTER TABLE engage_customers ADD COLUMN deleted_at" in result.output
    assert not inspect(db.engine).has_table(VERSION_TABLE)


def test_a_bad_revision_is_one_line(app):
    line = one_line_error(invoke(app, "upgrade", "nosuch"))
    assert line == "Error: Can't locate revision identified by 'nosuch'"
    assert one_line_error(invoke(app, "stamp", "nosuch")).startswith("Error: Can't locate")
