"""Who the admin lets in, and where it sends the others (issue 17): visitors who are not
signed in go to the host's login page; signed-in users without access, AJAX calls and
POSTs get 403."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask_login import LoginManager, UserMixin, current_user, login_user
from flask_sqlalchemy import SQLAlchemy

from flask_engage import Engage
from flask_engage.errors import ConfigurationError

ADMIN = "/engage/admin"


class Staff(UserMixin):
    def __init__(self, user_id: str, admin: bool) -> None:
        self.id, self.admin = user_id, admin


STAFF = {"boss": Staff("boss", True), "clerk": Staff("clerk", False)}


def admins_only() -> bool:
    return bool(current_user.is_authenticated and current_user.admin)


@pytest.fixture
def app_config():
    return {"ENGAGE_ADMIN_ACCESS": admins_only}


@pytest.fixture
def host(app):
    """The host app in production mode with Flask-Login and a login page."""
    app.testing = False
    manager = LoginManager(app)
    manager.login_view = "login"
    manager.user_loader(STAFF.get)

    @app.route("/login")
    def login():
        return "the host's login page"

    @app.route("/login-as/<name>")
    def login_as(name):
        login_user(STAFF[name])
        return "ok"

    return app


def test_anonymous_visitors_go_to_the_hosts_login_page(host, client):
    answer = client.get(f"{ADMIN}/segments/")
    assert answer.status_code == 302
    target = urlsplit(answer.headers["Location"])
    assert target.path == "/login"
    assert parse_qs(target.query) == {"next": [f"{ADMIN}/segments/"]}
    assert client.get(f"{ADMIN}/").status_code == 302
    # AJAX calls and POSTs are refused, not redirected
    ajax = client.get(f"{ADMIN}/broadcasts/1/counts", headers={"Accept": "application/json"})
    assert ajax.status_code == 403 and ajax.get_json()["error"].startswith("access:")
    assert client.post(f"{ADMIN}/segments/count", json={"filters": {}}).status_code == 403
    assert client.post(f"{ADMIN}/segments/1/recompute").status_code == 403


def test_signed_in_users_without_access_get_403(host, client):
    client.get("/login-as/clerk")
    assert client.get(f"{ADMIN}/segments/").status_code == 403
    client.get("/login-as/boss")
    assert client.get(f"{ADMIN}/segments/").status_code == 200


def test_a_login_url_of_the_hosts_choosing(app, client):
    app.testing = False
    app.config["ENGAGE_ADMIN_ACCESS"] = lambda: False
    app.config["ENGAGE_ADMIN_LOGIN_URL"] = "https://accounts.example.com/sign-in?app=shop"
    answer = client.get(f"{ADMIN}/customers/?q=ada")
    assert answer.status_code == 302
    assert answer.headers["Location"] == (
        "https://accounts.example.com/sign-in?app=shop&next=%2Fengage%2Fadmin%2Fcustomers%2F%3Fq%3Dada"
    )
    app.config["ENGAGE_IDENTITY"] = lambda: "someone"  # signed in (as a customer): no access
    assert client.get(f"{ADMIN}/customers/").status_code == 403


def test_without_a_login_page_refused_visitors_get_403(app, client):
    app.testing = False
    app.config["ENGAGE_ADMIN_ACCESS"] = lambda: False
    assert client.get(f"{ADMIN}/customers/").status_code == 403


@pytest.mark.parametrize("value", [42, "", "  "])
def test_a_login_url_must_be_a_url_or_an_endpoint(value, db_kind):
    app = Flask("host")
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", ENGAGE_ADMIN_LOGIN_URL=value)
    with pytest.raises(ConfigurationError, match="^ENGAGE_ADMIN_LOGIN_URL"):
        Engage(app, db=SQLAlchemy(app))
