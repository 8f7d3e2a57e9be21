"""Example app: a small fintech SaaS (plans, cities, KYC, a virtual card) tracked by Engage.

Run it with ``make demo`` (SQLite in ``instance/demo.db``, jobs inline, admin at
``/engage/admin``). Set ``DATABASE_URL`` and ``ENGAGE_REDIS_URL`` to run it on
PostgreSQL with RQ workers (``flask engage worker``).
"""

from __future__ import annotations

import os
import secrets
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from flask import Flask, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import (
    LoginManager,
    UserMixin,
    current_user,
    login_required,
    login_user,
    logout_user,
)
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Boolean, DateTime, ForeignKey, Numeric, String, func, select
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from flask_engage import Engage

db = SQLAlchemy()
engage = Engage()
login_manager = LoginManager()
login_manager.login_view = "login"

PLANS = ("free", "pro")
CITIES = ("Lagos", "Nairobi", "Accra", "Cape Town", "London", "Berlin", "New York")
DEMO_ADMIN = ("admin@example.com", "demo")


class User(UserMixin, db.Model):
    """A customer of the demo bank (and the demo admin)."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(255))
    plan: Mapped[str] = mapped_column(String(10), default="free")
    city: Mapped[str | None] = mapped_column(String(100))
    kyc_done: Mapped[bool] = mapped_column(Boolean, default=False)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)


class Purchase(db.Model):
    """A purchase paid with the virtual card."""

    __tablename__ = "purchases"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    merchant: Mapped[str] = mapped_column(String(100))
    amount: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    created_at: Mapped[Any] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CardUse(db.Model):
    """One use of the virtual card (a purchase, a subscription charge, a lookup...)."""

    __tablename__ = "card_uses"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    merchant: Mapped[str] = mapped_column(String(100))
    amount: Mapped[Decimal] = mapped_column(Numeric(10, 2))


engage.track_model(
    User, email="email", attributes={"first_name": "name", "plan": "plan", "city": "city",
                                      "kyc_done": "kyc_done"},
    events={"created": "Signed up"}, changes={"plan": "Changed plan"},
)
engage.track_model(Purchase, customer_id="user_id", events={"created": "Purchase"},
                   properties=["amount", "merchant"])
engage.track_model(CardUse, customer_id="user_id", events={"created": "Card used"},
                   properties=["amount", "merchant"])


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id))


def admin_access() -> bool:
    """ENGAGE_ADMIN_ACCESS: open under ``flask run --debug``, else the signed-in demo admin."""
    return current_app.debug or bool(current_user.is_authenticated and current_user.is_admin)


def secret_key(instance_path: Path) -> str:
    """``SECRET_KEY`` from the environment, else this install's own random key.

    The key signs session cookies (the admin's login) and unsubscribe links: a key
    shipped with the code would let anyone forge both. It is made once and kept in
    the instance folder (``instance/secret_key``, readable by its owner only).
    """
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    path = instance_path / "secret_key"
    try:
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
            key = secrets.token_hex(32)
            file.write(key)
            return key
    except FileExistsError:  # made before (or by another process just now)
        key = path.read_text().strip()
        if not key:
            raise RuntimeError(f"{path} is empty: delete it to make a new key") from None
        return key


def create_app(config: dict[str, Any] | None = None, instance_path: str | None = None) -> Flask:
    """The demo app; ``config`` overrides (tests pass a temporary database)."""
    app = Flask(__name__, instance_path=instance_path or str(Path(__file__).parent / "instance"))
    Path(app.instance_path).mkdir(exist_ok=True)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=os.environ.get(
            "DATABASE_URL", f"sqlite:///{Path(app.instance_path) / 'demo.db'}"
        ),
        ENGAGE_REDIS_URL=os.environ.get("ENGAGE_REDIS_URL"),
        ENGAGE_ADMIN_ACCESS=admin_access,
        ENGAGE_MAIL_SENDER="hello@demo-bank.example",
        ENGAGE_BASE_URL=os.environ.get("ENGAGE_BASE_URL", "http://127.0.0.1:5000"),
        MAIL_SUPPRESS_SEND=os.environ.get("MAIL_SERVER") is None,
    )
    app.config.update(config or {})
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = secret_key(Path(app.instance_path))
    db.init_app(app)
    engage.init_app(app, db=db)
    login_manager.init_app(app)
    register_views(app)
    with app.app_context():
        db.create_all()
    return app


def ensure_demo_admin() -> None:
    """Create the demo admin user on first use (Engage's tables exist by then)."""
    if db.session.scalar(select(User).where(User.email == DEMO_ADMIN[0])) is None:
        db.session.add(User(email=DEMO_ADMIN[0], name="Admin",
                            password_hash=generate_password_hash(DEMO_ADMIN[1]),
                            city="Lagos", kyc_done=True, is_admin=True))
        db.session.commit()


def _amount(text: str | None) -> Decimal:
    try:
        value = Decimal(text or "")
    except InvalidOperation:
        abort(400, "amount: expected a number")
    if not value.is_finite() or value <= 0 or value > 100_000:
        abort(400, "amount: expected a number between 0 and 100,000")
    return value.quantize(Decimal("0.01"))


def register_views(app: Flask) -> None:
    """The demo's pages."""

    @app.get("/")
    def home():
        purchases = []
        if current_user.is_authenticated:
            purchases = db.session.scalars(
                select(Purchase).where(Purchase.user_id == current_user.id)
                .order_by(Purchase.id.desc()).limit(10)
            ).all()
        return render_template("home.html", purchases=purchases, demo_admin=DEMO_ADMIN)

    @app.route("/signup", methods=["GET", "POST"])
    def signup():
        if request.method == "GET":
            return render_template("signup.html", plans=PLANS, cities=CITIES)
        form = request.form
        email = form.get("email", "").strip().lower()
        if "@" not in email or not form.get("password") or not form.get("name", "").strip():
            flash("Name, a valid email and a password are required.")
            return render_template("signup.html", plans=PLANS, cities=CITIES), 400
        if db.session.scalar(select(User).where(User.email == email)) is not None:
            flash("That email already has an account: log in instead.")
            return render_template("signup.html", plans=PLANS, cities=CITIES), 400
        user = User(
            email=email, name=form["name"].strip(),
            password_hash=generate_password_hash(form["password"]),
            plan=form.get("plan") if form.get("plan") in PLANS else "free",
            city=form.get("city") or None,
        )
        db.session.add(user)
        db.session.commit()
        login_user(user)
        return redirect(url_for("kyc"))

    @app.route("/login", methods=["GET", "POST"])
    def login():
        if request.method == "GET":
            return render_template("login.html")
        ensure_demo_admin()
        user = db.session.scalar(
            select(User).where(User.email == request.form.get("email", "").strip().lower())
        )
        if user is None or not check_password_hash(user.password_hash,
                                                   request.form.get("password", "")):
            flash("Wrong email or password.")
            return render_template("login.html"), 400
        login_user(user)
        return logged_in()

    @engage.track_view("Logged in")
    def logged_in():
        return redirect(url_for("home"))

    @app.post("/logout")
    def logout():
        logout_user()
        return redirect(url_for("home"))

    @app.route("/kyc", methods=["GET", "POST"])
    @login_required
    def kyc():
        if request.method == "GET":
            return render_template("kyc.html")
        if not request.form.get("document", "").strip():
            flash("Enter your document number.")
            return render_template("kyc.html"), 400
        return complete_kyc()

    @engage.track_view("Completed KYC", properties=lambda: {"method": request.form.get("method")})
    def complete_kyc():
        current_user.kyc_done = True
        db.session.commit()
        flash("Identity verified: your virtual card is ready.")
        return redirect(url_for("home"))

    @app.post("/plan")
    @login_required
    def change_plan():
        plan = request.form.get("plan")
        if plan not in PLANS:
            abort(400, "plan: expected free or pro")
        current_user.plan = plan
        db.session.commit()
        flash(f"You are now on the {plan} plan.")
        return redirect(url_for("home"))

    @app.post("/card/pay")
    @login_required
    def pay():
        if not current_user.kyc_done:
            flash("Complete KYC to use your virtual card.")
            return redirect(url_for("kyc"))
        amount = _amount(request.form.get("amount"))
        merchant = request.form.get("merchant", "").strip()[:100] or "Unknown merchant"
        db.session.add(Purchase(user_id=current_user.id, merchant=merchant, amount=amount))
        db.session.add(CardUse(user_id=current_user.id, merchant=merchant, amount=amount))
        db.session.commit()
        flash(f"Paid ${amount} at {merchant}.")
        return redirect(url_for("home"))


