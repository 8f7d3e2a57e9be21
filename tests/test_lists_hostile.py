"""Hostile input to the list endpoints: random JSON and forms, odd path parameters,
forged tokens. Nothing may answer 500, and a rejected call stores nothing."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeSerializer, URLSafeTimedSerializer
from sqlalchemy import func, select

from flask_engage.lists.optin import CONFIRM_SALT, UNSUBSCRIBE_SALT
from flask_engage.models import Customer, CustomerList, ListChange, ListMember, OutboxItem
from tests.hostapp import db, engage
from tests.test_hostile import HTTP_FUZZ, NASTY_TEXT, json_values

AUTH = {"Authorization": "Basic c2RrLWtleTpzZGstc2VjcmV0"}  # sdk-key:sdk-secret
FIELDS = [
    "title",
    "description",
    "redirect_url",
    "double_optin",
    "public",
    "email",
    "number",
    "first_name",
    "last_name",
    "created_at",
    "meta",
    "subscribed",
]
bodies = st.one_of(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4), json_values)
#: What a browser can put in a form (no lone surrogates: they cannot be encoded).
form_texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=40) | st.sampled_from(
    [text for text in NASTY_TEXT if "\ud800" not in text and "\udfff" not in text]
)


@pytest.fixture
def app_config():
    return {"ENGAGE_BROWSER_RATE_LIMIT": None}


@pytest.fixture
def lists(app):
    engage.create_list("News", public=True, double_optin=True)
    engage.create_list("Open", public=True)
    engage.identify("u1", email="u1@example.com")
    db.session.commit()


def stored():
    db.session.expire_all()
    counts = [
        db.session.scalar(select(func.count()).select_from(model))
        for model in (Customer, CustomerList, ListMember, ListChange, OutboxItem)
    ]
    return (*counts, db.session.scalar(select(func.max(CustomerList.updated_at))))


def send(client, method, path, **kwargs):
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code < 500, (path, kwargs, response.data[:300])
    return response


@settings(HTTP_FUZZ, max_examples=40)
@given(body=bodies)
def test_random_json_never_500_and_rejections_store_nothing(client, lists, body):
    data = json.dumps(body)
    for method, path, headers in [
        ("post", "/engage/v1/lists", AUTH),
        ("put", "/engage/v1/lists/news", AUTH),
        ("post", "/engage/v1/lists/news/subscribers", AUTH),
        ("put", "/engage/v1/lists/news/subscribers/u1", AUTH),
        ("post", "/engage/lists/news/subscribe", {}),
        ("post", "/engage/lists/open/subscribe", {}),
    ]:
        before = stored()
        response = send(
            client, method, path, headers=headers, data=data, content_type="application/json"
        )
        if response.status_code >= 400:
            assert isinstance(response.json["error"], str)
            assert stored() == before, (path, data)


@settings(HTTP_FUZZ, max_examples=40)
@given(form=st.dictionaries(st.sampled_from(FIELDS), form_texts, max_size=4))
def test_random_forms_never_500_and_rejections_store_nothing(client, lists, form):
    for slug in ("news", "open"):
        before = stored()
        response = send(client, "post", f"/engage/lists/{slug}/subscribe", data=form)
        if response.status_code >= 400:
            assert stored() == before, form


@settings(HTTP_FUZZ, max_examples=30)
@given(part=st.text(min_size=1, max_size=200) | st.sampled_from(NASTY_TEXT[1:]))
def test_random_path_parameters_and_forged_tokens(app, client, lists, part):
    before = stored()
    quoted = quote(part, safe="", errors="surrogatepass")
    for method, path in [
        ("get", f"/engage/v1/lists/{quoted}"),
        ("delete", f"/engage/v1/lists/{quoted}/subscribers/{quoted}"),
        ("put", f"/engage/v1/lists/news/subscribers/{quoted}"),
        ("get", f"/engage/v1/lists?next_cursor={quoted}"),
        ("get", f"/engage/lists/{quoted}/subscribe"),
        ("post", f"/engage/lists/news/confirm/{quoted}"),
        ("post", f"/engage/lists/news/unsubscribe/{quoted}"),
    ]:
        send(client, method, path, headers=AUTH, json={"subscribed": False})
    # Well signed tokens holding the wrong things are refused too.
    secret = app.config["SECRET_KEY"]
    for data in (["x"], [1], ["1", "1"], [10**30, 1], [True, 1], {"a": 1}):
        for salt, kind, serializer in (
            (CONFIRM_SALT, "confirm", URLSafeTimedSerializer),
            (UNSUBSCRIBE_SALT, "unsubscribe", URLSafeSerializer),
        ):
            token = serializer(secret, salt=salt).dumps(data)
            assert send(client, "post", f"/engage/lists/news/{kind}/{token}").status_code == 400
    # PUT .../subscribers/<uid> may unsubscribe u1 (a real user): compare what else changed
    after = stored()
    assert (after[0], after[1], after[4]) == (before[0], before[1], before[4])
