"""Login and logout pages."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import flash, redirect, render_template, request, url_for
from flask_login import login_user, logout_user
from werkzeug.wrappers import Response

from ..security import public
from ..services.users import authenticate
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
