"""Lists: the lists people join by hand, their members and subscribers over time;
create and edit a list, add and remove customers (also from a customer's page),
import a CSV file into a list, archive or delete a list."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

from flask import flash, redirect, request, url_for
from flask_admin import expose

from ..customers import find_customer
from ..db import host_session
from ..errors import EngageError, ValidationError
from ..importer import import_customers
from ..lists.members import change_counts, history, member_page, status_counts
from ..lists.service import all_lists, subscriber_counts
from ..models import Customer, CustomerList, ListMemberStatus, utcnow
from .base import SMALL_ID, EngageView, engage, found_or_404
from .charts import line_chart
from .forms import ListForm
from .paging import MAX_SMALL_ID, id_arg
from .words import explain, who

#: Days of history on a list's page, and of recent joins and leaves on the index.
DAYS = 30
#: Skipped rows of an import named one by one (the rest are counted).
IMPORT_ERRORS = 5
#: What the member filter offers: ``status`` query values and their words.
STATUSES = {
    "": "everyone",
    ListMemberStatus.SUBSCRIBED.value: "subscribed",
    ListMemberStatus.PENDING.value: "waiting to confirm",
    ListMemberStatus.UNSUBSCRIBED.value: "unsubscribed",
}


class CsvUpload(io.TextIOWrapper):
    """An uploaded CSV file read as UTF-8 text, line by line; a line with a NUL character
    (which no database stores) stops the import there."""

    def __next__(self) -> str:  # type: ignore[override]  # typeshed: _IOBase yields bytes
        line = super().__next__()
        if "\x00" in line:
            raise ValidationError(
                "file: the file contains a NUL character, so the import stopped there;"
                " rows before it were imported",
                field="file",
            )
        return line


class ListsView(EngageView):
    """Lists: index with counts, a list's members and history, create, edit, membership."""

    @expose("/")
    def index(self) -> Any:
        session = host_session()
        lists = all_lists(session, archived=True)
        ids = [found.id for found in lists]
        return self.render(
            "engage_admin/lists.html",
            lists=lists,
            subscribers=subscriber_counts(session, ids),
            changes=change_counts(session, ids, utcnow() - timedelta(days=DAYS)),
            days=DAYS,
        )

    # -- create and edit ---------------------------------------------------------------------
    def _form_page(
        self, form: ListForm, found: CustomerList | None, status: int = 200, error: Any = None
    ) -> Any:
        return self.render(
            "engage_admin/list_form.html",
            form=form,
            found=found,
            error=explain(error) if error else None,
            error_field=getattr(error, "field", None),
        ), status

    @expose("/new", methods=("GET", "POST"))
    def new(self) -> Any:
        if request.method == "GET":
            return self._form_page(ListForm(), None)
        form = ListForm(request.form)
        try:
            form.check()
            created = engage().create_list(**form.fields())
        except EngageError as exc:
            host_session().rollback()
            flash(explain(exc), "error")
            return self._form_page(form, None, 400, exc)
        flash(f"List {created.name!r} created.", "success")
        return self.back("details", list_id=created.id)

    @expose(f"/<{SMALL_ID}:list_id>/edit", methods=("GET", "POST"))
    def edit(self, list_id: int) -> Any:
        found = found_or_404(CustomerList, list_id)
        if request.method == "GET":
            return self._form_page(ListForm.of(found), found)
        form = ListForm(request.form)
        try:
            form.check()
            saved = engage().update_list(found.id, **form.fields())
        except EngageError as exc:
            host_session().rollback()
            flash(explain(exc), "error")
            return self._form_page(form, found, 400, exc)
        flash(f"List {saved.name!r} saved.", "success")
        return self.back("details", list_id=saved.id)

    # -- a list ------------------------------------------------------------------------------
    @expose(f"/<{SMALL_ID}:list_id>")
    def details(self, list_id: int) -> Any:
        session = host_session()
        found = found_or_404(CustomerList, list_id)
        q = request.args.get("q", "").strip()[:200]
        wanted = request.args.get("status", "")
        if wanted not in STATUSES:
            raise ValidationError(
                f"status: expected one of {', '.join(s for s in STATUSES if s)}", field="status"
            )
        page = member_page(
            session, found, search=q or None, status=wanted or None, after=id_arg("after")
        )
        points = history(session, found, DAYS, utcnow())
        values = [p.subscribers for p in points]
        chart = line_chart(
            [p.date.isoformat() for p in points],
            values,
            unit="",
            top=max(max(values, default=0), 1),
        )
        joined, left = change_counts(session, [found.id], utcnow() - timedelta(days=DAYS)).get(
            found.id, (0, 0)
        )
        snippet = engage().list_form(found.id) if found.public else None
        return self.render(
            "engage_admin/list.html",
            found=found,
            counts=status_counts(session, found),
            members=page,
            q=q,
            wanted=wanted,
            statuses=STATUSES,
            chart=chart,
            joined=joined,
            left=left,
            days=DAYS,
            snippet=snippet,
        )

    # -- membership --------------------------------------------------------------------------
    def _back_to(self, found: CustomerList, customer: Customer | None = None) -> Any:
        """The page a membership change came from: the customer's, or the list's."""
        if request.form.get("back") == "customer" and customer is not None:
            return redirect(url_for("engage_customers.details", customer_id=customer.id))
        return self.back("details", list_id=found.id)

    def _posted_list(self) -> CustomerList:
        """The list a membership form names (its ``list_id`` field)."""
        raw = request.form.get("list_id", "")
        if not raw.isdigit() or len(raw) > 10 or int(raw) > MAX_SMALL_ID:
            raise ValidationError("list_id: choose a list", field="list_id")
        return found_or_404(CustomerList, int(raw))

    @expose("/add", methods=("POST",))
    def add(self) -> Any:
        """Subscribe a customer (their email, name or id) to a list."""
        found = self._posted_list()
        wanted = request.form.get("customer", "").strip()[:200]
        session = host_session()
        customer = find_customer(session, wanted) if wanted else None
        try:
            if customer is None:
                raise ValidationError(
                    f"customer: no customer with the email, name or id {wanted!r}"
                    if wanted
                    else "customer: enter the email, name or id of a customer",
                    field="customer",
                )
            added = engage().add_to_list(found.id, customer.external_id)
            session.commit()
        except EngageError as exc:
            session.rollback()
            flash(explain(exc), "error")
            return self._back_to(found, customer)
        if added:
            flash(f"{who(customer)} is now subscribed to {found.name}.", "success")
        else:
            flash(f"{who(customer)} was already subscribed to {found.name}.", "info")
        return self._back_to(found, customer)

    @expose("/remove", methods=("POST",))
    def remove(self) -> Any:
        """Take a customer (the host's id) off a list, after the page's confirmation."""
        found = self._posted_list()
        external_id = request.form.get("customer_id", "")[:255]
        session = host_session()
        customer = None
        try:
            if not external_id:
                raise ValidationError("customer_id: which customer?", field="customer_id")
            customer = engage().get_customer(external_id)
            removed = engage().remove_from_list(found.id, external_id)
            session.commit()
        except EngageError as exc:
            session.rollback()
            flash(explain(exc), "error")
            return self._back_to(found, customer)
        name = who(customer) if customer is not None else external_id
        if removed:
            flash(f"{name} was taken off {found.name}.", "success")
        else:
            flash(f"{name} was not on {found.name}.", "info")
        return self._back_to(found, customer)

    @expose(f"/<{SMALL_ID}:list_id>/import", methods=("POST",))
    def import_csv(self, list_id: int) -> Any:
        """Import customers from an uploaded CSV file and subscribe them to the list
        (``flask engage import --list``): rows are written in chunks as they are read;
        people who unsubscribed from the list stay unsubscribed."""
        found = found_or_404(CustomerList, list_id)
        upload = request.files.get("file")
        id_column = request.form.get("id_column", "").strip()[:200] or "id"
        email_column = request.form.get("email_column", "").strip()[:200] or None
        try:
            if upload is None or not upload.filename:
                raise ValidationError("file: choose a CSV file to import", field="file")
            text = CsvUpload(upload.stream, encoding="utf-8-sig", newline="")
            result = import_customers(
                text, id_column=id_column, email_column=email_column, list_ref=found.id
            )
        except UnicodeDecodeError:
            flash(
                "file: the file is not UTF-8 text; save it as CSV (UTF-8) and import it again"
                " (importing again is safe: nobody is added twice)",
                "error",
            )
            return self.back("details", list_id=found.id)
        except (EngageError, csv.Error) as exc:
            return self.failed(exc, "details", list_id=found.id)
        flash(
            f"Imported {result.imported:,} customer(s) into {found.name} (those who had"
            " unsubscribed from it stay unsubscribed).",
            "success" if not result.errors else "warning",
        )
        for error in result.errors[:IMPORT_ERRORS]:
            flash(f"Skipped {error}", "error")
        if len(result.errors) > IMPORT_ERRORS:
            flash(f"… and {len(result.errors) - IMPORT_ERRORS:,} more row(s) skipped.", "error")
        return self.back("details", list_id=found.id)

    # -- archive and delete ------------------------------------------------------------------
    @expose(f"/<{SMALL_ID}:list_id>/archive", methods=("POST",))
    def archive(self, list_id: int) -> Any:
        """Archive the list (no new subscribers), or bring it back (``archived=0``)."""
        found = found_or_404(CustomerList, list_id)
        archived = request.form.get("archived") != "0"
        try:
            engage().archive_list(found.id, archived=archived)
        except EngageError as exc:
            return self.failed(exc, "details", list_id=found.id)
        state = "archived: it takes no new subscribers" if archived else "open again"
        flash(f"List {found.name!r} is {state}.", "success")
        return self.back("details", list_id=found.id)

    @expose(f"/<{SMALL_ID}:list_id>/delete", methods=("POST",))
    def delete(self, list_id: int) -> Any:
        """Delete the list and its members, after the page's confirmation."""
        found = found_or_404(CustomerList, list_id)
        name = found.name
        try:
            engage().delete_list(found.id)
        except EngageError as exc:
            return self.failed(exc, "details", list_id=list_id)
        flash(f"List {name!r} deleted.", "success")
        return self.back("index")
