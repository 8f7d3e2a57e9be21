"""Fuzz: every generated filter is either refused with ``InvalidFilter`` or counted.

Hypothesis builds well-shaped filters full of hostile values (numbers past 64 bits,
infinities, NaN, windows of a million years, lists past ``ENGAGE_MAX_LIST_VALUES``,
deep and wide groups) and runs them against customers whose data overflows
aggregates. On both databases nothing else may escape: no ``OverflowError``, no
``DataError``, no "Expression tree is too large".
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_engage.errors import InvalidFilter
from flask_engage.segments.schema import CALENDAR, OPERATORS, WINDOW_KINDS
from tests.hostapp import db, engage

pytestmark = pytest.mark.filterwarnings("ignore:mypy_extensions.TypedDict:DeprecationWarning")
FUZZ = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

EDGES = [
    0,
    1,
    -1,
    0.5,
    36_525,
    36_526,
    876_600,
    876_601,
    10**6,
    2**53 + 1,
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
    10**30,
    1e308,
    -1e308,
    5e-324,
    float("inf"),
    float("-inf"),
    float("nan"),
]
numbers = st.one_of(
    st.sampled_from(EDGES),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
texts = st.sampled_from(
    ["", "pro", "Lagos", "2026-01-01", "2026-02-30T00:00:00Z", "0001-01-01", "x" * 10_001, "%_'"]
)
scalars = st.one_of(numbers, texts, st.booleans())
#: Lists whose size sits around ENGAGE_MAX_LIST_VALUES (1000), built without drawing each item.
long_lists = st.builds(
    lambda size, kind: [f"v{i}" if kind else i for i in range(size)],
    st.sampled_from([1, 3, 999, 1000, 1001, 3000]),
    st.booleans(),
)
values = st.one_of(
    scalars,
    st.lists(scalars, min_size=0, max_size=4),
    long_lists,
    st.dictionaries(st.sampled_from(["days", "hours", "minutes", "weeks"]), numbers, max_size=3),
)


@st.composite
def comparison(draw: st.DrawFn, subject: str, names: list[str]) -> dict[str, Any]:
    node = {subject: draw(st.sampled_from(names)), "op": draw(st.sampled_from(OPERATORS))}
    if draw(st.integers(0, 5)):
        node["value"] = draw(values)
    return node


windows = st.one_of(
    st.builds(lambda kind, n: {kind: n}, st.sampled_from(WINDOW_KINDS), numbers),
    st.builds(lambda kind, t: {kind: t}, st.sampled_from(["since", "until"]), texts),
    st.builds(lambda a, b: {"between": [a, b]}, texts, texts),
    st.builds(lambda c: {"calendar": c}, st.sampled_from(CALENDAR)),
)
measures = st.builds(
    lambda kind, op, value: (
        {kind: {"op": op, "value": value, "property": "amount"}}
        if kind != "count"
        else {"count": {"op": op, "value": value}}
    ),
    st.sampled_from(["count", "sum", "avg", "min", "max"]),
    st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte", "between"]),
    st.one_of(numbers, st.lists(numbers, min_size=2, max_size=2)),
)


@st.composite
def event(draw: st.DrawFn) -> dict[str, Any]:
    node: dict[str, Any] = {"event": draw(st.sampled_from(["Purchase", "Logged in"]))}
    where = draw(st.lists(comparison("property", ["amount", "sku"]), max_size=2))
    if where:
        node["where"] = where
    if draw(st.booleans()):
        node["window"] = draw(windows)
    if draw(st.booleans()):
        node.update(draw(measures))
    return node


leaves = st.one_of(
    comparison("attribute", ["plan", "score", "seen", "email", "tags"]),
    event(),
    st.builds(lambda op: {"segment": "all", "op": op}, st.sampled_from(["in", "not_in"])),
    st.builds(
        lambda c, op: {"channel": c, "op": op},
        st.sampled_from(["email", "push", "in_app"]),
        st.sampled_from(["subscribed", "unsubscribed"]),
    ),
)
filters = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.builds(lambda xs: {"all": xs}, st.lists(inner, max_size=4)),
        st.builds(lambda xs: {"any": xs}, st.lists(inner, max_size=4)),
        st.builds(lambda x: {"not": x}, inner),
    ),
    max_leaves=8,
)


def seed() -> None:
    """Customers whose values sit at the edges: sums of them overflow a double."""
    engage.identify("1", plan="pro", score=2**53, seen="2026-01-01T00:00:00Z", tags=["a"])
    engage.identify("2", plan="free", score=-1e308, email="b@example.com")
    engage.identify("3", score=1e308)
    for amount in (1e308, 1e308, -5.5):
        engage.track("1", "Purchase", {"amount": amount, "sku": "x"})
    engage.track("2", "Purchase", {"amount": 1e308})
    engage.track("3", "Logged in")
    db.session.commit()


def test_generated_filters_are_refused_or_counted(app):
    seed()
    outcomes = {"refused": 0, "counted": 0}

    @FUZZ
    @given(tree=filters)
    def run(tree: dict[str, Any]) -> None:
        try:
            assert engage.count(tree) in range(4)
            outcomes["counted"] += 1
        except InvalidFilter:
            outcomes["refused"] += 1
        finally:
            db.session.rollback()

    run()
    assert outcomes["refused"] and outcomes["counted"]  # the fuzz reached both outcomes


@FUZZ
@given(tree=filters)
def test_accepted_filters_save_and_evaluate(app, tree):
    """What ``count`` accepts can be saved as a segment, and is kept up to date."""
    try:
        engage.count(tree)
    except InvalidFilter:
        return
    segment = engage.create_segment("Fuzzed", tree)
    engage.track("9", "Purchase", {"amount": 1e308})
    db.session.commit()
    engage.run_due()
    engage.delete_segment(segment)
