"""The Workflow Instances page and the instance page."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from ..engine import RuleError
from ..formatting import record_url
from ..models import Instance, Role
from ..security import actor_name, requires_role
from ..services import instances as service
from ..services.errors import Conflict, NotFound, ServiceError, ValidationFailed
from ..services.firing import compiled_workflow
from ..services.registry import get_registry
from . import bp

ACTIVE = {"yes": True, "no": False, "all": None, "": None}


def _filters() -> tuple[service.InstanceFilters, list[RuleError]]:
    args = request.args
    errors: list[RuleError] = []
    run_id = None
    if args.get("run_id"):
        try:
            run_id = int(args["run_id"])
        except ValueError:
            errors.append(RuleError("run_id", "must be a whole number"))
    since = None
    if args.get("since"):
        try:
            since = datetime.fromisoformat(args["since"])
        except ValueError:
            errors.append(RuleError("since", "must be a date and time"))
    if args.get("active", "") not in ACTIVE:
        errors.append(RuleError("active", "must be yes, no or all"))
    filters = service.InstanceFilters(
        workflow=args.get("workflow") or None, integration=args.get("integration") or None,
        state=args.get("state") or None, active=ACTIVE.get(args.get("active", "")),
        record_key=args.get("record_key") or None, run_id=run_id, since=since)
    return filters, errors


def _manual_codes(instances: list[Instance]) -> dict[int, list[str]]:
    """Manual transitions available per instance, one compile per workflow on the page."""
    compiled: dict[int, Any] = {}
    out = {}
    for instance in instances:
        if instance.workflow_id not in compiled:
            compiled[instance.workflow_id] = compiled_workflow(instance.workflow_id)
        wf = compiled[instance.workflow_id]
        state = wf.states.get(instance.state) if wf else None
        if wf is None or not wf.enabled or state is None or state.is_final:
            out[instance.id] = []
        else:
            out[instance.id] = [t.code for t in wf.candidates.get((instance.state, "manual"), ())]
    return out


@bp.route("/")
def index() -> str:
    """The Workflow Instances list with its filters and actions."""
    filters, errors = _filters()
    rows: list[service.InstanceRow] = []
    cursor = None
    if not errors:
        try:
            rows, cursor = service.list_instances(filters, 50, request.args.get("cursor"))
        except ValidationFailed as error:
            errors = error.errors
    manual = _manual_codes([r.instance for r in rows])
    links = {r.instance.id: record_url(r.instance.integration.record_url_template or "",
                                       r.instance.record_key, r.instance.run_id,
                                       r.instance.vars or {}, r.instance.data or {})
             for r in rows}
    args = {k: v for k, v in request.args.items() if k != "cursor" and v}
    return render_template("instances/index.html", rows=rows, cursor=cursor, errors=errors,
                           filters=request.args, manual=manual, links=links, args=args,
                           labels={n: t.label for n, t in get_registry().trigger_types.items()})


def _selected() -> list[Instance]:
    ids = request.values.getlist("id")
    instances = []
    for raw in ids:
        try:
            instances.append(service.get_instance(int(raw)))
        except (ValueError, NotFound):
            continue
    if not instances:
        flash("Select one or more instances first.", "warning")
    return instances


@bp.route("/advance", methods=["GET", "POST"])
@requires_role(Role.OPERATOR)
def advance() -> str | Response:
    """Advance Workflow: fire a Manual transition common to the selected instances."""
    instances = _selected()
    if not instances:
        return redirect(url_for("instances.index"))
    manual = _manual_codes(instances)
    common = set.intersection(*(set(codes) for codes in manual.values()))
    if request.method == "POST":
        code = request.form.get("transition", "")
        comment = request.form.get("comment", "")
        fired, refused = [], []
        for instance in instances:
            try:
                service.fire_manual(instance.id, code, comment, actor_name())
                fired.append(instance.record_key or f"#{instance.id}")
            except ServiceError as error:
                refused.append(f"{instance.record_key or instance.id}: {error.message}")
        if fired:
            flash(f"Fired {code} for {', '.join(fired)}.", "success")
        for line in refused:
            flash(f"Not fired — {line}", "danger")
        if len(instances) == 1:
            return redirect(url_for("instances.show", instance_id=instances[0].id))
        return redirect(request.form.get("back") or url_for("instances.index"))
    first = compiled_workflow(instances[0].workflow_id)
    options = [first.transitions[c] for c in sorted(common)] if first else []
    return render_template("instances/advance.html", instances=instances, options=options,
                           back=request.referrer or url_for("instances.index"))


@bp.route("/reset", methods=["GET", "POST"])
@requires_role(Role.OPERATOR)
def reset() -> str | Response:
    """Reset to State: move the selected instances to a state without firing anything."""
    instances = _selected()
    if not instances:
        return redirect(url_for("instances.index"))
    errors: list[RuleError] = []
    if request.method == "POST":
        state, note = request.form.get("state", ""), request.form.get("note", "")
        done = []
        for instance in instances:
            try:
                service.reset_instance(instance.id, state, note, actor_name())
                done.append(instance.record_key or f"#{instance.id}")
            except ValidationFailed as error:
                errors = error.errors
                break
            except ServiceError as error:
                flash(f"Not reset — {instance.record_key}: {error.message}", "danger")
        if not errors:
            if done:
                flash(f"Reset {', '.join(done)} to {state.upper()}.", "success")
            if len(instances) == 1:
                return redirect(url_for("instances.show", instance_id=instances[0].id))
            return redirect(url_for("instances.index"))
    workflows = {i.workflow_id for i in instances}
    states = instances[0].workflow.states if len(workflows) == 1 else []
    return render_template("instances/reset.html", instances=instances, states=states,
                           errors=errors, mixed=len(workflows) > 1)


@bp.route("/delete", methods=["GET", "POST"])
@requires_role(Role.OPERATOR)
def delete() -> str | Response:
    """Delete Instance: remove the selected instances without firing anything (audited)."""
    instances = _selected()
    if not instances:
        return redirect(url_for("instances.index"))
    if request.method == "POST":
        for instance in instances:
            service.delete_instance(instance.id, actor_name())
        flash(f"Deleted {len(instances)} instance(s); the deletion is in the audit log.",
              "success")
        return redirect(url_for("instances.index"))
    return render_template("instances/delete.html", instances=instances)


@bp.route("/<int:instance_id>")
def show(instance_id: int) -> str:
    """One instance: state, timer, data, variables, history, events, actions, why-not."""
    try:
        instance = service.get_instance(instance_id)
    except NotFound as error:
        abort(404, description=error.message)
    why_error = None
    payload = None
    source = request.args.get("why_source") or None
    if request.args.get("why_payload") is not None:
        try:
            payload = json.loads(request.args["why_payload"] or "{}")
            if not isinstance(payload, dict):
                raise ValueError("the payload must be a JSON object")
        except ValueError as exc:
            why_error = f"The sample payload is not a JSON object: {exc}"
            payload = None
    if payload is not None and source:
        about, verdicts = service.why_not(instance, payload, source,
                                          request.args.get("why_type", ""))
    else:
        about, verdicts = service.why_not(instance)
    workflow = compiled_workflow(instance.workflow_id)
    state = workflow.states.get(instance.state) if workflow else None
    return render_template(
        "instances/show.html", instance=instance, history=service.history(instance.id),
        events=service.events_of(instance.id), actions=service.manual_actions(instance),
        about=about, verdicts=verdicts, why_error=why_error, state=state,
        link=record_url(instance.integration.record_url_template or "", instance.record_key,
                        instance.run_id, instance.vars or {}, instance.data or {}),
        trigger_types=get_registry().choices(),
        labels={n: t.label for n, t in get_registry().trigger_types.items()})


@bp.post("/<int:instance_id>/fire")
@requires_role(Role.OPERATOR)
def fire(instance_id: int) -> Response:
    """Fire one Manual transition from the instance page."""
    try:
        service.fire_manual(instance_id, request.form.get("transition", ""),
                            request.form.get("comment", ""), actor_name())
    except (Conflict, NotFound) as error:
        flash(f"Not fired: {error.message}", "danger")
    else:
        flash(f"Fired {request.form.get('transition', '').upper()}.", "success")
    return redirect(url_for("instances.show", instance_id=instance_id))
