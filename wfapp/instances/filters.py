"""The Workflow Instances filter read from a request: the list, its CSV and bulk pages share it."""

from __future__ import annotations

from flask import request

from ..choices import options
from ..services import instance_list
from ..services.errors import ValidationFailed
from ..services.instance_list import InstanceFilters
from .forms import ACTIVE, FilterForm


def read_filters(form: FilterForm) -> tuple[InstanceFilters | None, list[str]]:
    """The list's filters from its validated form and `var.<name>` arguments (or problems)."""
    for name, choices in instance_list.filter_choices(form.workflow.data).items():
        form[name].choices = options([("", "All"), *((c, c) for c in choices)])
    if not form.validate():
        return None, [f"{form[name].label.text}: {'; '.join(messages)}"
                      for name, messages in form.errors.items()]
    variables = {k[4:]: v for k, v in request.args.items() if k.startswith("var.") and v}
    if form.var_name.data and form.var_value.data:
        variables[form.var_name.data] = form.var_value.data
    filters = InstanceFilters(
        workflow=form.workflow.data or None, integration=form.integration.data or None,
        state=form.state.data or None, active=ACTIVE[form.active.data or ""],
        record_key=form.record_key.data or None,
        record_key_prefix=form.record_key_prefix.data or None, run_id=form.run_id.data,
        since=form.since_utc(), vars=variables)
    try:
        instance_list.check_vars(filters.vars)
        instance_list.check_sort(request.args.get("sort"))
    except ValidationFailed as error:
        return None, [f"{e.path}: {e.message}" for e in error.errors]
    return filters, []
