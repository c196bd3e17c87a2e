"""Login and logout, and the admin's Users page (roles, deactivation, API tokens)."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import (
    abort,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_user, logout_user
from werkzeug.wrappers import Response

from ..engine import RuleError
from ..models import Role, utcnow
from ..security import public, requires_role
from ..services.errors import NotFound, ValidationFailed
from ..services.users import (
    authenticate,
    create_token,
    create_user,
    list_tokens,
    list_users,
    log_out,
    revoke_token,
    set_password,
    update_user,
)
from ..throttle import get_throttle, minutes
from . import bp
from .forms import ROLE_CHOICES, LoginForm, NewUserForm, PasswordForm

Page = str | Response | tuple[str, int]


def _safe_next(target: str | None) -> str:
    """Only follow links within this site, so the login page cannot redirect off-site.

    Browsers read `/\\evil.example` and `/<tab>/evil.example` as `//evil.example`, so
    backslashes, control characters and a second leading slash are refused too.
    """
    if (target and target.startswith("/") and not target.startswith("//")
            and "\\" not in target and not any(ord(c) < 32 or ord(c) == 127 for c in target)
            and not urlsplit(target).netloc and not urlsplit(target).scheme):
        return target
    return url_for("main.index")


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> Page:
    """Show the login form; on success go where the user was headed.

    Failed attempts are counted per account and per client address; past the limits the
    account (or address) is locked out for a while and says so.
    """
    if current_user.is_authenticated and request.method == "GET":
        return redirect(_safe_next(request.args.get("next")))
    form = LoginForm()
    if form.validate_on_submit():
        throttle = get_throttle()
        account = ("account", (form.username.data or "").strip().lower()[:64])
        address = ("address", request.remote_addr or "unknown")
        wait = throttle.blocked_for(throttle.rules.account, *account)
        wait_address = throttle.blocked_for(throttle.rules.address, *address)
        if wait is not None or wait_address is not None:
            what = "this account" if wait is not None else "your address"
            form.password.errors.append(
                f"Too many failed log-ins for {what}. Try again in "
                f"{minutes(max(wait or 0, wait_address or 0))}.")
            return render_template("auth/login.html", form=form), 429
        user = authenticate(form.username.data, form.password.data)
        if user is not None:
            throttle.clear(throttle.rules.account, *account)
            session.clear()  # a fresh session: nothing from before the log-in carries over
            login_user(user)
            return redirect(_safe_next(request.args.get("next")))
        throttle.failed(throttle.rules.account, *account)
        throttle.failed(throttle.rules.address, *address)
        form.password.errors.append("Unknown user name or wrong password.")
    return render_template("auth/login.html", form=form)


@bp.route("/logout", methods=["POST"])
def logout() -> Response:
    """Log out: every session of this user ends (on every browser), then the login page."""
    if current_user.is_authenticated:
        log_out(current_user.id)
    logout_user()
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/password", methods=["GET", "POST"])
def password() -> Page:
    """Change your own password; every session of yours ends, including this one."""
    form = PasswordForm()
    if form.validate_on_submit():
        try:
            set_password(current_user.username, form.password.data,
                         current=form.current_password.data)
        except ValidationFailed as error:
            for e in error.errors:
                getattr(form, e.path, form.password).errors.append(e.message)
        else:
            logout_user()
            session.clear()
            flash("Your password was changed; log in with the new one.", "success")
            return redirect(url_for("auth.login"))
        return render_template("auth/password.html", form=form), 422
    return render_template("auth/password.html", form=form)


def _users_page(form: NewUserForm | None = None, row_errors: dict[str, list[str]] | None = None,
                token: str | None = None, token_user: str | None = None,
                status: int = 200) -> Response:
    response = make_response(render_template(
        "auth/users.html", users=list_users(), tokens=list_tokens(), form=form or NewUserForm(
            formdata=None), roles=[c.value for c in ROLE_CHOICES], row_errors=row_errors or {},
        token=token, token_user=token_user, now=utcnow()), status)
    if token is not None:  # shown once: keep it out of every cache
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/users", methods=["GET", "POST"])
@requires_role(Role.ADMIN)
def users() -> Page:
    """Administer users: create them, change roles, deactivate, issue and revoke API tokens.

    Each form on the page posts an `action`: create, update, token or revoke.
    """
    if request.method == "GET":
        return _users_page()
    action = request.form.get("action")
    if action == "create":
        return _create()
    name = request.form.get("username", "").strip()
    try:
        if action == "update":
            update_user(name, request.form.get("role", ""), request.form.get("active") == "on")
            flash(f"User {name} saved.", "success")
        elif action == "token":
            token = create_token(name, request.form.get("label", ""), _expiry_days())
            return _users_page(token=token, token_user=name)
        elif action == "password":
            set_password(name, request.form.get("new_password", ""))
            flash(f"Password of {name} set; their sessions have ended.", "success")
        elif action == "revoke":
            owner = revoke_token(_token_id())
            flash(f"API token of {owner} revoked.", "success")
        else:
            abort(400, description="Unknown action.")
    except (ValidationFailed, NotFound) as error:
        messages = [e.message for e in getattr(error, "errors", [])] or [error.message]
        return _users_page(row_errors={name: messages}, status=422)
    return redirect(url_for("auth.users"))


def _expiry_days() -> int | None:
    """The posted `expires_days` (empty: the token does not expire)."""
    raw = request.form.get("expires_days", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 6:
        raise ValidationFailed([RuleError("expires_days", "must be a whole number of days")])
    return int(raw)


def _token_id() -> int:
    """The posted `token_id`; 400 when it is not a number."""
    raw = request.form.get("token_id", "")
    if not raw.isdigit() or len(raw) > 18:
        abort(400, description="The token id must be a number.")
    return int(raw)


def _create() -> Page:
    """The New user form: check it, create the user, or show each error on its field."""
    form = NewUserForm()
    if form.validate():
        try:
            create_user(form.username.data.strip(), form.password.data, form.role.data)
        except ValidationFailed as error:
            for e in error.errors:
                field = getattr(form, e.path, form.username)
                field.errors = [*field.errors, e.message]
        else:
            flash(f"User {form.username.data.strip()} created.", "success")
            return redirect(url_for("auth.users"))
    return _users_page(form=form, status=422)
