"""``sqlite://`` gives Flask-SQLAlchemy one shared connection (StaticPool): operations
called while the host holds uncommitted writes must neither commit nor lose them."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from flask_engage.models import Customer, Message
from tests.hostapp import User, create_app, db, engage


@pytest.fixture
def memory_app():
    app = create_app("sqlite://")
    with app.app_context():
        db.create_all()
        engage.create_all()
        yield app
        db.session.remove()


def customers() -> int:
    return db.session.scalar(select(func.count()).select_from(Customer))


def test_recompute_with_uncommitted_host_writes_commits_none_of_them(memory_app):
    pro = engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
    db.session.add(User(id=1, email="a@example.com", plan="pro"))
    db.session.commit()
    db.session.add(User(id=2, email="b@example.com", plan="pro"))
    db.session.flush()  # the host's write is on the shared connection, uncommitted
    engage.recompute(pro)
    db.session.rollback()
    assert db.session.get(User, 2) is None
    assert customers() == 1
    assert [c.external_id for c in engage.members(pro)] == ["1"]


def test_a_send_waits_for_the_host_commit(memory_app):
    mail = memory_app.extensions["mail"]
    pro = engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
    db.session.add(User(id=1, email="a@example.com", plan="pro"))
    db.session.commit()
    broadcast = engage.create_broadcast(
        "News", channel="email", segments=[pro], subject="Hi", body="News"
    )
    with mail.record_messages() as outbox:
        db.session.add(User(id=2, email="b@example.com", plan="free"))
        db.session.flush()
        engage.send_broadcast(broadcast)
        assert outbox == []  # sending now would have committed the host's pending user
        db.session.commit()
        assert [m.recipients for m in outbox] == [["a@example.com"]]
    assert db.session.scalar(select(func.count()).where(Message.status == "sent")) == 1
    assert customers() == 2
