"""docs/scaling.md: the recipe that partitions engage_events by month, run as written,
leaves Engage working (tracking, windows, retention, erasure)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from flask_engage.jobs.retention import prune_events
from flask_engage.models import utcnow
from tests.hostapp import db, engage

DOC = Path(__file__).resolve().parent.parent / "docs" / "scaling.md"


def partition_recipe() -> str:
    section = DOC.read_text(encoding="utf-8").split("### Partitioning by month", 1)[1]
    found = re.search(r"```sql\n(.*?)```", section, re.S)
    assert found, "docs/scaling.md lost its partitioning recipe"
    return found.group(1)


@pytest.fixture
def app_config() -> dict:
    return {"ENGAGE_EVENT_RETENTION_DAYS": 30}


def test_engage_works_on_events_partitioned_by_month(app, session, db_kind):
    if db_kind != "postgresql":
        pytest.skip("partitioning is a PostgreSQL recipe")
    now = utcnow()
    engage.track("before", "Login", timestamp=now - timedelta(days=2))
    session.commit()

    raw = db.engine.raw_connection()
    try:
        raw.driver_connection.autocommit = True  # the recipe has its own BEGIN/COMMIT
        raw.cursor().execute(partition_recipe())
    finally:
        raw.driver_connection.autocommit = False
        raw.close()
    kind = session.scalar(text("SELECT relkind FROM pg_class WHERE relname = 'engage_events'"))
    assert kind == "p"

    # rows copied, new rows land in partitions (ids keep counting), windows work
    engage.track("ada", "Login", timestamp=now - timedelta(hours=1))
    engage.track("ada", "Login", timestamp=now - timedelta(days=100))  # the default partition
    engage.track("bob", "Login", timestamp=now - timedelta(days=60))
    session.commit()
    engage.create_segment("Active", {"event": "Login", "window": {"last_days": 7}})
    assert sorted(c.external_id for c in engage.members("active")) == ["ada", "before"]
    ids = session.scalars(text("SELECT id FROM engage_events ORDER BY id")).all()
    assert len(ids) == len(set(ids)) == 4

    assert prune_events(now) == 2  # the 100- and 60-day-old logins
    engage.forget("ada")
    session.commit()
    left = (
        session.execute(
            text(
                "SELECT c.external_id FROM engage_events e"
                " JOIN engage_customers c ON c.id = e.customer_id"
            )
        )
        .scalars()
        .all()
    )
    assert left == ["before"]
