"""Alembic environment for Engage's tables (run inside the Flask app context)."""

from __future__ import annotations

from typing import Any

from alembic import context

from flask_engage.db import get_state
from flask_engage.migrations import VERSION_TABLE, is_engage_table
from flask_engage.models import metadata


def include_name(name, type_, parent_names):
    return not (type_ == "table") or is_engage_table(name)


def run() -> None:
    engine = get_state().db.engine
    options: dict[str, Any] = dict(
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        render_as_batch=engine.dialect.name == "sqlite",
        compare_type=True,
    )
    if context.is_offline_mode():  # ``upgrade --sql``: print the SQL, touch nothing
        context.configure(url=engine.url, literal_binds=True, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    with engine.connect() as connection:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run()
