"""Admin pages: the loaded plugins (/plugins) and retention (/admin/retention)."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for

from ..models import Role
from ..security import requires_role
from ..services import retention as retention_service
from ..services.registry import describe_plugins
from . import bp


@bp.get("/plugins")
@requires_role(Role.ADMIN)
def plugins() -> str:
    """The loaded plugins: origin, trigger types, settings, routes, schedules, card panels."""
    return render_template("admin/plugins.html", plugins=describe_plugins())


@bp.route("/admin/retention", methods=["GET", "POST"])
@requires_role(Role.ADMIN)
def retention() -> Any:
    """Retention settings, what they would purge now, the latest purges; POST purges now."""
    if request.method == "POST":
        removed = retention_service.purge()
        flash(f"Purged {removed['events']} events and {removed['instances']} finished instances "
              f"({removed['history']} history rows).", "success")
        return redirect(url_for("admin.retention"))
    return render_template("admin/retention.html", policy=retention_service.policy(),
                           eligible=retention_service.eligible(),
                           runs=retention_service.recent_runs())
