"""Lists with a real Redis and an in-process RQ worker (skipped without
``ENGAGE_TEST_REDIS_URL``): what a subscription sets off is done by the worker."""

from __future__ import annotations

import pytest

from tests.conftest import REDIS_URL
from tests.hostapp import db, engage

pytestmark = [
    pytest.mark.skipif(not REDIS_URL, reason="ENGAGE_TEST_REDIS_URL is not set"),
    pytest.mark.redis,
]


@pytest.fixture
def app_config(queue_name):
    return {"ENGAGE_REDIS_URL": REDIS_URL, "ENGAGE_QUEUE": queue_name}


def test_the_worker_sends_the_confirmation_and_starts_the_automation(app, client):
    waitlist = engage.create_list("Waitlist", public=True, double_optin=True)
    engage.create_automation(
        "Welcome",
        trigger={"subscribes": waitlist},
        steps=[{"send": {"channel": "email", "subject": "Welcome", "body": "Hello"}}],
    )
    mail = app.extensions["mail"]
    with mail.record_messages() as sent:
        answer = client.post("/engage/lists/waitlist/subscribe", json={"email": "a@example.com"})
        assert answer.json["status"] == "pending" and sent == []  # not in the request
        engage.work(burst=True)
    (confirmation,) = sent
    link = confirmation.body.split("Confirm: ")[1].split()[0]
    with mail.record_messages() as sent:
        assert client.post(link.removeprefix("https://app.example.com")).status_code == 200
        assert sent == []
        engage.work(burst=True)
    assert [(m.subject, m.recipients) for m in sent] == [("Welcome", ["a@example.com"])]
    db.session.expire_all()
    assert [c.external_id for c in engage.list_members(waitlist)] == ["a@example.com"]
