"""``flask engage import customers.csv``: typed attributes, per-line errors, dry runs."""

from __future__ import annotations

from flask_engage.models import Customer
from tests.hostapp import engage

CSV = """id,email,plan,city,balance,kyc_done,joined
1,ada@example.com,pro,Lagos,1500.50,true,2026-01-15
2,bob@example.com,free,Nairobi,20,false,2026-02-01
,nobody@example.com,free,Accra,1,true,2026-02-02
4,not-an-email,free,Accra,1,true,2026-02-02
5,eve@example.com,pro,Lagos,,,
6,zed@example.com,free,Lagos,7,no,2026-03-01,extra
"""


def write_csv(tmp_path, content: str = CSV):
    path = tmp_path / "customers.csv"
    path.write_text(content, encoding="utf-8")
    return path


def customers(session) -> dict[str, Customer]:
    session.expire_all()
    return {c.external_id: c for c in session.query(Customer)}


def test_good_rows_imported_bad_rows_reported_with_line_numbers(app, session, tmp_path):
    pro_in_lagos = engage.create_segment("Pro in Lagos", {"all": [
        {"attribute": "plan", "op": "eq", "value": "pro"},
        {"attribute": "city", "op": "eq", "value": "Lagos"}]})
    rich = engage.create_segment("Balance over 1000",
                                 {"attribute": "balance", "op": "gt", "value": 1000})
    result = app.test_cli_runner().invoke(args=["engage", "import", str(write_csv(tmp_path))])
    assert result.exit_code == 1, result.output  # some rows failed; the good ones are in
    assert "3 customers imported, 3 rows with errors" in result.output
    assert "line 4: id: customer id must not be empty" in result.stderr
    assert "line 5: email: 'not-an-email' is not an email address" in result.stderr
    assert "line 7:" in result.stderr and "more cells than the header" in result.stderr

    found = customers(session)
    assert sorted(found) == ["1", "2", "5"]
    ada = found["1"]
    assert ada.email == "ada@example.com"
    assert ada.attributes == {"plan": "pro", "city": "Lagos", "balance": 1500.5, "kyc_done": True,
                              "joined": "2026-01-15T00:00:00.000000Z"}
    assert found["2"].attributes["balance"] == 20 and found["2"].attributes["kyc_done"] is False
    assert found["5"].attributes == {"plan": "pro", "city": "Lagos"}, "empty cells are skipped"

    # Imported customers join their segments (typed comparisons work on numbers).
    assert sorted(c.external_id for c in engage.members(pro_in_lagos)) == ["1", "5"]
    assert [c.external_id for c in engage.members(rich)] == ["1"]
    assert engage.count({"attribute": "joined", "op": "lt", "value": "2026-01-20"}) == 1

    # Importing again updates (attributes merge), it does not duplicate.
    update = "id,plan\n2,pro\n"
    result = app.test_cli_runner().invoke(
        args=["engage", "import", str(write_csv(tmp_path, update))]
    )
    assert result.exit_code == 0, result.output
    assert "1 customers imported, 0 rows with errors" in result.output
    found = customers(session)
    assert len(found) == 3 and found["2"].attributes["plan"] == "pro"
    assert found["2"].attributes["city"] == "Nairobi"


def test_dry_run_writes_nothing(app, session, tmp_path):
    result = app.test_cli_runner().invoke(
        args=["engage", "import", str(write_csv(tmp_path)), "--dry-run"]
    )
    assert result.exit_code == 1, result.output
    assert "3 customers would be imported (dry run, nothing written), 3 rows with errors" in (
        result.output
    )
    assert "line 5: email" in result.stderr
    assert customers(session) == {}


def test_custom_columns_and_missing_id_column(app, session, tmp_path):
    content = "user_id,mail,score\nu-1,u1@example.com,3\n"
    path = write_csv(tmp_path, content)
    result = app.test_cli_runner().invoke(
        args=["engage", "import", str(path), "--id-column", "user_id", "--email-column", "mail"]
    )
    assert result.exit_code == 0, result.output
    found = customers(session)
    assert found["u-1"].email == "u1@example.com" and found["u-1"].attributes == {"score": 3}

    result = app.test_cli_runner().invoke(args=["engage", "import", str(path)])
    assert result.exit_code != 0
    assert "id: no such column in the CSV header" in result.output


def test_a_nul_in_an_id_is_a_row_error_on_both_databases(app, session, tmp_path):
    path = write_csv(tmp_path, "id,plan\nc-\x009,pro\n7,free\n")
    result = app.test_cli_runner().invoke(args=["engage", "import", str(path)])
    assert result.exit_code == 1, result.output
    assert "line 2: id: customer id must not contain a NUL character" in result.stderr
    assert sorted(customers(session)) == ["7"]
