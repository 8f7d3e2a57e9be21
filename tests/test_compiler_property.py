"""Property test: the SQL compiler agrees with a small Python reference evaluator.

Hypothesis builds random customers (attributes of mixed JSON types, some missing or
null, memberships of two lists in any status), random events around a fixed ``NOW``
and random filters (attribute operators, events with where/window/count/sum/min/max/
avg, lists named by slug or id, all/any/not nesting), bulk-loads them into
``engage_customers``/``engage_events``/``engage_list_members`` (with their recorded
types in ``engage_definitions``) and checks ``engage.count(filter, now=NOW)``
against :func:`matches`, which follows the semantics documented at the top of
``flask_engage/segments/compiler.py``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert

from flask_engage.models import AttributeDefinition, Customer, Event, ListMember
from flask_engage.segments.schema import OPERATORS
from flask_engage.values import format_datetime, normalize_value, value_type
from tests.hostapp import db, engage

# Hypothesis' failure report imports mypy_extensions, which warns; keep the report readable.
pytestmark = pytest.mark.filterwarnings("ignore:mypy_extensions.TypedDict:DeprecationWarning")

ZONE = "Asia/Kolkata"
# 01:30 on Sunday 1 March in Kolkata: "today", "this_week" and "this_month" all
# start at a local midnight that is a different UTC day.
NOW = datetime(2026, 2, 28, 20, 0, tzinfo=UTC)
MISSING = object()
TEXT_OPS = ("contains", "not_contains", "starts_with", "ends_with")

ATTRIBUTES = ("a", "b", "c")
EVENTS = ("Logged in", "Purchase")
PROPERTIES = ("p", "q")
DATETIMES = [format_datetime(NOW + timedelta(hours=h)) for h in (-24 * 40, -30, -1, 0, 5)]
STRINGS = ["", "a", "b", "ab", "B", "a_b", "1", "10", "2.5", "true"]
LISTS = ("news", "beta")
LIST_STATUSES = ("subscribed", "pending", "unsubscribed")
#: slug -> id of the lists, once :func:`load` has created them.
LIST_IDS: dict[str, int] = {}


@pytest.fixture
def app_config() -> dict:
    return {"ENGAGE_TIMEZONE": ZONE}


# -- the reference evaluator --------------------------------------------------------


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def coerce(value: Any, recorded: str | None) -> Any:
    """A filter value read as the attribute's recorded type ("31" means 31 for numbers).

    Text operators (contains, starts_with...) take their text as given.
    """
    if isinstance(value, list):
        return [coerce(v, recorded) for v in value]
    if recorded == "number" and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if recorded == "boolean" and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if recorded in ("string", "datetime") and is_number(value):
        return str(value)
    return value


def ordered(stored: Any, op: str, value: Any) -> bool:
    """Typed comparison: numbers with numbers, text (and datetimes) with text."""
    if is_number(value):
        if not is_number(stored):
            return False
        left, right = float(stored), float(value)
    else:
        if not isinstance(stored, str):
            return False
        left, right = stored, str(value)
    return {
        "eq": left == right,
        "gt": left > right,
        "gte": left >= right,
        "lt": left < right,
        "lte": left <= right,
    }[op]


def compare(stored: Any, op: str, value: Any) -> bool:
    """One attribute/property condition; ``stored`` is MISSING, None or a JSON value."""
    negations = {"ne": "eq", "not_in": "in", "not_contains": "contains", "not_exists": "exists"}
    if op in negations:
        return not compare(stored, negations[op], value)
    if op == "exists":
        return stored is not MISSING and stored is not None
    if op in ("is_true", "is_false"):
        return isinstance(stored, bool) and stored is (op == "is_true")
    if op == "eq" and isinstance(value, bool):
        return isinstance(stored, bool) and stored is value
    if op in ("eq", "gt", "gte", "lt", "lte"):
        return ordered(stored, op, value)
    if op == "between":
        return ordered(stored, "gte", value[0]) and ordered(stored, "lte", value[1])
    if op == "in":
        return any(compare(stored, "eq", item) for item in value)
    if op == "contains":
        return (isinstance(stored, str) and value in stored) or (
            isinstance(stored, list) and value in stored
        )
    if op == "starts_with":
        return isinstance(stored, str) and stored.startswith(value)
    if op == "ends_with":
        return isinstance(stored, str) and stored.endswith(value)
    cutoff = format_datetime(NOW - timedelta(**value))
    if op == "within_last":
        return isinstance(stored, str) and cutoff <= stored <= format_datetime(NOW)
    assert op == "more_than_ago"
    return isinstance(stored, str) and stored < cutoff


def calendar(name: str) -> tuple[datetime, datetime]:
    zone = ZoneInfo(ZONE)
    day = NOW.astimezone(zone).date()
    if name == "today":
        start, end = day, day + timedelta(days=1)
    elif name == "this_week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    elif name == "this_month":
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    else:
        end = day.replace(day=1)
        start = (end - timedelta(days=1)).replace(day=1)
    return (
        datetime(start.year, start.month, start.day, tzinfo=zone),
        datetime(end.year, end.month, end.day, tzinfo=zone),
    )


def in_window(at: datetime, window: dict[str, Any] | None) -> bool:
    if not window:
        return True
    ((kind, value),) = window.items()
    if kind == "last_days":
        return at >= NOW - timedelta(days=value)
    if kind == "last_hours":
        return at >= NOW - timedelta(hours=value)
    if kind == "older_than_days":
        return at < NOW - timedelta(days=value)
    if kind == "since":
        return at >= datetime.fromisoformat(value)
    if kind == "until":
        return at < datetime.fromisoformat(value)
    if kind == "between":
        return datetime.fromisoformat(value[0]) <= at < datetime.fromisoformat(value[1])
    start, end = calendar(value)
    return start <= at < end


def holds(amount: float, op: str, value: Any) -> bool:
    if op == "between":
        return value[0] <= amount <= value[1]
    return {
        "eq": amount == value,
        "ne": amount != value,
        "gt": amount > value,
        "gte": amount >= value,
        "lt": amount < value,
        "lte": amount <= value,
    }[op]


def matches(node: dict[str, Any], customer: dict[str, Any], types: dict[str, str]) -> bool:
    """Whether one customer (``email``, ``attributes``, ``events``) matches a filter."""
    if "all" in node:
        return all(matches(child, customer, types) for child in node["all"])
    if "any" in node:
        return any(matches(child, customer, types) for child in node["any"])
    if "not" in node:
        return not matches(node["not"], customer, types)
    if "list" in node:
        slugs = {ref: slug for slug, id_ in LIST_IDS.items() for ref in (slug, id_, str(id_))}
        inside = customer["lists"].get(slugs[node["list"]]) == "subscribed"
        return inside if node.get("op", "in") == "in" else not inside
    if "attribute" in node:
        name = node["attribute"]
        if name == "email":
            stored = customer["email"] if customer["email"] is not None else MISSING
            recorded: str | None = "string"
        else:
            stored = customer["attributes"].get(name, MISSING)
            recorded = types.get(name)
        value = node.get("value")
        if node["op"] not in TEXT_OPS:
            value = coerce(value, recorded)
        return compare(stored, node["op"], value)
    chosen = [
        event
        for event in customer["events"]
        if event["name"] == node["event"]
        and in_window(event["occurred_at"], node.get("window"))
        and all(
            compare(event["properties"].get(w["property"], MISSING), w["op"], w.get("value"))
            for w in node.get("where", [])
        )
    ]
    measure = next((m for m in ("sum", "avg", "min", "max") if m in node), "count")
    spec = node.get(measure, {"op": "gte", "value": 1})
    if measure == "count":
        return holds(len(chosen), spec["op"], spec["value"])
    numbers = [e["properties"].get(spec["property"]) for e in chosen]
    numbers = [float(n) for n in numbers if is_number(n)]
    if measure in ("sum", "avg") and not math.isfinite(sum(numbers)):
        return False  # a total that overflows a double matches no threshold
    if measure == "sum":
        return holds(sum(numbers), spec["op"], spec["value"])
    if not numbers:
        return False
    amount = {"min": min, "max": max, "avg": lambda xs: sum(xs) / len(xs)}[measure](numbers)
    return holds(amount, spec["op"], spec["value"])


# -- strategies ----------------------------------------------------------------------

halves = st.integers(-6, 6).map(lambda n: n / 2)
numbers = st.one_of(st.integers(-3, 3), halves)
stored_values = st.one_of(
    numbers,
    st.sampled_from(STRINGS),
    st.booleans(),
    st.sampled_from(DATETIMES),
    st.none(),
    st.lists(st.sampled_from(["a", "b"]), max_size=2),
)
scalars = st.one_of(numbers, st.sampled_from(STRINGS), st.booleans(), st.sampled_from(DATETIMES))
texts = st.sampled_from(["a", "b", "B", "_", "ab", "1", "2.5"])
durations = st.one_of(
    st.builds(lambda d: {"days": d}, st.integers(0, 45)),
    st.builds(lambda h: {"hours": h}, st.integers(0, 48)),
)


@st.composite
def comparison(draw: st.DrawFn, subject: str, names: tuple[str, ...]) -> dict[str, Any]:
    op = draw(st.sampled_from(OPERATORS))
    node: dict[str, Any] = {subject: draw(st.sampled_from(names)), "op": op}
    if op in ("exists", "not_exists", "is_true", "is_false"):
        return node
    if op in ("in", "not_in"):
        node["value"] = draw(st.lists(scalars, min_size=1, max_size=3))
    elif op == "between":
        pair = draw(
            st.one_of(
                st.lists(numbers, min_size=2, max_size=2),
                st.lists(st.sampled_from(DATETIMES), min_size=2, max_size=2),
            )
        )
        node["value"] = sorted(pair) if draw(st.booleans()) else pair
    elif op in ("contains", "not_contains", "starts_with", "ends_with"):
        node["value"] = draw(texts)
    elif op in ("within_last", "more_than_ago"):
        node["value"] = draw(durations)
    elif op in ("gt", "gte", "lt", "lte"):
        node["value"] = draw(
            st.one_of(numbers, st.sampled_from(STRINGS), st.sampled_from(DATETIMES))
        )
    else:
        node["value"] = draw(scalars)
    return node


def instant(hours: int) -> str:
    return (NOW + timedelta(hours=hours)).isoformat()


windows = st.one_of(
    st.builds(lambda n: {"last_days": n}, st.sampled_from([0, 1, 7, 30])),
    st.builds(lambda n: {"last_hours": n}, st.sampled_from([1, 2, 24])),
    st.builds(lambda n: {"older_than_days": n}, st.sampled_from([0, 1, 3, 30])),
    st.builds(lambda h: {"since": instant(h)}, st.integers(-24 * 40, 24)),
    st.builds(lambda h: {"until": instant(h)}, st.integers(-24 * 40, 24)),
    st.builds(
        lambda a, b: {"between": [instant(a), instant(a + b)]},
        st.integers(-24 * 40, 0),
        st.integers(0, 24 * 20),
    ),
    st.builds(
        lambda c: {"calendar": c},
        st.sampled_from(["today", "this_week", "this_month", "last_month"]),
    ),
)
thresholds = st.one_of(
    st.builds(
        lambda op, v: {"op": op, "value": v},
        st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte"]),
        st.integers(0, 3),
    ),
    st.builds(
        lambda a, b: {"op": "between", "value": [a, a + b]}, st.integers(0, 2), st.integers(0, 2)
    ),
)


@st.composite
def event_condition(draw: st.DrawFn) -> dict[str, Any]:
    node: dict[str, Any] = {"event": draw(st.sampled_from(EVENTS))}
    where = draw(st.lists(comparison("property", PROPERTIES), max_size=2))
    if where:
        node["where"] = where
    if draw(st.booleans()):
        node["window"] = draw(windows)
    measure = draw(st.sampled_from(["default", "count", "sum", "avg", "min", "max"]))
    if measure == "count":
        node["count"] = draw(thresholds)
    elif measure != "default":
        spec = draw(
            st.one_of(
                thresholds,
                st.builds(
                    lambda op, v: {"op": op, "value": v},
                    st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte"]),
                    halves,
                ),
            )
        )
        node[measure] = {"property": "p", **spec}
    return node


#: A list condition; its reference is resolved by :func:`resolve` once the lists exist.
list_condition = st.builds(
    lambda slug, form, op: {"list": f"<{form}:{slug}>", **({} if op is None else {"op": op})},
    st.sampled_from(LISTS),
    st.sampled_from(["slug", "id", "id-text"]),
    st.sampled_from(["in", "not_in", None]),
)


def resolve(node: Any) -> Any:
    """The filter with its list references as a user writes them (slug, id, id as text)."""
    if isinstance(node, list):
        return [resolve(child) for child in node]
    if not isinstance(node, dict):
        return node
    found = {key: resolve(value) for key, value in node.items()}
    ref = found.get("list")
    if isinstance(ref, str) and ref.startswith("<"):
        form, slug = ref[1:-1].split(":")
        found["list"] = {"slug": slug, "id": LIST_IDS[slug], "id-text": str(LIST_IDS[slug])}[form]
    return found


def filters(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    leaf = st.one_of(
        comparison("attribute", (*ATTRIBUTES, "email")), event_condition(), list_condition
    )
    if depth == 0:
        return leaf
    inner = filters(depth - 1)
    return st.one_of(
        leaf,
        st.builds(lambda xs: {"all": xs}, st.lists(inner, max_size=3)),
        st.builds(lambda xs: {"any": xs}, st.lists(inner, max_size=3)),
        st.builds(lambda x: {"not": x}, inner),
    )


event_rows = st.fixed_dictionaries(
    {
        "name": st.sampled_from(EVENTS),
        "properties": st.dictionaries(
            st.sampled_from(PROPERTIES),
            st.one_of(
                numbers,
                st.sampled_from(["a", "ab", "1"]),
                st.booleans(),
                st.none(),
                st.just(1e308),  # two of them overflow a sum (or an average's sum)
            ),
        ),
        "hours": st.integers(-24 * 70, 24 * 3),
        "half": st.booleans(),
    }
)
customer_rows = st.fixed_dictionaries(
    {
        "email": st.one_of(st.none(), st.sampled_from(["a@x.io", "b@x.io", "ab@y.io"])),
        "attributes": st.dictionaries(st.sampled_from(ATTRIBUTES), stored_values),
        "events": st.lists(event_rows, max_size=5),
        "lists": st.dictionaries(st.sampled_from(LISTS), st.sampled_from(LIST_STATUSES)),
    }
)


# -- loading and the test -----------------------------------------------------------


def load(customers: list[dict[str, Any]]) -> dict[str, str]:
    """Replace all customers, events and list members with these; return the recorded
    attribute types."""
    for slug in LISTS:
        found = engage.get_list(slug) or engage.create_list(slug.title())
        LIST_IDS[slug] = found.id
    for table in (ListMember, Event, Customer, AttributeDefinition):
        db.session.execute(delete(table))
    types: dict[str, str] = {}
    for position, customer in enumerate(customers):
        customer["attributes"] = {
            k: normalize_value(v, k) for k, v in customer["attributes"].items()
        }
        for name, value in customer["attributes"].items():
            if value is not None:
                types.setdefault(name, value_type(value))
        for event in customer["events"]:
            event["occurred_at"] = NOW + timedelta(hours=event["hours"], minutes=30 * event["half"])
            event["properties"] = {k: normalize_value(v, k) for k, v in event["properties"].items()}
        row = {
            "external_id": str(position),
            "email": customer["email"],
            "attributes": customer["attributes"],
            "created_at": NOW - timedelta(days=90),
            "updated_at": NOW,
        }
        customer_id = db.session.execute(
            insert(Customer).returning(Customer.id), [row]
        ).scalar_one()
        if customer["lists"]:
            db.session.execute(
                insert(ListMember),
                [
                    {"list_id": LIST_IDS[slug], "customer_id": customer_id, "status": status}
                    for slug, status in customer["lists"].items()
                ],
            )
        if customer["events"]:
            db.session.execute(
                insert(Event),
                [
                    {
                        "customer_id": customer_id,
                        "name": e["name"],
                        "properties": e["properties"],
                        "occurred_at": e["occurred_at"],
                    }
                    for e in customer["events"]
                ],
            )
    if types:
        db.session.execute(
            insert(AttributeDefinition),
            [
                {
                    "kind": "attribute",
                    "scope": "",
                    "name": name,
                    "type": kind,
                    "first_seen": NOW,
                    "last_seen": NOW,
                }
                for name, kind in types.items()
            ],
        )
    db.session.commit()
    return types


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(customers=st.lists(customer_rows, max_size=8), node=filters(3))
def test_count_agrees_with_reference_evaluator(app, customers, node):
    types = load(customers)
    node = resolve(node)
    expected = sum(matches(node, customer, types) for customer in customers)
    assert engage.count(node, now=NOW) == expected


@st.composite
def long_list_filters(draw: st.DrawFn) -> dict[str, Any]:
    """One ``in``/``not_in`` list as long as ``ENGAGE_MAX_LIST_VALUES`` allows (padded
    with values that match nothing, the real ones anywhere), beside small filters."""
    subject, names = draw(
        st.sampled_from([("attribute", (*ATTRIBUTES, "email")), ("property", PROPERTIES)])
    )
    values = draw(st.lists(scalars, min_size=1, max_size=3))
    padding = [f"pad-{i}" for i in range(draw(st.sampled_from([400, 995])))]
    cut = draw(st.integers(0, len(padding)))
    listed = {
        subject: draw(st.sampled_from(names)),
        "op": draw(st.sampled_from(["in", "not_in"])),
        "value": padding[:cut] + values + padding[cut:],
    }
    if subject == "property":
        listed = {"event": draw(st.sampled_from(EVENTS)), "where": [listed]}
    other = draw(filters(1))
    return draw(
        st.sampled_from(
            [listed, {"not": listed}, {"all": [listed, other]}, {"any": [other, listed]}]
        )
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(customers=st.lists(customer_rows, max_size=8), node=long_list_filters())
def test_long_in_lists_agree_with_reference_evaluator(app, customers, node):
    types = load(customers)
    node = resolve(node)
    expected = sum(matches(node, customer, types) for customer in customers)
    assert engage.count(node, now=NOW) == expected
