"""The /plugins page: what each loaded plugin registered (admins only)."""

from __future__ import annotations

from flask import render_template

from ..models import Role
from ..security import requires_role
from ..services.registry import describe_plugins
from . import bp


@bp.get("/plugins")
@requires_role(Role.ADMIN)
def plugins() -> str:
    """The loaded plugins: origin, trigger types, settings, routes, schedules, card panels."""
    return render_template("admin/plugins.html", plugins=describe_plugins())
