"""Login and logout pages."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import flash, redirect, render_template, request, url_for
from flask_login import login_user, logout_user
from werkzeug.wrappers import Response

from ..engine import RuleError
from ..models import Role
from ..security import public, requires_role
from ..services.errors import NotFound, ValidationFailed
from ..services.users import (
    authenticate,
    create_token,
    create_user,
    list_users,
    update_user,
)
from . import bp
from .forms import LoginForm


def _safe_next(target: str | None) -> str:
    """Only follow relative `next` links, so the login page cannot redirect off-site."""
    if target and not urlsplit(target).netloc and target.startswith("/"):
        return target
    return url_for("main.index")


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> str | Response:
    """Show the login form; on success go where the user was headed."""
    form = LoginForm()
    if form.validate_on_submit():
        user = authenticate(form.username.data, form.password.data)
        if user is not None:
            login_user(user)
            return redirect(_safe_next(request.args.get("next")))
        form.password.errors.append("Unknown user name or wrong password.")
    return render_template("auth/login.html", form=form)


@bp.route("/logout", methods=["POST"])
def logout() -> Response:
    """Log out and return to the login page."""
    logout_user()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/users", methods=["GET", "POST"])
@requires_role(Role.ADMIN)
def users() -> str | Response | tuple[str, int]:
    """Administer users: create them, change roles, deactivate, issue API tokens."""
    errors: list[RuleError] = []
    token = None
    if request.method == "POST":
        action = request.form.get("action")
        name = request.form.get("username", "").strip()
        try:
            if action == "create":
                create_user(name, request.form.get("password", ""),
                            request.form.get("role", "viewer"))
                flash(f"User {name} created.", "success")
            elif action == "update":
                update_user(name, request.form.get("role", ""),
                            request.form.get("active") == "on")
                flash(f"User {name} saved.", "success")
            elif action == "token":
                token = create_token(name, request.form.get("label") or "api")
        except (ValidationFailed, NotFound) as error:
            errors = getattr(error, "errors", []) or [RuleError("username", error.message)]
        if not errors and token is None:
            return redirect(url_for("auth.users"))
    return render_template("auth/users.html", users=list_users(), roles=[r.value for r in Role],
                           errors=errors, token=token, token_user=request.form.get("username")
                           ), 422 if errors else 200
