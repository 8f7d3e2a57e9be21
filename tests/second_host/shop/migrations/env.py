"""Alembic environment of the shop's own tables (Flask-Migrate).

``migrate.configure_args`` carries what the extensions ask for: flask-engage adds
an ``include_name`` that keeps its ``engage_*`` tables out of autogenerate.
"""

from alembic import context
from flask import current_app

migrate = current_app.extensions["migrate"]


def run() -> None:
    with migrate.db.engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=migrate.db.metadata, **migrate.configure_args
        )
        with context.begin_transaction():
            context.run_migrations()


run()
