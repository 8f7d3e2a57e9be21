"""Lists in the admin (issue 18): the index with counts, creating and editing a list
(errors flashed naming the field, never a 500), a list's members and chart, adding and
removing customers from the list's page and from the customer's page."""

from __future__ import annotations

import io
import re
from html import unescape

import pytest
from sqlalchemy import select

from flask_engage.models import Broadcast, CustomerList
from tests.conftest import ADMIN_TOKEN as TOKEN
from tests.hostapp import db, engage

ADMIN = "/engage/admin"
LISTS = f"{ADMIN}/lists"



@pytest.fixture
def people(app):
    engage.identify("c-1", email="ada@example.com", first_name="Ada", last_name="Obi")
    engage.identify("c-2", email="bola@example.com", name="Bola Ade")
    engage.identify("c-3", email="chidi@example.com")
    db.session.commit()


def rows(page: str, table: str) -> str:
    return page.split(f'id="{table}"')[1].split("</table>")[0]


def flashes(page: str) -> list[str]:
    return [
        unescape(m) for m in re.findall(r'class="alert alert-\w+ engage-flash"[^>]*>([^<]*)<', page)
    ]


def list_named(name: str) -> CustomerList | None:
    db.session.expire_all()
    return next((found for found in engage.lists(archived=True) if found.name == name), None)


def test_lists_are_closed_to_anonymous_visitors_by_default(app, people, client):
    newsletter = engage.create_list("Newsletter")
    app.testing = False
    assert app.config["ENGAGE_ADMIN_ACCESS"] is None
    for url in (f"{LISTS}/", f"{LISTS}/new", f"{LISTS}/{newsletter.id}"):
        assert client.get(url).status_code == 403, url
    with client.session_transaction() as session:
        session["_engage_admin_csrf"] = TOKEN
    added = client.post(
        f"{LISTS}/add", data={"csrf_token": TOKEN, "list_id": newsletter.id, "customer": "c-1"}
    )
    assert added.status_code == 403
    assert engage.list_counts(newsletter)["subscribed"] == 0


def test_every_list_form_needs_the_csrf_token(app, people, admin):
    newsletter = engage.create_list("Newsletter")
    engage.add_to_list(newsletter, "c-2")
    db.session.commit()
    posts = {
        f"{LISTS}/new": {"name": "Waitlist"},
        f"{LISTS}/{newsletter.id}/edit": {"name": "Renamed"},
        f"{LISTS}/add": {"list_id": newsletter.id, "customer": "c-1"},
        f"{LISTS}/remove": {"list_id": newsletter.id, "customer_id": "c-2"},
        f"{LISTS}/{newsletter.id}/archive": {},
        f"{LISTS}/{newsletter.id}/delete": {},
    }
    for url, form in posts.items():
        for token in (None, "wrong"):
            data = dict(form, **({"csrf_token": token} if token else {}))
            response = admin.post(url, data=data)
            assert response.status_code == 400, (url, token, response.status_code)
            assert b"CSRF" in response.data
    # nothing changed
    assert [found.name for found in engage.lists(archived=True)] == ["Newsletter"]
    assert engage.get_list(newsletter.id).archived_at is None
    assert [c.external_id for c in engage.list_members(newsletter)] == ["c-2"]


def test_a_list_is_created_and_edited_with_errors_naming_the_field(app, admin):
    form = admin.get(f"{LISTS}/new").get_data(as_text=True)
    assert 'name="csrf_token"' in form and 'id="double_optin"' in form

    blank = admin.post(f"{LISTS}/new", data={"csrf_token": TOKEN, "name": "  "})
    assert blank.status_code == 400
    page = blank.get_data(as_text=True)
    assert "name" in " ".join(flashes(page)).lower()
    assert 'id="name" name="name"' in page and "is-invalid" in page.split('id="name"')[0][-80:]

    created = admin.post(
        f"{LISTS}/new",
        data={
            "csrf_token": TOKEN,
            "name": "Beta testers",
            "description": "People who try things first",
            "public": "y",
            "double_optin": "y",
            "redirect_url": "https://example.com/thanks",
        },
        follow_redirects=True,
    )
    assert created.status_code == 200
    assert "List 'Beta testers' created." in flashes(created.get_data(as_text=True))
    beta = list_named("Beta testers")
    assert beta is not None and beta.slug == "beta-testers"
    assert (beta.public, beta.double_optin, beta.redirect_url) == (
        True,
        True,
        "https://example.com/thanks",
    )
    # the public list's page shows its sign-up form to paste
    assert "<form" in rows(created.get_data(as_text=True), "list-snippet").replace("&lt;", "<")

    clash = admin.post(f"{LISTS}/new", data={"csrf_token": TOKEN, "name": "Beta testers"})
    assert clash.status_code == 400
    assert "already exists" in " ".join(flashes(clash.get_data(as_text=True)))

    bad_url = admin.post(
        f"{LISTS}/{beta.id}/edit",
        data={"csrf_token": TOKEN, "name": "Beta", "redirect_url": "javascript:alert(1)"},
    )
    assert bad_url.status_code == 400
    page = bad_url.get_data(as_text=True)
    assert "is-invalid" in page.split('id="redirect_url"')[0][-80:]
    assert 'value="javascript:alert(1)"' in page  # what was typed is shown again
    assert list_named("Beta testers") is not None  # nothing saved

    edited = admin.post(
        f"{LISTS}/{beta.id}/edit",
        data={"csrf_token": TOKEN, "name": "Beta", "description": "", "redirect_url": ""},
        follow_redirects=True,
    )
    assert "List 'Beta' saved." in flashes(edited.get_data(as_text=True))
    beta = list_named("Beta")
    assert beta is not None and beta.slug == "beta"
    # unticked boxes and cleared fields are saved as such
    assert (beta.public, beta.double_optin, beta.redirect_url, beta.description) == (
        False,
        False,
        None,
        None,
    )


@pytest.mark.parametrize(
    "form",
    [
        {"name": "x" * 5000},
        {"name": "News", "description": "d" * 50_000},
        {"name": "News", "redirect_url": "https://" + "a" * 5000 + ".example"},
        {"name": "News", "redirect_url": "http://exa mple.com"},
        {"name": "!!!"},
        {"name": "News\x00letter"},
    ],
)
def test_hostile_list_forms_get_a_4xx_and_save_nothing(app, admin, form):
    response = admin.post(f"{LISTS}/new", data={"csrf_token": TOKEN, **form})
    assert 400 <= response.status_code < 500
    assert engage.lists(archived=True) == []


def test_hostile_list_urls_get_a_4xx(app, people, admin):
    newsletter = engage.create_list("Newsletter")
    for url in (
        f"{LISTS}/99999",
        f"{LISTS}/99999999999",
        f"{LISTS}/{newsletter.id}?status=gone",
        f"{LISTS}/{newsletter.id}?after=abc",
        f"{LISTS}/{newsletter.id}?after=99999999999999999999999",
    ):
        response = admin.get(url)
        assert 400 <= response.status_code < 500, (url, response.status_code)
    for form in (
        {"list_id": "abc", "customer": "c-1"},
        {"list_id": "99999999999", "customer": "c-1"},
        {"list_id": "424242", "customer": "c-1"},
        {"customer": "c-1"},
    ):
        response = admin.post(f"{LISTS}/add", data={"csrf_token": TOKEN, **form})
        assert 400 <= response.status_code < 500, (form, response.status_code)
    assert engage.list_counts(newsletter)["subscribed"] == 0


def test_customers_are_added_and_removed_on_the_lists_page(app, people, admin):
    newsletter = engage.create_list("Newsletter")
    url = f"{LISTS}/{newsletter.id}"
    for who in ("ada@example.com", "Bola", "c-3"):
        page = admin.post(
            f"{LISTS}/add",
            data={"csrf_token": TOKEN, "list_id": newsletter.id, "customer": who},
            follow_redirects=True,
        ).get_data(as_text=True)
        assert any("is now subscribed to Newsletter" in m for m in flashes(page))
    again = admin.post(
        f"{LISTS}/add",
        data={"csrf_token": TOKEN, "list_id": newsletter.id, "customer": "c-1"},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "Ada Obi was already subscribed to Newsletter." in flashes(again)
    nobody = admin.post(
        f"{LISTS}/add",
        data={"csrf_token": TOKEN, "list_id": newsletter.id, "customer": "zed@example.com"},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert any("zed@example.com" in m for m in flashes(nobody))
    assert sorted(c.external_id for c in engage.list_members(newsletter)) == ["c-1", "c-2", "c-3"]

    page = admin.get(url).get_data(as_text=True)
    assert re.search(r'id="subscribed-count">3<', page)
    assert 'id="joined-count">+3<' in page
    members = rows(page, "members")
    assert "ada@example.com" in members and "bola@example.com" in members
    # removing asks first
    assert 'data-confirm="Take ada@example.com off Newsletter?"' in members

    removed = admin.post(
        f"{LISTS}/remove",
        data={"csrf_token": TOKEN, "list_id": newsletter.id, "customer_id": "c-1"},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "Ada Obi was taken off Newsletter." in flashes(removed)
    assert sorted(c.external_id for c in engage.list_members(newsletter)) == ["c-2", "c-3"]
    assert re.search(r'id="subscribed-count">2<', removed)
    assert 'id="left-count">−1<' in removed

    index = admin.get(f"{LISTS}/").get_data(as_text=True)
    row = rows(index, "lists").split('data-list="newsletter"')[1].split("</tr>")[0]
    assert re.search(r'data-count="subscribed">2<', row)
    assert re.search(r'data-count="joined">\+3<', row)
    assert re.search(r'data-count="left">−1<', row)
    assert "private" in row


def test_members_are_paged_searched_and_filtered(app, admin):
    for number in range(1, 56):
        engage.identify(f"p{number}", email=f"person{number}@example.com")
    db.session.commit()
    engage.create_list("Big")
    for number in range(1, 56):
        engage.add_to_list("big", f"p{number}")
    engage.unsubscribe_from_list("big", "p7")
    db.session.commit()
    found = engage.get_list("big")
    first = admin.get(f"{LISTS}/{found.id}").get_data(as_text=True)
    assert rows(first, "members").count("<tr data-member") == 50
    assert "chart" in first and "<svg" in rows(first, "list-chart") + first
    next_url = re.search(r'rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    second = admin.get(next_url).get_data(as_text=True)
    assert rows(second, "members").count("<tr data-member") == 5
    assert "person55@example.com" in second and 'rel="next"' not in second
    searched = admin.get(f"{LISTS}/{found.id}?q=PERSON12").get_data(as_text=True)
    assert rows(searched, "members").count("<tr data-member") == 1
    # a member's address opens the customer's own page
    profile = re.search(r'<a href="([^"]+)">person12@example.com</a>', searched).group(1)
    assert profile == f"{ADMIN}/customers/{engage.get_customer('p12').id}"
    assert "person12@example.com" in admin.get(profile).get_data(as_text=True)
    gone = admin.get(f"{LISTS}/{found.id}?status=unsubscribed").get_data(as_text=True)
    members = rows(gone, "members")
    assert members.count("<tr data-member") == 1 and "person7@example.com" in members


def test_the_customer_page_shows_lists_and_adds_and_removes(app, people, admin):
    engage.create_list("Newsletter")
    engage.create_list("Waitlist")
    engage.add_to_list("waitlist", "c-1")
    db.session.commit()
    ada = engage.get_customer("c-1")
    url = f"{ADMIN}/customers/{ada.id}"
    page = admin.get(url).get_data(as_text=True)
    on = rows(page, "lists")
    assert "Waitlist" in on and "Newsletter" not in on
    assert 'data-confirm="Take Ada Obi off Waitlist?' in on
    choices = page.split('id="add-list"')[1].split("</select>")[0]
    assert "Newsletter" in choices and "Waitlist" not in choices

    newsletter = engage.get_list("newsletter")
    added = admin.post(
        f"{LISTS}/add",
        data={"csrf_token": TOKEN, "list_id": newsletter.id, "customer": "c-1", "back": "customer"},
    )
    assert added.status_code == 302 and added.headers["Location"].endswith(url)
    page = admin.get(url).get_data(as_text=True)
    assert "Ada Obi is now subscribed to Newsletter." in flashes(page)
    assert "Newsletter" in rows(page, "lists")

    waitlist = engage.get_list("waitlist")
    removed = admin.post(
        f"{LISTS}/remove",
        data={
            "csrf_token": TOKEN,
            "list_id": waitlist.id,
            "customer_id": "c-1",
            "back": "customer",
        },
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "Ada Obi was taken off Waitlist." in flashes(removed)
    assert "Waitlist" not in rows(removed, "lists")
    assert [c.external_id for c in engage.list_members("waitlist")] == []


def test_archive_reopen_and_delete(app, people, admin):
    newsletter = engage.create_list("Newsletter")
    url = f"{LISTS}/{newsletter.id}"
    archived = admin.post(
        f"{url}/archive", data={"csrf_token": TOKEN}, follow_redirects=True
    ).get_data(as_text=True)
    assert "List 'Newsletter' is archived: it takes no new subscribers." in flashes(archived)
    assert 'id="add-member"' not in archived
    refused = admin.post(
        f"{LISTS}/add",
        data={"csrf_token": TOKEN, "list_id": newsletter.id, "customer": "c-1"},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert any("archived" in m for m in flashes(refused))
    assert engage.list_counts(newsletter)["subscribed"] == 0
    admin.post(f"{url}/archive", data={"csrf_token": TOKEN, "archived": "0"})
    db.session.expire_all()
    assert engage.get_list(newsletter.id).archived_at is None

    engage.create_segment("Readers", {"list": "newsletter", "op": "in"})
    refused = admin.post(
        f"{url}/delete", data={"csrf_token": TOKEN}, follow_redirects=True
    ).get_data(as_text=True)
    assert any("Readers" in m for m in flashes(refused))
    assert engage.get_list(newsletter.id) is not None
    engage.delete_segment("readers")
    deleted = admin.post(
        f"{url}/delete", data={"csrf_token": TOKEN}, follow_redirects=True
    ).get_data(as_text=True)
    assert "List 'Newsletter' deleted." in flashes(deleted)
    assert engage.lists(archived=True) == []


def test_a_broadcast_goes_to_segments_and_lists_once_per_customer(app, people, admin):
    """The broadcast form offers lists beside segments; the check, the draft's page and
    the send count each customer once across both."""
    engage.identify("c-4", email="dayo@example.com", plan="pro")
    engage.identify("c-5", email=None)  # on the list, but no address
    db.session.commit()
    pro = engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
    newsletter = engage.create_list("Newsletter")
    for who in ("c-1", "c-4", "c-5"):  # c-4 is in both
        engage.add_to_list(newsletter, who)
    db.session.commit()
    engage.unsubscribe("c-1")  # unsubscribed from email: skipped

    form = admin.get(f"{ADMIN}/broadcasts/new?list={newsletter.id}").get_data(as_text=True)
    picker = form.split('id="audience"')[1].split("</fieldset>")[0]
    assert "Segments/Lists you are sending to" in picker
    assert re.search(
        rf'<option value="{newsletter.id}" selected>Newsletter \(3 subscribed\)', picker
    )

    def check(**audience):
        return admin.post(
            f"{ADMIN}/broadcasts/check",
            json={"name": "N", "channel": "email", "subject": "Hi", "body": "Hello", **audience},
            headers={"X-CSRFToken": TOKEN},
        ).get_json()

    only_list = check(lists=[newsletter.id])
    assert (only_list["customers"], only_list["recipients"]) == (3, 1)
    assert only_list["audience"] == "on its lists"
    both = check(segments=[pro.id], lists=[newsletter.id])
    assert (both["customers"], both["recipients"]) == (3, 1)  # c-4 counted once
    assert both["audience"] == "in its segments and lists"
    assert "segment or list" in check()["error"]
    assert check(lists=[424242])["field"] == "lists"

    created = admin.post(
        f"{ADMIN}/broadcasts/new",
        data={
            "csrf_token": TOKEN,
            "name": "Letter",
            "channel": "email",
            "segments": [str(pro.id)],
            "lists": [str(newsletter.id)],
            "subject": "Hi",
            "body": "Hello",
            "action": "draft",
        },
    )
    assert created.status_code == 302
    draft = db.session.scalar(select(Broadcast).where(Broadcast.name == "Letter"))
    assert draft.list_ids == [newsletter.id] and draft.segment_ids == [pro.id]
    page = admin.get(f"{ADMIN}/broadcasts/{draft.id}").get_data(as_text=True)
    audience = page.split('id="broadcast-audience"')[1].split("</dd>")[0]
    assert "Pro</a>" in audience and "Newsletter</a>" in audience
    assert 'data-recipients="1"' in page
    assert "3 in its segments and lists (each counted once)" in page
    edit = admin.get(f"{ADMIN}/broadcasts/{draft.id}/edit").get_data(as_text=True)
    assert re.search(rf'<option value="{newsletter.id}" selected>', edit)

    admin.post(f"{ADMIN}/broadcasts/{draft.id}/send", data={"csrf_token": TOKEN})
    counts = engage.broadcast_counts(draft)
    assert (counts["total"], counts["sent"], counts["skipped"]) == (3, 1, 2)


def test_a_csv_file_is_imported_into_a_list(app, people, admin):
    newsletter = engage.create_list("Newsletter")
    engage.add_to_list(newsletter, "c-2")
    db.session.commit()
    engage.unsubscribe_from_list(newsletter, "c-2")  # stays unsubscribed
    db.session.commit()
    csv_text = (
        "\ufeffid,email,plan\n"
        "c-1,ada@example.com,pro\n"
        "c-2,bola@example.com,pro\n"
        "n-1,new@example.com,free\n"
        "n-2,not an email,free\n"
    )
    page = admin.post(
        f"{LISTS}/{newsletter.id}/import",
        data={
            "csrf_token": TOKEN,
            "id_column": "id",
            "email_column": "email",
            "file": (io.BytesIO(csv_text.encode()), "people.csv"),
        },
        content_type="multipart/form-data",
        follow_redirects=True,
    ).get_data(as_text=True)
    shown = flashes(page)
    assert shown[0].startswith("Imported 3 customer(s) into Newsletter")
    assert shown[1].startswith("Skipped line 5: email") and len(shown) == 2
    assert sorted(c.external_id for c in engage.list_members(newsletter)) == ["c-1", "n-1"]
    assert engage.get_customer("n-1").attributes["plan"] == "free"
    assert re.search(r'id="subscribed-count">2<', page)

    def upload(content: bytes, **form):
        return admin.post(
            f"{LISTS}/{newsletter.id}/import",
            data={"csrf_token": TOKEN, "file": (io.BytesIO(content), "x.csv"), **form},
            content_type="multipart/form-data",
            follow_redirects=True,
        )

    for content, form, words in (
        ("id,email\nc-9,é@example.com\n".encode("latin-1"), {}, "not utf-8"),
        (b"user,email\nc-9,x@example.com\n", {}, "no such column"),
        (b"id,email\nc-\x009,x@example.com\n", {}, "nul character"),
    ):
        response = upload(content, **form)
        assert response.status_code == 200
        shown = flashes(response.get_data(as_text=True))
        assert any(words in m.lower() for m in shown), (words, shown)
    missing = admin.post(
        f"{LISTS}/{newsletter.id}/import", data={"csrf_token": TOKEN}, follow_redirects=True
    )
    assert any("choose a csv file" in m.lower() for m in flashes(missing.get_data(as_text=True)))
    assert sorted(c.external_id for c in engage.list_members(newsletter)) == ["c-1", "n-1"]


def test_a_draft_whose_list_was_archived_names_it_and_saves_without_it(app, people, admin):
    """Archiving a list a draft goes to: the edit form still shows it (marked archived),
    saving it says which list and why, and taking it out saves the draft."""
    pro = engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
    weekly = engage.create_list("Weekly")
    draft = engage.create_broadcast(
        "Letter", channel="email", subject="Hi", body="Hello", lists=[weekly.id]
    )
    db.session.commit()
    engage.archive_list(weekly)
    db.session.commit()

    edit = admin.get(f"{ADMIN}/broadcasts/{draft.id}/edit").get_data(as_text=True)
    assert re.search(rf'<option value="{weekly.id}" selected>Weekly \(archived\)', edit)
    checked = admin.post(  # what the edit page asks while the admin types
        f"{ADMIN}/broadcasts/check",
        json={"name": "Letter", "channel": "email", "subject": "Hi", "body": "Hello",
              "lists": [weekly.id]},
        headers={"X-CSRFToken": TOKEN},
    )
    assert checked.status_code == 400
    assert "list 'Weekly' is archived" in checked.get_json()["error"]

    form = {
        "csrf_token": TOKEN,
        "name": "Letter",
        "channel": "email",
        "subject": "Hi",
        "body": "Hello",
        "action": "draft",
    }
    refused = admin.post(
        f"{ADMIN}/broadcasts/{draft.id}/edit", data={**form, "lists": [str(weekly.id)]}
    )
    assert refused.status_code == 400
    (flashed,) = flashes(refused.get_data(as_text=True))
    assert "List 'Weekly' is archived: reopen it, or take it out of the audience" in flashed
    saved = admin.post(
        f"{ADMIN}/broadcasts/{draft.id}/edit", data={**form, "segments": [str(pro.id)]}
    )
    assert saved.status_code == 302
    db.session.expire_all()
    stored = db.session.get(Broadcast, draft.id)
    assert (stored.segment_ids, stored.list_ids) == ([pro.id], [])
    new = admin.get(f"{ADMIN}/broadcasts/new").get_data(as_text=True)
    assert "Weekly" not in new.split('id="audience"')[1].split("</fieldset>")[0]
