"""Every admin URL and JSON endpoint answers 4xx, never 500 (issues 14 and 17): huge
integers in paths, query strings, forms and JSON; deeply nested JSON; oversized bodies."""

from __future__ import annotations

import json

import pytest

from flask_engage.admin.base import MAX_BODY
from tests.test_admin import ID_ARGS, TOKEN, admin_urls, data  # noqa: F401 (fixture)

ADMIN = "/engage/admin"
HUGE = [10**30, 2**63, 2**31]
POSITIONS = ("before", "after", "messages_before", "changes_before", "segment")


@pytest.fixture
def admin(client):
    with client.session_transaction() as session:
        session["_engage_admin_csrf"] = TOKEN
    return client


def answer(client, method, url, **kwargs):
    response = client.open(url, method=method, headers={"X-CSRFToken": TOKEN}, **kwargs)
    return response.status_code


def rules_with_ids(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("engage_") and not rule.endpoint.endswith(".static"):
            if set(rule.arguments) & set(ID_ARGS):
                yield rule


def test_huge_ids_in_paths_are_404(app, data, admin):  # noqa: F811
    checked = 0
    for rule in rules_with_ids(app):
        for huge in HUGE:
            values = {name: huge for name in rule.arguments if name in ID_ARGS}
            path = rule.build(values, append_unknown=False)[1]
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                status = answer(admin, method, path, data={"csrf_token": TOKEN})
                assert 400 <= status < 500, (method, path, status)
                checked += 1
    assert checked >= 60


def test_huge_positions_in_query_strings_are_400(app, data, admin):  # noqa: F811
    for method, url in admin_urls(app, data):
        if method != "GET":
            continue
        for name in POSITIONS:
            for huge in (*HUGE, "12abc", "-5", "9" * 400):
                status = answer(admin, "GET", url, query_string={name: str(huge)})
                assert status < 500, (url, name, huge, status)
    listed = admin.get(f"{ADMIN}/customers/", query_string={"before": str(10**30)})
    assert listed.status_code == 400 and "before" in listed.get_data(as_text=True)
    assert admin.get(f"{ADMIN}/customers/", query_string={"before": "5"}).status_code == 200
    long_search = admin.get(f"{ADMIN}/customers/", query_string={"q": "x" * 100_000})
    assert long_search.status_code == 200
    for url in (f"{ADMIN}/customers/", f"{ADMIN}/customers/lookup", f"{ADMIN}/segments/values"):
        for name in ("q", "attribute", "value", "customer"):
            assert admin.get(url, query_string={name: "a\x00b"}).status_code == 400


def test_text_no_database_stores_is_400(app, data, admin):  # noqa: F811
    zero = "a\x00b"
    form = {"csrf_token": TOKEN, "name": zero, "filters": "{}"}
    assert admin.post(f"{ADMIN}/segments/new", data=form).status_code == 400
    for url, body in (
        (f"{ADMIN}/segments/count", {"filters": {"attribute": zero, "op": "exists"}}),
        (f"{ADMIN}/automations/preview", {"step": {"channel": "in_app", "body": "x"},
                                          "customer": zero}),
        (f"{ADMIN}/broadcasts/check", {zero: 1}),
    ):
        assert answer(admin, "POST", url, json=body) == 400, url


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_deeply_nested_json_is_400_everywhere(app, data, admin):  # noqa: F811
    for url, field in (
        (f"{ADMIN}/segments/new", "filters"),
        (f"{ADMIN}/segments/{data['segment_id']}/edit", "filters"),
        (f"{ADMIN}/automations/new", "steps"),
        (f"{ADMIN}/automations/{data['automation_id']}/edit", "steps"),
    ):
        form = {"csrf_token": TOKEN, "name": "Deep", field: nested(100_000),
                "segment": str(data["segment_id"]), "trigger_kind": "joins"}
        response = admin.post(url, data=form)
        assert response.status_code == 400, url
        assert "nested too deeply" in response.get_data(as_text=True)
    posts = [url for method, url in admin_urls(app, data) if method == "POST"]
    assert len(posts) >= 15
    deep_filter = json.dumps({"filters": json.loads(nested(50))})
    reads_json = ("/count", "/impact", "/check", "/preview", "/new")
    for url in posts:
        for body in (nested(100_000), '{"filters": ' + nested(5000) + "}", deep_filter):
            status = answer(admin, "POST", url, data=body, content_type="application/json")
            assert status < 500, (url, status)
            if url.endswith(reads_json):
                assert 400 <= status < 500, (url, status)


def test_oversized_bodies_are_413(app, data, admin):  # noqa: F811
    big = b"x" * (MAX_BODY + 1)
    for method, url in admin_urls(app, data):
        if method != "POST":
            continue
        status = answer(admin, "POST", url, data=big, content_type="application/json")
        assert status == 413, (url, status)
        status = answer(
            admin, "POST", url, data={"csrf_token": TOKEN, "body": big.decode()},
        )
        assert status == 413, (url, status)


def test_huge_integers_in_forms_and_json_are_400(app, data, admin):  # noqa: F811
    huge = str(10**30)
    broadcast = admin.post(f"{ADMIN}/broadcasts/new", data={
        "csrf_token": TOKEN, "name": "B", "channel": "email", "segments": [huge],
        "subject": "s", "body": "b"})
    assert broadcast.status_code == 400
    automation = admin.post(f"{ADMIN}/automations/new", data={
        "csrf_token": TOKEN, "name": "A", "trigger_kind": "joins", "segment": huge,
        "steps": '[{"wait": {"days": 1}}]'})
    assert automation.status_code == 400
    for body in ({"broadcast_id": 10**30}, {"segments": [10**30], "channel": "email",
                                            "subject": "s", "body": "b", "name": "n"}):
        status = answer(admin, "POST", f"{ADMIN}/broadcasts/check", json=body)
        assert status == 400, body
    step = {"channel": "in_app", "body": "Hi"}
    for body in ({"step": step, "segment": 10**30}, {"step": step, "customer": "9" * 10_000}):
        status = answer(admin, "POST", f"{ADMIN}/automations/preview", json=body)
        assert status < 500, body
    status = answer(admin, "POST", f"{ADMIN}/segments/count",
                    json={"filters": {"attribute": "n", "op": "eq", "value": 10**30}})
    assert status == 400
    status = answer(admin, "POST", f"{ADMIN}/customers/{data['customer_id']}/subscription",
                    data={"csrf_token": TOKEN, "channel": huge, "subscribed": huge})
    assert status < 500
