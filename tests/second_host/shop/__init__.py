"""Shop: a host app written the way production apps are, to embed flask-engage.

An app factory, Flask-Migrate for its own tables, a Flask-Admin ``Admin()`` created
at module level, UUID primary keys and Enum columns, and views that write with ORM
bulk statements and delete accounts. Its own suite (``shop_tests/``) runs against
flask-engage installed from a wheel.
"""

from __future__ import annotations

import enum
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request
from flask_admin import Admin
from flask_admin.contrib.sqla import ModelView
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Enum, ForeignKey, Numeric, String, Uuid, delete, update
from sqlalchemy.orm import Mapped, mapped_column

from flask_engage import Engage

MIGRATIONS = str(Path(__file__).parent / "migrations")

db = SQLAlchemy()
migrate = Migrate()
admin = Admin(name="Shop")  # module level: every app the factory makes shares it
engage = Engage()


class Plan(enum.Enum):
    FREE = "free"
    PLUS = "plus"


class Shopper(db.Model):
    __tablename__ = "shoppers"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    email: Mapped[str | None] = mapped_column(String(200))
    plan: Mapped[Plan] = mapped_column(Enum(Plan), default=Plan.FREE)
    country: Mapped[str | None] = mapped_column(String(2))


class Order(db.Model):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    shopper_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("shoppers.id", ondelete="CASCADE"))
    total: Mapped[Decimal] = mapped_column(Numeric(10, 2))


engage.track_model(
    Shopper, email="email", attributes=["plan", "country"], changes={"plan": "Changed plan"}
)
engage.track_model(
    Order, customer_id="shopper_id", events={"created": "Ordered"}, properties=["total"]
)
admin.add_view(ModelView(Shopper, db, endpoint="shoppers", url="/admin/shoppers"))


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI="sqlite://",
        SECRET_KEY="shop-secret",
        ENGAGE_MAIL_SENDER="shop@example.com",
        ENGAGE_BASE_URL="https://shop.example.com",
    )
    app.config.update(config or {})
    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS)
    admin.init_app(app)  # before engage.init_app: Engage's views join this admin
    engage.init_app(app, db=db)

    @app.post("/shoppers")
    def sign_up() -> Any:
        data = request.get_json()
        shopper = Shopper(email=data.get("email"), country=data.get("country"))
        db.session.add(shopper)
        db.session.commit()
        return jsonify(id=str(shopper.id)), 201

    @app.post("/countries/<country>/upgrade")
    def upgrade_country(country: str) -> Any:
        result = db.session.execute(
            update(Shopper).where(Shopper.country == country).values(plan=Plan.PLUS)
        )
        db.session.commit()
        return jsonify(upgraded=result.rowcount)

    @app.delete("/shoppers/<uuid:shopper_id>")
    def close_account(shopper_id: uuid.UUID) -> Any:
        db.session.execute(delete(Shopper).where(Shopper.id == shopper_id))
        db.session.commit()
        return "", 204

    return app
