"""Segments: the DESIGN.md examples, membership kept up to date, time, history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, event, func, select, update

from flask_engage import signals
from flask_engage.errors import InvalidFilter, NotFound, StateError
from flask_engage.models import Customer, Membership, MembershipChange, Segment
from tests.hostapp import db, engage

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)


def ids(segment):
    return sorted(c.external_id for c in engage.members(segment))


def test_default_segment_all_contains_everyone_and_cannot_be_deleted(app):
    engage.identify(1)
    engage.identify(2)
    db.session.commit()
    everyone = engage.get_segment("all")
    assert everyone.name == "All" and everyone.is_default
    assert ids(everyone) == ["1", "2"]
    with pytest.raises(StateError):
        engage.delete_segment(everyone)


def test_pro_customers_in_lagos(app):
    engage.identify(1, plan="pro", city="Lagos")
    engage.identify(2, plan="pro", city="Accra")
    engage.identify(3, plan="free", city="Lagos")
    db.session.commit()
    segment = engage.create_segment(
        "Pro in Lagos",
        {
            "all": [
                {"attribute": "plan", "op": "eq", "value": "pro"},
                {"attribute": "city", "op": "eq", "value": "Lagos"},
            ]
        },
    )
    assert segment.slug == "pro-in-lagos"
    assert ids(segment) == ["1"]
    # membership follows changes: 2 moves to Lagos, 1 downgrades
    engage.identify(2, city="Lagos")
    engage.identify(1, plan="free")
    db.session.commit()
    assert ids(segment) == ["2"]


def test_not_logged_in_for_30_days_includes_customers_without_events(app):
    engage.identify("never")
    engage.track("recent", "Logged in", timestamp=NOW - timedelta(days=2))
    engage.track("lapsed", "Logged in", timestamp=NOW - timedelta(days=40))
    db.session.commit()
    filters = {"event": "Logged in", "window": {"last_days": 30}, "count": {"op": "eq", "value": 0}}
    assert engage.count(filters, now=NOW) == 2
    segment = engage.create_segment("Not logged in for 30 days", filters)
    engage.recompute(segment, now=NOW)
    assert ids(segment) == ["lapsed", "never"]


def test_spent_over_1000_this_month(app):
    engage.track(1, "Purchase", {"amount": 700}, timestamp=NOW - timedelta(days=1))
    engage.track(1, "Purchase", {"amount": 400}, timestamp=NOW - timedelta(days=2))
    engage.track(2, "Purchase", {"amount": 900}, timestamp=NOW - timedelta(days=1))
    engage.track(2, "Purchase", {"amount": 900}, timestamp=NOW - timedelta(days=40))  # last month
    engage.track(3, "Purchase", {"amount": "5000"}, timestamp=NOW)  # a string is not a number
    db.session.commit()
    filters = {
        "event": "Purchase",
        "window": {"calendar": "this_month"},
        "sum": {"property": "amount", "op": "gt", "value": 1000},
    }
    assert engage.count(filters, now=NOW) == 1


def test_kyc_pending_after_3_days_joins_when_time_passes(app):
    engage.track("slow", "Signed up", timestamp=NOW)
    engage.track("done", "Signed up", timestamp=NOW)
    engage.track("done", "Completed KYC", timestamp=NOW + timedelta(hours=1))
    db.session.commit()
    filters = {
        "all": [
            {"event": "Signed up", "window": {"older_than_days": 3}},
            {"event": "Completed KYC", "count": {"op": "eq", "value": 0}},
        ]
    }
    segment = engage.create_segment("KYC pending", filters)
    assert segment.is_time_based
    engage.recompute(segment, now=NOW + timedelta(days=1))
    assert ids(segment) == []
    engage.recompute(segment, now=NOW + timedelta(days=4))
    assert ids(segment) == ["slow"]


def test_card_used_more_than_5_times_this_month(app):
    for i in range(6):
        engage.track("heavy", "Card used", timestamp=NOW - timedelta(hours=i))
    for i in range(5):
        engage.track("light", "Card used", timestamp=NOW - timedelta(hours=i))
    db.session.commit()
    filters = {
        "event": "Card used",
        "window": {"calendar": "this_month"},
        "count": {"op": "gt", "value": 5},
    }
    assert engage.count(filters, now=NOW) == 1


def test_active_in_last_7_days_leaves_when_time_passes_via_run_due(app):
    engage.track("a", "Logged in", timestamp=NOW)
    db.session.commit()
    segment = engage.create_segment("Active", {"event": "Logged in", "window": {"last_days": 7}})
    engage.recompute(segment, now=NOW)
    assert ids(segment) == ["a"]
    engage.run_due(NOW + timedelta(days=8))
    assert ids(segment) == []


def test_signals_fire_once_per_real_change(app):
    joined, left = [], []
    on_join = lambda sender, segment, customer: joined.append((segment.slug, customer.external_id))  # noqa: E731
    on_leave = lambda sender, segment, customer: left.append((segment.slug, customer.external_id))  # noqa: E731
    signals.segment_joined.connect(on_join)
    signals.segment_left.connect(on_leave)
    try:
        segment = engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
        engage.identify(1, plan="pro")
        db.session.commit()
        engage.identify(1, plan="pro", city="X")  # no membership change
        db.session.commit()
        engage.recompute(segment)
        engage.identify(1, plan="free")
        db.session.commit()
    finally:
        signals.segment_joined.disconnect(on_join)
        signals.segment_left.disconnect(on_leave)
    assert ("pro", "1") in joined and joined.count(("pro", "1")) == 1
    assert left == [("pro", "1")]


def test_segment_refs_and_cycles(app):
    pro = engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
    lagos = engage.create_segment(
        "Lagos pro",
        {
            "all": [
                {"segment": "pro", "op": "in"},
                {"attribute": "city", "op": "eq", "value": "Lagos"},
            ]
        },
    )
    engage.identify(1, plan="pro", city="Lagos")
    engage.identify(2, plan="free", city="Lagos")
    db.session.commit()
    assert ids(lagos) == ["1"]
    with pytest.raises(InvalidFilter, match="cycle"):
        engage.update_segment(pro, filters={"segment": "lagos-pro"})
    with pytest.raises(InvalidFilter, match=r"filters.segment: no segment 'missing'"):
        engage.create_segment("Bad", {"segment": "missing"})
    with pytest.raises(StateError):
        engage.delete_segment(pro)


@pytest.mark.parametrize(
    ("filters", "path"),
    [
        (
            {
                "all": [
                    {"attribute": "a", "op": "eq", "value": 1},
                    {"attribute": "b", "op": "equals", "value": 1},
                ]
            },
            "filters.all[1].op: unknown operator 'equals'",
        ),
        ({"event": "E", "window": {"last_weeks": 2}}, "filters.window.last_weeks"),
        ({"any": [{"not": {"channel": "fax"}}]}, "filters.any[0].not.channel"),
        ({"attribute": "a", "op": "in", "value": []}, "filters.value"),
        ({"event": "E", "sum": {"op": "gt", "value": 1}}, "filters.sum.property"),
        ([], "filters: expected an object"),
    ],
)
def test_invalid_filters_name_the_path(app, filters, path):
    with pytest.raises(InvalidFilter) as info:
        engage.count(filters)
    assert str(info.value).startswith(path)


def test_typed_comparisons_and_missing_values(app):
    engage.identify(1, age=31, vip=True, signed="2026-01-05T10:00:00Z", plan="pro")
    engage.identify(2, age="31", vip="yes", plan="free")
    engage.identify(3)
    db.session.commit()
    assert engage.count({"attribute": "age", "op": "eq", "value": 31}) == 1
    assert engage.count({"attribute": "age", "op": "gt", "value": 30}) == 1
    assert engage.count({"attribute": "vip", "op": "is_true"}) == 1
    assert engage.count({"attribute": "plan", "op": "ne", "value": "pro"}) == 2  # includes missing
    assert engage.count({"attribute": "plan", "op": "not_exists"}) == 1
    assert engage.count({"attribute": "signed", "op": "gt", "value": "2026-01-01"}) == 1
    assert (
        engage.count(
            {"attribute": "signed", "op": "within_last", "value": 30}, now=NOW - timedelta(days=60)
        )
        == 1
    )
    assert engage.count({"attribute": "plan", "op": "starts_with", "value": "pr"}) == 1
    assert engage.count({"attribute": "plan", "op": "in", "value": ["pro", "free"]}) == 2


def test_segment_history_percent_per_day(app):
    for i in range(4):
        engage.track(i, "Signed up", timestamp=datetime.now(UTC) - timedelta(days=10))
    engage.track(0, "Completed KYC", timestamp=datetime.now(UTC) - timedelta(days=9))
    db.session.commit()
    segment = engage.create_segment(
        "KYC pending",
        {
            "all": [
                {"event": "Signed up", "window": {"older_than_days": 3}},
                {"event": "Completed KYC", "count": {"op": "eq", "value": 0}},
            ]
        },
    )
    history = engage.segment_history(segment, days=30)
    assert len(history) == 30
    assert (
        history[-1]["members"] == 3 and history[-1]["total"] == 4 and history[-1]["percent"] == 75.0
    )
    assert history[0]["members"] == 0 and history[0]["total"] == 0
    assert [p["date"] for p in history] == sorted(p["date"] for p in history)


def test_filters_are_stored_as_given_and_slug_references_follow_a_rename(app):
    filters = {
        "all": [
            {"event": "Purchase", "window": {"since": "2026-01-01"}},
            {"attribute": "signed", "op": "within_last", "value": 30},
        ]
    }
    engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
    buyers = engage.create_segment("Buyers", filters)
    assert buyers.filters == filters  # no defaults added, dates and durations untouched
    lagos = engage.create_segment(
        "Pro in Lagos",
        {"all": [{"segment": "pro"}, {"attribute": "city", "op": "eq", "value": "Lagos"}]},
    )
    engage.identify(1, plan="pro", city="Lagos")
    db.session.commit()
    engage.update_segment("pro", name="Premium")
    assert engage.get_segment("premium") is not None
    db.session.expire_all()
    renamed = engage.get_segment(lagos.id)
    assert renamed.filters["all"][0] == {"segment": "premium"}
    engage.recompute(renamed)
    assert ids(renamed) == ["1"]


def test_json_schema_is_served_and_agrees_with_validation(app, client):
    import jsonschema

    schema = client.get("/engage/api/filter-schema").get_json()
    examples = [
        {
            "all": [
                {"attribute": "plan", "op": "eq", "value": "pro"},
                {"attribute": "city", "op": "eq", "value": "Lagos"},
            ]
        },
        {"event": "Logged in", "window": {"last_days": 30}, "count": {"op": "eq", "value": 0}},
        {
            "event": "Purchase",
            "window": {"calendar": "this_month"},
            "sum": {"property": "amount", "op": "gt", "value": 1000},
        },
        {"not": {"channel": "email", "op": "unsubscribed"}},
        {"segment": "all", "op": "in"},
    ]
    for filters in examples:
        jsonschema.validate(filters, schema)
        engage.count(filters)  # the server accepts what the schema accepts
    bad = {"attribute": "plan", "op": "equals", "value": "pro"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(InvalidFilter):
        engage.count(bad)


def test_one_recompute_writes_each_join_and_leave_once(app):
    for i in range(1, 5):
        engage.identify(i, plan="pro" if i <= 2 else "free")
    db.session.commit()
    segment = engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
    assert ids(segment) == ["1", "2"]
    # behind Engage's back (no evaluation): 2 is no longer pro, 3 is
    for external_id, plan in (("2", "free"), ("3", "pro")):
        db.session.execute(
            update(Customer)
            .where(Customer.external_id == external_id)
            .values(attributes={"plan": plan})
        )
    db.session.commit()
    (outcome,) = engage.recompute(segment)
    assert (outcome.joined, outcome.left) == (1, 1)
    rows = db.session.execute(
        select(Customer.external_id, MembershipChange.kind)
        .join(Customer, Customer.id == MembershipChange.customer_id)
        .where(MembershipChange.computation == outcome.computation)
    ).all()
    assert sorted(tuple(row) for row in rows) == [("2", "left"), ("3", "joined")]
    assert ids(segment) == ["1", "3"]
    assert engage.get_segment("pro").member_count == 2
    (again,) = engage.recompute(segment)
    assert (again.joined, again.left) == (0, 0)
    assert (
        db.session.scalar(
            select(MembershipChange.id).where(MembershipChange.computation == again.computation)
        )
        is None
    )


def test_a_recompute_that_changes_nothing_only_records_that_it_ran(app):
    """No change rows, no computation, no signals, no follow-up work (outbox,
    automation runs, sends): three statements. ``last_computed_at`` still moves (the
    schedule recomputes time-based segments by it) and ``member_count`` stays right."""
    for i in range(1, 4):
        engage.identify(i, plan="pro" if i <= 2 else "free")
    db.session.commit()
    segment = engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
    engage.recompute(segment)  # the first call also makes sure the default segment exists
    changes = select(func.count()).select_from(MembershipChange)
    written = db.session.scalar(changes)
    db.session.commit()
    moved, statements = [], []

    def on_change(sender, segment, customer):
        moved.append((segment.slug, customer.external_id))

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(" ".join(statement.split()))

    later = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
    event.listen(db.engine, "before_cursor_execute", record)
    try:
        with (
            signals.segment_joined.connected_to(on_change),
            signals.segment_left.connected_to(on_change),
        ):
            (outcome,) = engage.recompute(segment, now=later)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert (outcome.joined, outcome.left, outcome.computation, outcome.error) == (0, 0, None, None)
    assert moved == []
    # lock and load the segment with the recorded types, the diff, the statistics
    assert len(statements) == 3, "\n".join(s[:90] for s in statements)
    assert statements[0].startswith("SELECT engage_segments.id")
    assert not any(
        table in statement
        for statement in statements
        for table in ("engage_outbox", "engage_automation", "engage_messages")
    ), statements
    assert db.session.scalar(changes) == written
    fresh = engage.get_segment("pro")
    assert fresh.last_computed_at == later
    assert (fresh.member_count, fresh.last_error) == (2, None)
    assert ids(fresh) == ["1", "2"]
    # a change still recounts the members, starts nothing more than before, and signals
    engage.identify(3, plan="pro")
    db.session.execute(
        update(Customer).where(Customer.external_id == "1").values(attributes={"plan": "free"})
    )
    db.session.commit()  # 3 joins incrementally; 1 leaves only at the recompute
    with signals.segment_left.connected_to(on_change):
        (outcome,) = engage.recompute(segment, now=later + timedelta(minutes=1))
    assert (outcome.joined, outcome.left) == (0, 1) and outcome.computation
    assert moved == [("pro", "1")]
    assert engage.get_segment("pro").member_count == 2


def test_recompute_rebuilds_its_cached_statement_when_what_it_read_changed(app):
    """A recompute keeps its diff statement per segment; a newly recorded attribute
    type (``"5"`` now means the number 5) or an edited referenced segment is seen."""
    scored = engage.create_segment("Scored", {"attribute": "score", "op": "eq", "value": "5"})
    engage.recompute(scored)  # compiled while "score" has no recorded type: text "5"
    engage.identify(1, score=5, plan="team")  # records score as a number
    db.session.commit()
    db.session.execute(delete(Membership))  # behind Engage's back: only a recompute sees it
    db.session.commit()
    (outcome,) = engage.recompute(scored)
    assert (outcome.joined, outcome.left) == (1, 0)
    assert ids(scored) == ["1"]
    # the same types, but the referenced segment's filters changed
    pro = engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
    pro_ref = engage.create_segment("Pro ref", {"segment": "pro", "op": "in"})
    assert engage.recompute(pro_ref)[0].joined == 0
    team = {"attribute": "plan", "op": "eq", "value": "team"}
    db.session.execute(update(Segment).where(Segment.id == pro.id).values(filters=team))
    db.session.commit()
    (outcome,) = engage.recompute(pro_ref)
    assert (outcome.joined, outcome.left) == (1, 0)


def test_recompute_of_a_missing_segment_raises_not_found(app):
    segment = engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
    engage.recompute(segment)
    engage.delete_segment(segment)
    for ref in (segment, segment.id, str(segment.id), 10**15, "pro"):
        with pytest.raises(NotFound):
            engage.recompute(ref)
