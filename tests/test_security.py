"""Security hardening: links never from the request's Host, template render budgets,
unsubscribe tokens that survive merges (and test sends that unsubscribe nobody),
escaped in-app messages, and the example app's own secret key."""

from __future__ import annotations

import logging
import re
import time
from contextlib import contextmanager

import pytest
from flask import request
from itsdangerous import URLSafeSerializer
from sqlalchemy import delete, insert, select

from flask_engage import migrations
from flask_engage.channels import get_channel
from flask_engage.db import get_state
from flask_engage.errors import ConfigurationError, InvalidTemplate, ValidationError
from flask_engage.messages import templates
from flask_engage.messages.compose import compose
from flask_engage.models import (
    Broadcast,
    Customer,
    Event,
    Membership,
    MembershipChange,
    Message,
    Unsubscription,
    utcnow,
)
from tests.conftest import database_url
from tests.hostapp import create_app, db, engage

UNSUBSCRIBED = {"channel": "email", "op": "unsubscribed"}
VISITOR = {"ENGAGE_IDENTITY": lambda: request.headers.get("X-User")}


def outbox(app):
    return app.extensions["mail"].record_messages()


def unsubscribe_link(mail) -> str:
    """The link of an email's List-Unsubscribe header, checked against its body."""
    link = mail.extra_headers["List-Unsubscribe"][1:-1]
    assert link in mail.body
    return link


def customer_of(external_id: str) -> Customer:
    db.session.expire_all()
    return db.session.scalar(select(Customer).where(Customer.external_id == external_id))


def unsubscribed() -> list[str]:
    db.session.expire_all()
    return sorted(
        db.session.scalars(
            select(Customer.external_id).join(
                Unsubscription, Unsubscription.customer_id == Customer.id
            )
        )
    )


# -- links never come from the request's Host header -------------------------------------


@contextmanager
def left_in_the_outbox(app):
    """Work committed by a process that died before doing it: it waits in the outbox."""
    state = get_state(app)
    hook, state.after_commit = state.after_commit, None
    try:
        yield
    finally:
        state.after_commit = hook


def attacker_triggers_pending_work(app, client):
    """Victims have a broadcast waiting in the outbox; the attacker's own request, sent
    with a forged Host header, runs it inline after its commit. Returns the emails."""
    for i in range(3):
        engage.identify(f"victim-{i}", email=f"victim{i}@example.com")
    engage.identify("attacker", email="attacker@evil.example")
    db.session.commit()
    broadcast = engage.create_broadcast(
        "News",
        channel="email",
        segments=["all"],
        subject="News",
        body='<p>Hello {{ customer.email }}, <a href="{{ unsubscribe_url }}">leave</a></p>',
    )
    with left_in_the_outbox(app):
        engage.send_broadcast(broadcast)
    assert db.session.get(Broadcast, broadcast.id).status == "queued"
    with outbox(app) as sent:
        response = client.post(
            "/engage/browser/track",
            base_url="http://evil.example",
            headers={"X-User": "attacker", "Host": "evil.example"},
            json={"event": "Viewed pricing"},
        )
        assert response.status_code == 200
    return broadcast, sent


@pytest.mark.parametrize(
    "app_config",
    [
        {
            **VISITOR,
            "ENGAGE_BASE_URL": None,
            "SERVER_NAME": "app.example.com",
            "PREFERRED_URL_SCHEME": "https",
        },
        {**VISITOR, "ENGAGE_BASE_URL": "https://app.example.com/"},
    ],
    ids=["server-name", "base-url"],
)
def test_a_forged_host_header_never_reaches_anyone_s_links(app, client):
    _, sent = attacker_triggers_pending_work(app, client)
    assert sorted(m.recipients[0] for m in sent) == [
        "attacker@evil.example",
        "victim0@example.com",
        "victim1@example.com",
        "victim2@example.com",
    ]
    for mail in sent:
        raw = mail.as_string()
        link = unsubscribe_link(mail)
        assert link.startswith("https://app.example.com/engage/unsubscribe/")
        assert f'href="{link}"' in mail.html
        assert "evil.example" not in raw.replace(mail.recipients[0], "")
        assert "//localhost" not in raw


@pytest.mark.parametrize("app_config", [{**VISITOR, "ENGAGE_BASE_URL": None}])
def test_without_a_base_url_messages_fail_instead_of_carrying_a_wrong_link(app, client):
    broadcast, sent = attacker_triggers_pending_work(app, client)
    assert sent == []
    db.session.expire_all()
    rows = db.session.scalars(select(Message).where(Message.broadcast_id == broadcast.id)).all()
    assert len(rows) == 4 and {m.status for m in rows} == {"failed"}
    assert all("ConfigurationError" in m.error and "ENGAGE_BASE_URL" in m.error for m in rows)
    assert engage.broadcast_counts(broadcast)["failed"] == 4


@pytest.mark.parametrize(
    "app_config",
    [{"ENGAGE_BASE_URL": None, "SERVER_NAME": "app.example.com", "PREFERRED_URL_SCHEME": "https"}],
)
def test_previews_built_in_a_request_use_the_configured_base(app):
    engage.identify("p", email="p@example.com")
    db.session.commit()
    customer = customer_of("p")
    with app.test_request_context("/engage/admin/", base_url="http://evil.example"):
        composed = compose(customer, get_channel("email"), "S", "Leave: {{ unsubscribe_url }}")
    assert composed.unsubscribe_url.startswith("https://app.example.com/engage/unsubscribe/")
    assert "evil.example" not in composed.rendered.text


def test_no_base_url_is_a_start_up_warning_and_a_bad_one_an_error(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="flask_engage"):
        create_app(f"sqlite:///{tmp_path / 'a.db'}", ENGAGE_BASE_URL=None)
    assert "ENGAGE_BASE_URL" in caplog.text and "Host header" in caplog.text
    with pytest.raises(ConfigurationError, match="ENGAGE_BASE_URL"):
        create_app(f"sqlite:///{tmp_path / 'b.db'}", ENGAGE_BASE_URL="app.example.com")


# -- template render budgets -------------------------------------------------------------

PAYLOADS = [
    "{{ '%0200000000d' % 1 }}",
    "{{ '%.500000000f' % 1.0 }}",
    "{{ '%*d' % (500000000, 1) }}",
    "{{ '%0200000000d'|format(1) }}",
    "{{ '{:>500000000}'.format(1) }}",
    "{{ '{:>{}}'.format(1, 500000000) }}",
    "{{ '{0}{0}{0}{0}{0}{0}{0}{0}{0}{0}{0}{0}'.format('x' * 99999) }}",
    "{{ ('{0}' * 30000).format('x' * 99999) }}",
    "{{ 'x'|center(500000000) }}",
    "{{ 'x'.center(500000000) }}",
    "{{ 'x'.ljust(500000000) }}",
    "{{ 'x'.rjust(500000000) }}",
    "{{ 'x'.zfill(500000000) }}",
    "{{ 'a\tb'.expandtabs(500000000) }}",
    "{{ 'x'|indent(500000000, true) }}",
    "{{ ('x y ' * 25000)|wordwrap(1, wrapstring='-' * 1000) }}",
    "{{ ('x' * 99999)|wordwrap(1) }}",
    "{{ ('a' * 100000)|replace('a', 'b' * 100000) }}",
    "{{ ('a' * 100000).replace('a', 'b' * 100000) }}",
    "{{ range(100000)|join('x' * 1000) }}",
    "{{ ('x' * 1000).join(range(90000)|map('string')) }}",
    "{{ [1, 2]|tojson(500000000) }}",
    "{{ ('<>' * 50000)|striptags }}",
    "{{ lipsum(5000000) }}",
    "{{ lipsum(1, min=100000000, max=100000001) }}",
    "{% for i in range(100000) %}{{ i }}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100) %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{{ 'x' * 500000000 }}",
    "{{ [0] * 500000000 }}",
    "{{ ((9 ** 64) ** 64) ** 64 }}",
    "{% set ns = namespace(x=9 ** 64) %}{% for i in range(40) %}{% set ns.x = ns.x * ns.x %}"
    "{% endfor %}",
    "{% set ns = namespace(s='xx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}",
    "{% macro f(s, n) %}{{ f(s ~ s, n - 1) if n else s }}{% endmacro %}{{ f('x', 40) }}",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
    "{% set b = 'x' * 99999 %}{{ b ~ b ~ b ~ b ~ b ~ b ~ b ~ b ~ b ~ b ~ b ~ b }}",
    "{% set b = 'x' * 99999 %}{{ [b, b, b, b, b, b, b, b, b, b, b, b]|string }}",
    "{% set b = 'x' * 99999 %}{{ [b, b, b, b, b, b, b, b, b, b, b, b] }}",
    "{% set x %}{% for i in range(40000) %}{{ 'y' * 30 }}{% endfor %}{% endset %}",
    "{% filter upper %}{% for i in range(40000) %}yyyyyyyyyyyyyyyyyyyyyyyyyyyyyy{% endfor %}"
    "{% endfilter %}",
    "{{ ([[1]] * 100000)|sum(start=[]) }}",
    "{{ [1]|batch(500000000, 'x')|list }}",
    "{{ [1, 2]|slice(500000000)|list }}",
    "{{ (1).to_bytes(500000000, 'big') }}",
    "{{ ('a' * 20).translate({97: 'x' * 99999}) }}",
    "{{ self.b() }}{% block b %}{% endblock %}",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_template_payloads_are_refused_at_save_within_a_second(app, payload):
    for field in ("body", "subject"):
        spec = {"subject": "S", "body": "B", field: payload}
        started = time.process_time()  # CPU time: what the payload costs, whatever the load
        with pytest.raises(InvalidTemplate) as info:
            engage.create_broadcast("Bomb", channel="email", segments=["all"], **spec)
        assert time.process_time() - started < 1.0
        assert info.value.field == field and str(info.value).startswith(f"{field}: ")
    with pytest.raises(ValidationError, match=r"^steps\[0\]\.send\.body: "):
        engage.create_automation(
            "Bomb",
            trigger={"joins": "all"},
            steps=[{"send": {"channel": "in_app", "body": payload}}],
        )
    assert db.session.query(Broadcast).count() == 0


def test_a_template_over_budget_for_one_customer_s_data_fails_that_message_alone(app):
    engage.identify(1, email="ada@example.com", width=20, rounds=3)
    engage.identify(2, email="evil@example.com", width=500_000_000, rounds=100_000)
    engage.identify(3, email="chi@example.com", width=5, rounds=2)
    db.session.commit()
    body = (
        "[{{ 'x'|center(customer.width|default(1)) }}]"
        "{% for i in range(customer.rounds|default(1)) %}"
        "{% for j in range(customer.rounds|default(1)) %}.{% endfor %}{% endfor %}"
    )
    broadcast = engage.create_broadcast(
        "Data", channel="email", segments=["all"], subject="S", body=body
    )
    started = time.perf_counter()
    with outbox(app) as sent:
        engage.send_broadcast(broadcast)
    assert time.perf_counter() - started < 3.0
    assert sorted(m.recipients[0] for m in sent) == ["ada@example.com", "chi@example.com"]
    db.session.expire_all()
    failed = db.session.scalars(select(Message).where(Message.status == "failed")).all()
    assert [m.customer.external_id for m in failed] == ["2"]
    assert "render budget" in failed[0].error
    assert engage.broadcast_counts(broadcast)["failed"] == 1


def test_running_out_of_memory_at_save_is_a_refusal(app, monkeypatch):
    def exhausted(value):
        raise MemoryError

    monkeypatch.setitem(templates._text_env.filters, "upper", exhausted)
    with pytest.raises(InvalidTemplate, match="out of memory"):
        engage.create_broadcast(
            "M", channel="email", segments=["all"], subject="S", body="{{ 'x'|upper }}"
        )


def test_ordinary_templates_render_as_before(app):
    engage.identify(
        1,
        email="ada@example.com",
        name="Ada",
        plan="pro",
        items=["Card", "Loan"],
        prices=[9.5, 100],
    )
    db.session.commit()
    body = """<h1>Hi {{ customer.name|default('friend') }}</h1>
<p>{{ '%s plan'|format(customer.plan|upper) }} - {{ '{:>6}'.format(customer.plan) }}</p>
<ul>{% for item in customer["items"] %}<li>{{ loop.index }}. {{ item|center(8) }} {{
'%.2f' % customer.prices[loop.index0] }}{% if loop.last %}!{% endif %}</li>{% endfor %}</ul>
<p>{{ ['a', 'b']|join(', ') }} {{ lipsum(1, false, 3, 4)|length > 0 }} {{ 2 ** 10 }}</p>
{% macro greet(n) %}Hello {{ n }}{% endmacro %}<p>{{ greet(customer.name ~ '!') }}</p>"""
    broadcast = engage.create_broadcast(
        "Normal",
        channel="email",
        segments=["all"],
        subject="{{ customer.name }}'s {{ 'news'|title }}",
        body=body,
    )
    with outbox(app) as sent:
        engage.send_broadcast(broadcast)
    (mail,) = sent
    assert mail.subject == "Ada's News"
    for expected in (
        "<h1>Hi Ada</h1>",
        "PRO plan -    pro",
        "1.   Card   9.50",
        "2.   Loan   100.00!",
        "a, b True 1024",
        "Hello Ada!",
    ):
        assert expected in mail.html


def test_pathological_html_is_turned_into_text_in_linear_time(app):
    engage.identify(1, email="ada@example.com")
    db.session.commit()
    body = "<p>" + '<a href="x">' * 60_000 + "</p>"
    started = time.perf_counter()
    broadcast = engage.create_broadcast(
        "Tags", channel="email", segments=["all"], subject="S", body=body
    )
    with outbox(app) as sent:
        engage.send_broadcast(broadcast)
    assert time.perf_counter() - started < 2.0
    assert len(sent) == 1


# -- unsubscribe tokens: the host's id, stable across merges ---------------------------


def send_email(app, name="News", body="<p>Hi</p>") -> dict[str, str]:
    """Send a broadcast to everyone; the unsubscribe link each address received."""
    broadcast = engage.create_broadcast(
        name, channel="email", segments=["all"], subject="S", body=body
    )
    with outbox(app) as sent:
        engage.send_broadcast(broadcast)
    return {m.recipients[0]: unsubscribe_link(m) for m in sent}


def path_of(link: str) -> str:
    return link.removeprefix("https://app.example.com")


def test_a_merged_customer_s_old_link_unsubscribes_the_merged_customer_only(app, client):
    engage.identify("user-1", email="ada@example.com")
    engage.identify("anon-7", email="ada.old@example.com")
    engage.identify("other", email="bola@example.com")
    db.session.commit()
    anon_id = customer_of("anon-7").id
    links = send_email(app)
    token = links["ada.old@example.com"].rsplit("/", 1)[1]
    payload = URLSafeSerializer("x").loads_unsafe(token)[1]
    assert payload[0] == "anon-7" and anon_id not in payload  # the host's id, not ours

    engage.merge("anon-7", "user-1")
    engage.identify("anon-7", email="someone.new@example.com")  # the id comes back
    engage.identify("new", email="new@example.com")
    db.session.commit()
    # an internal id is never given again (SQLite reused the highest one before)
    assert anon_id not in {customer_of(c).id for c in ("anon-7", "new")}

    page = client.get(path_of(links["ada.old@example.com"]))
    assert page.status_code == 200 and b"Unsubscribe?" in page.data
    response = client.post(
        path_of(links["ada.old@example.com"]), data={"List-Unsubscribe": "One-Click"}
    )
    assert response.status_code == 200 and b"You are unsubscribed" in response.data
    assert unsubscribed() == ["user-1"]
    assert engage.count(UNSUBSCRIBED) == 1


def test_links_follow_a_chain_of_merges_and_the_destination_s_links_keep_working(app, client):
    for name in ("x", "y", "z"):
        engage.identify(name, email=f"{name}@example.com")
    db.session.commit()
    links = send_email(app)
    engage.merge("x", "y")
    engage.merge("y", "z")
    assert client.post(path_of(links["x@example.com"])).status_code == 200
    assert unsubscribed() == ["z"]
    assert (
        client.post(path_of(links["z@example.com"]), data={"action": "resubscribe"}).status_code
        == 200
    )
    assert unsubscribed() == []
    assert client.post(path_of(links["y@example.com"])).status_code == 200
    assert unsubscribed() == ["z"]


def test_a_link_of_a_customer_who_is_gone_answers_400_and_touches_nobody(app, client):
    engage.identify("gone", email="gone@example.com")
    db.session.commit()
    links = send_email(app)
    gone = customer_of("gone").id
    with db.engine.begin() as conn:
        for table in (Message, Event, Membership, MembershipChange):
            conn.execute(delete(table).where(table.customer_id == gone))
        conn.execute(delete(Customer).where(Customer.id == gone))
    engage.identify("gone", email="reborn@example.com")  # same host id, a new customer
    db.session.commit()
    for method in (client.get, client.post):
        response = method(path_of(links["gone@example.com"]))
        assert response.status_code == 400 and b"not valid" in response.data
    assert unsubscribed() == []


def legacy_token(app, internal_id: int) -> str:
    """An unsubscribe token as versions before 0.3 made them: the internal id."""
    serializer = URLSafeSerializer(app.config["SECRET_KEY"], salt="flask-engage-unsubscribe")
    return serializer.dumps([internal_id, "email"])


def test_tokens_made_before_the_upgrade_keep_working_for_their_customer_only(app, client):
    db.session.remove()
    engage.drop_all()
    migrations.upgrade("0004")  # the revision before stable tokens
    now = utcnow()
    for i in (1, 2, 3):  # written as that version did (today's code needs today's tables)
        db.session.execute(
            insert(Customer).values(
                external_id=f"old-{i}",
                email=f"old{i}@example.com",
                attributes={},
                created_at=now,
                updated_at=now,
            )
        )
    db.session.commit()
    ids = {i: customer_of(f"old-{i}").id for i in (1, 2, 3)}
    tokens = {i: legacy_token(app, ids[i]) for i in (1, 2, 3)}
    with db.engine.begin() as conn:  # old-3 went away before the upgrade
        for table in (Event, Membership, MembershipChange):
            conn.execute(delete(table).where(table.customer_id == ids[3]))
        conn.execute(delete(Customer).where(Customer.id == ids[3]))
    db.session.remove()
    migrations.upgrade()

    now = utcnow()  # a customer created after the upgrade who got old-3's id
    db.session.execute(
        insert(Customer).values(
            id=ids[3],
            external_id="reused",
            email="r@x.io",
            attributes={},
            created_at=now,
            updated_at=now,
        )
    )
    db.session.commit()
    engage.merge("old-2", "after")

    assert client.post(f"/engage/unsubscribe/{tokens[1]}").status_code == 200
    assert client.post(f"/engage/unsubscribe/{tokens[2]}").status_code == 200
    assert unsubscribed() == ["after", "old-1"]
    response = client.post(f"/engage/unsubscribe/{tokens[3]}")
    assert response.status_code == 400 and b"not valid" in response.data
    assert unsubscribed() == ["after", "old-1"]


def test_a_test_send_s_link_unsubscribes_nobody_and_says_so(app, client):
    engage.identify("real", email="real@example.com")
    db.session.commit()
    customer = customer_of("real")
    composed = compose(customer, get_channel("email"), "S", "Hi", test=True)
    path = path_of(composed.unsubscribe_url)
    page = client.get(path)
    assert page.status_code == 200 and b"test message" in page.data
    response = client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200 and b"unsubscribes nobody" in response.data
    assert unsubscribed() == []
    real = compose(customer, get_channel("email"), "S", "Hi").unsubscribe_url
    assert client.post(path_of(real)).status_code == 200
    assert unsubscribed() == ["real"]


# -- in-app messages: customer data escaped -----------------------------------------------


@pytest.mark.parametrize("app_config", [VISITOR])
def test_plain_text_in_app_messages_escape_customer_data(app, client):
    name = '<img src=x onerror="alert(1)">'
    engage.identify("v", name=name)
    db.session.commit()
    engage.send_broadcast(
        engage.create_broadcast(
            "Plain",
            channel="in_app",
            segments=["all"],
            subject="For {{ customer.name }}",
            body="Hi {{ customer.name }} & welcome\nLine two",
        )
    )
    engage.send_broadcast(
        engage.create_broadcast(
            "Html", channel="in_app", segments=["all"], body="<p>Hi {{ customer.name }}</p>"
        )
    )
    html_message, plain = client.get("/engage/inbox", headers={"X-User": "v"}).get_json()[
        "messages"
    ]
    assert plain["body"] == (
        "Hi &lt;img src=x onerror=&#34;alert(1)&#34;&gt; &amp; welcome\nLine two"
    )
    assert plain["text"] == f"Hi {name} & welcome\nLine two"
    assert plain["subject"] == f"For {name}"  # plain text: insert it as text
    assert html_message["body"] == "<p>Hi &lt;img src=x onerror=&#34;alert(1)&#34;&gt;</p>"
    assert html_message["text"] == f"Hi {name}"
    assert "<img" not in plain["body"] + html_message["body"]


# -- the example app's secret key ------------------------------------------------------


@pytest.mark.parametrize("db_kind", ["sqlite"])
def test_the_example_app_makes_its_own_secret_key_per_install(tmp_path, monkeypatch, db_kind):
    from example_app.app import create_app as create_example_app

    monkeypatch.delenv("SECRET_KEY", raising=False)
    config = {"SQLALCHEMY_DATABASE_URI": database_url(db_kind, tmp_path), "TESTING": True}
    first = create_example_app(config, instance_path=str(tmp_path / "one"))
    again = create_example_app(config, instance_path=str(tmp_path / "one"))
    other = create_example_app(config, instance_path=str(tmp_path / "two"))
    key = first.config["SECRET_KEY"]
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert again.config["SECRET_KEY"] == key != other.config["SECRET_KEY"]
    kept = tmp_path / "one" / "secret_key"
    assert kept.read_text() == key and kept.stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("SECRET_KEY", "from-the-environment")
    assert (
        create_example_app(config, instance_path=str(tmp_path / "three")).config["SECRET_KEY"]
        == "from-the-environment"
    )
    assert not (tmp_path / "three" / "secret_key").exists()
    for app in (first, again, other):
        with app.app_context():
            app.extensions["sqlalchemy"].engine.dispose()
