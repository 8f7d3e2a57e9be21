"""A small host app used by the tests: Users and Orders, tracked by Engage."""

from __future__ import annotations

from decimal import Decimal

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import ForeignKey, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from flask_engage import Engage

db = SQLAlchemy()
engage = Engage()


class User(db.Model):
    __tablename__ = "host_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))
    plan: Mapped[str] = mapped_column(String(20), default="free")
    city: Mapped[str | None] = mapped_column(String(100))


class Order(db.Model):
    __tablename__ = "host_orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("host_users.id"))
    amount: Mapped[Decimal] = mapped_column(Numeric(10, 2))


class Note(db.Model):
    """An untracked model, for overhead comparisons."""

    __tablename__ = "host_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(200))


engage.track_model(
    User,
    email="email",
    attributes=["plan", "city"],
    events={"created": "Signed up", "deleted": "Deleted account"},
    changes={"plan": "Changed plan"},
)
engage.track_model(
    Order, customer_id="user_id", events={"created": "Purchase"}, properties=["amount"]
)


def create_app(database_url: str, **config) -> Flask:
    app = Flask(__name__)
    app.config.update(
        {
            "SQLALCHEMY_DATABASE_URI": database_url,
            "TESTING": True,
            "SECRET_KEY": "test-secret",
            "ENGAGE_MAIL_SENDER": "news@example.com",
            "ENGAGE_API_KEYS": ["test-key", "sdk-key:sdk-secret"],
            "ENGAGE_BASE_URL": "https://app.example.com",
            # tests move time with run_due(now=...); the inline schedule has its own tests
            "ENGAGE_INLINE_SCHEDULE": False,
            **config,
        }
    )
    db.init_app(app)
    engage.init_app(app, db=db)
    return app
