"""People in the admin (issue 17): found by email, name or id everywhere; shown by name
with a link wherever they appear; their subscriptions per channel can be changed; and a
customer can be forgotten."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ADMIN_TOKEN as TOKEN
from tests.hostapp import db, engage

ADMIN = "/engage/admin"



@pytest.fixture
def people(app):
    engage.identify("c-1", email="ada@example.com", first_name="Ada", last_name="Obi", plan="pro")
    engage.identify("c-2", email="bola@example.com", name="Bola Ade", plan="pro")
    engage.identify("c-3", email="chidi@example.com", plan="free")
    db.session.commit()
    return engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})


def internal_id(external_id: str) -> int:
    return engage.get_customer(external_id).id


def rows(page: str, table: str) -> str:
    return page.split(f'id="{table}"')[1].split("</table>")[0]


@pytest.mark.parametrize("query", ["ada@example.com", "ADA@", "Ada", "obi", "c-1"])
def test_customers_are_found_by_email_name_or_id(app, people, admin, query):
    listed = rows(admin.get(f"{ADMIN}/customers/", query_string={"q": query}).get_data(
        as_text=True), "customers")
    assert "ada@example.com" in listed and "chidi@example.com" not in listed
    found = admin.get(f"{ADMIN}/customers/lookup", query_string={"q": query}).get_json()
    assert found["customers"][0]["external_id"] == "c-1"
    assert found["customers"][0]["name"] == "Ada Obi"


def test_people_are_shown_by_name_with_links(app, people, admin):
    page = admin.get(f"{ADMIN}/segments/{people.id}").get_data(as_text=True)
    members = rows(page, "members")
    link = f'href="/engage/admin/customers/{internal_id("c-1")}">Ada Obi</a>'
    assert link in members and "ada@example.com" in members
    changes = rows(page, "changes")
    assert link in changes and "Bola Ade</a>" in changes

    draft = engage.create_broadcast("Hello", channel="email", segments=[people], subject="Hi",
                                    body="Hello {{ customer.first_name }}")
    preview = admin.get(f"{ADMIN}/broadcasts/{draft.id}", query_string={"customer": "bola@"})
    assert "Written for" in preview.get_data(as_text=True)
    assert "Bola Ade</a>" in preview.get_data(as_text=True).split('id="preview-for"')[1]
    engage.send_broadcast(draft)
    page = admin.get(f"{ADMIN}/broadcasts/{draft.id}").get_data(as_text=True)
    assert link in rows(page, "messages")
    profile = admin.get(f"{ADMIN}/customers/{internal_id('c-1')}").get_data(as_text=True)
    assert '<h2 id="customer-name">Ada Obi</h2>' in profile
    assert f'href="/engage/admin/broadcasts/{draft.id}">Hello</a>' in rows(profile, "messages")


def test_subscriptions_per_channel_can_be_changed(app, people, admin):
    url = f"{ADMIN}/customers/{internal_id('c-1')}"
    page = admin.get(url).get_data(as_text=True)
    email_row = re.search(r'<tr data-channel="email">.*?</tr>', page, re.S).group(0)
    assert "subscribed" in email_row and "Unsubscribe" in email_row
    assert "data-confirm=\"Unsubscribe Ada Obi from email?" in email_row
    changed = admin.post(
        f"{url}/subscription",
        data={"csrf_token": TOKEN, "channel": "email", "subscribed": "0"},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "Ada Obi is now unsubscribed from email." in changed
    assert engage.count({"channel": "email", "op": "unsubscribed"}) == 1
    admin.post(f"{url}/subscription", data={"csrf_token": TOKEN, "channel": "email",
                                           "subscribed": "1"})
    assert engage.count({"channel": "email", "op": "unsubscribed"}) == 0
    bad = admin.post(f"{url}/subscription", data={"csrf_token": TOKEN, "channel": "fax",
                                                 "subscribed": "0"})
    assert bad.status_code == 302  # back to the profile, with the error shown there


def test_a_customer_can_be_forgotten_after_a_confirmation(app, people, admin):
    engage.track("c-1", "Logged in")
    db.session.commit()
    url = f"{ADMIN}/customers/{internal_id('c-1')}"
    page = admin.get(url).get_data(as_text=True)
    confirm = re.search(r'data-confirm="(Forget Ada Obi[^"]*)"', page).group(1)
    assert "(ada@example.com)" in confirm and "1 event(s)" in confirm
    assert "2 segment membership(s)" in confirm and "cannot be undone" in confirm  # All, Pro
    gone = admin.post(f"{url}/forget", data={"csrf_token": TOKEN}, follow_redirects=True)
    assert "Ada Obi was forgotten" in gone.get_data(as_text=True)
    assert engage.get_customer("c-1") is None
    assert admin.get(url).status_code == 404
