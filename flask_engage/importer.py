"""CSV import of customers (``flask engage import customers.csv``).

Each row becomes a customer: the id column is the host's customer id, the email
column the address, every other non-empty cell an attribute, typed from its text
(``42`` and ``3.5`` are numbers, ``true``/``false`` booleans, ISO 8601 dates
datetimes). A bad row is reported with its line number and field and skipped;
the other rows are written in chunks, each chunk in one transaction together with
its segment re-evaluation (outbox rows).

With a list (``--list SLUG``), every imported customer is also subscribed to it, in
the same transaction as its row; customers who unsubscribed from the list stay
unsubscribed.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from .changes import Changes, note
from .db import operation_session
from .errors import ValidationError
from .lists.members import subscribe
from .lists.service import open_list
from .outbox import add_evaluations
from .tracking import CustomerPatch, check_customer_id, check_email, write_customers
from .values import normalize_mapping

CHUNK = 500
_INT = re.compile(r"^[+-]?\d{1,15}$")
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")
_BOOLEANS = {"true": True, "false": False}


@dataclass
class RowError:
    """Why one CSV line was skipped."""

    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class ImportResult:
    """The outcome of an import: rows written (or that would be, on a dry run) and errors."""

    imported: int = 0
    errors: list[RowError] = field(default_factory=list)
    dry_run: bool = False


def typed(text: str) -> Any:
    """A cell's value: number, boolean or text (dates are typed by ``normalize_value``)."""
    value = text.strip()
    if _INT.match(value):
        return int(value)
    if _FLOAT.match(value):
        return float(value)
    return _BOOLEANS.get(value.lower(), value)


def parse_row(
    row: dict[str, str | None], id_column: str, email_column: str | None
) -> tuple[str, CustomerPatch]:
    """One CSV row -> (customer id, patch); raises ValidationError naming the column."""
    if None in row:
        raise ValidationError("row has more cells than the header", field="row")
    raw_id = (row.get(id_column) or "").strip()
    external_id = check_customer_id(raw_id, id_column)
    email = None
    if email_column is not None and (row.get(email_column) or "").strip():
        email = check_email(row[email_column], email_column)
    values = {
        name: typed(text)
        for name, text in row.items()
        if name not in (id_column, email_column) and text is not None and text.strip()
    }
    try:
        attributes = normalize_mapping(values, "attributes")
    except ValidationError as exc:
        column = (exc.field or "").removeprefix("attributes.")
        message = str(exc).replace(f"attributes.{column}", column)
        raise ValidationError(message, field=column) from None
    return external_id, CustomerPatch(email=email, attributes=attributes)


def read_rows(
    stream: IO[str], id_column: str, email_column: str | None, errors: list[RowError]
) -> Iterator[tuple[int, str, CustomerPatch]]:
    """Valid rows as ``(line, id, patch)``; bad rows go to ``errors``."""
    reader = csv.DictReader(stream)
    header = reader.fieldnames or []
    if id_column not in header:
        raise ValidationError(f"{id_column}: no such column in the CSV header", field=id_column)
    if email_column is not None and email_column not in header:
        email_column = None
    for row in reader:
        line = reader.line_num
        try:
            external_id, patch = parse_row(row, id_column, email_column)
        except ValidationError as exc:
            errors.append(RowError(line, exc.field or "row", str(exc)))
            continue
        yield line, external_id, patch


def _chunked(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def import_customers(
    stream: IO[str],
    *,
    id_column: str = "id",
    email_column: str | None = "email",
    dry_run: bool = False,
    chunk_size: int = CHUNK,
    progress: Callable[[int], None] | None = None,
    list_ref: int | str | None = None,
) -> ImportResult:
    """Import customers from CSV text; ``dry_run`` validates and writes nothing.

    A customer id seen twice: the later row's values win (attributes merge).
    ``list_ref`` (a list's id or slug): subscribe every imported customer to it.
    """
    result = ImportResult(dry_run=dry_run)
    list_id = None
    if list_ref is not None:
        with operation_session() as session:
            list_id = open_list(session, list_ref).id
    reported = 0
    for chunk in _chunked(read_rows(stream, id_column, email_column, result.errors), chunk_size):
        patches: dict[str, CustomerPatch] = {}
        for _, external_id, patch in chunk:
            if external_id in patches:
                patches[external_id].merge(patch)
            else:
                patches[external_id] = patch
        if not dry_run:
            with operation_session() as session:
                ids = write_customers(session.connection(), patches)
                changed = dict(ids.changed)
                if list_id is not None:
                    subscribe(session, list_id, ids.values(), resubscribe=False, evaluate=False)
                    note(changed, ids.values(), Changes(lists=True))
                add_evaluations(session, changed)
        result.imported += len(chunk)
        if progress is not None:
            progress(len(chunk) + len(result.errors) - reported)
            reported = len(result.errors)
    return result
