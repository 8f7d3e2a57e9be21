"""A second small host, for the embedding tests: models with the column types and keys
real apps have (UUID and string primary keys, Enum, JSON, Numeric, Date, binary
columns), two identity models apart by a prefix, and an activity model."""

from __future__ import annotations

import enum
import uuid
from datetime import date
from decimal import Decimal
from typing import Any

from flask import Flask, session
from flask_admin import Admin
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import JSON, Date, Enum, ForeignKey, LargeBinary, Numeric, String, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from flask_engage import Engage

db = SQLAlchemy()
engage = Engage()


class Tier(enum.Enum):
    FREE = "free"
    PRO = "pro"


class Account(db.Model):
    """An identity model with a UUID primary key (customer id: its own key)."""

    __tablename__ = "emb_accounts"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    email: Mapped[str | None] = mapped_column(String(200))
    tier: Mapped[Tier] = mapped_column(Enum(Tier), default=Tier.FREE)
    prefs: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    tags: Mapped[list[Any] | None] = mapped_column(JSON)
    balance: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    born: Mapped[date | None] = mapped_column(Date)
    avatar: Mapped[bytes | None] = mapped_column(LargeBinary)


class Partner(db.Model):
    """A second identity model, keyed by a string code, kept apart by a prefix."""

    __tablename__ = "emb_partners"
    code: Mapped[str] = mapped_column(String(20), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="active")


class Team(db.Model):
    """An identity model with a string primary key and the default customer_id="id"."""

    __tablename__ = "emb_teams"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Payment(db.Model):
    """An activity model pointing at an account."""

    __tablename__ = "emb_payments"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("emb_accounts.id"))
    amount: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    method: Mapped[Tier | None] = mapped_column(Enum(Tier))


engage.track_model(
    Account,
    email="email",
    attributes=["tier", "prefs", "tags", "balance", "born", "avatar"],
    events={"created": "Opened account"},
    changes={"tier": "Changed tier"},
)
engage.track_model(
    Partner,
    customer_id="code",
    email="email",
    attributes=["status"],
    customer_prefix="partner:",
    on_delete="keep",
)
engage.track_model(Team, attributes=["name"], customer_prefix="team:")
engage.track_model(
    Payment, customer_id="account_id", events={"created": "Paid"}, properties=["amount", "method"]
)


def create_app(database_url: str, admin: Admin | None = None, **config: Any) -> Flask:
    """The app factory; ``admin``: a host's module-level ``Admin()`` to mount first."""
    app = Flask(__name__)
    app.config.update(
        {
            "SQLALCHEMY_DATABASE_URI": database_url,
            "TESTING": True,
            "SECRET_KEY": "embed-secret",
            "ENGAGE_MAIL_SENDER": "news@example.com",
            "ENGAGE_BASE_URL": "https://app.example.com",
            "ENGAGE_API_KEYS": ["sdk-key:sdk-secret"],
            "ENGAGE_INLINE_SCHEDULE": False,
            # the signed-in account of a request: set by /login, cleared by /logout
            "ENGAGE_IDENTITY": lambda: session.get("account"),
            **config,
        }
    )
    db.init_app(app)
    if admin is not None:
        admin.init_app(app)
    engage.init_app(app, db=db)

    @app.post("/login/<account>")
    @engage.track_view("Logged in")
    def login(account: str) -> str:
        session["account"] = account
        return "hello"

    @app.post("/logout")
    @engage.track_view("Logged out")
    def logout() -> str:
        session.pop("account", None)
        return "bye"

    @app.post("/draft")
    @engage.track_view("Wrote a draft")
    def draft() -> str:
        # the view leaves a change pending in the host's session, on purpose
        db.session.add(Partner(code="draft", email="draft@example.com"))
        return "kept pending"

    return app


def reset_postgres(app: Flask) -> None:
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
