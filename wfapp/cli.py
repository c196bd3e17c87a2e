"""Commands under `flask --app wfapp`: user, token, wf, demo. They call the services."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from flask import Flask, current_app

from .models import Role
from .services import definitions, users
from .services.errors import ServiceError


def _fail(error: ServiceError) -> None:
    """Print a service error (every rule error on its own line) and exit non-zero."""
    click.echo(f"Error: {error.message}", err=True)
    for item in getattr(error, "errors", [])[5:]:
        click.echo(f"  {item}", err=True)
    sys.exit(1)


@click.group("user")
def user_cli() -> None:
    """Manage users."""


@user_cli.command("create")
@click.argument("name")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.VIEWER.value,
              show_default=True)
def user_create(name: str, password: str, role: str) -> None:
    """Create a user NAME with a role."""
    try:
        users.create_user(name, password, role)
    except ServiceError as error:
        _fail(error)
    click.echo(f"Created user {name} ({role}).")


@click.group("token")
def token_cli() -> None:
    """Manage API tokens."""


@token_cli.command("create")
@click.argument("name")
@click.option("--label", default="api", show_default=True, help="What the token is for.")
def token_create(name: str, label: str) -> None:
    """Print a new API token for user NAME (it acts with that user's role)."""
    try:
        token = users.create_token(name, label)
    except ServiceError as error:
        _fail(error)
    click.echo(token)


@click.group("wf")
def wf_cli() -> None:
    """Import and export workflow definitions (wfapp.workflow/v1)."""


@wf_cli.command("import")
@click.argument("file", type=click.File("rb"))
@click.option("--replace", is_flag=True, help="Replace a workflow with the same code.")
def wf_import(file: click.File, replace: bool) -> None:
    """Import a workflow from FILE ('-' reads standard input)."""
    try:
        document = definitions.parse_file(file.read())  # type: ignore[attr-defined]
        workflow = definitions.import_document(document, replace=replace)
    except ServiceError as error:
        _fail(error)
    click.echo(f"Imported workflow {workflow.code}.")


@wf_cli.command("export")
@click.argument("code")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True),
              help="File to write; standard output when omitted.")
def wf_export(code: str, output: str | None) -> None:
    """Export workflow CODE as JSON."""
    try:
        text = definitions.dumps(definitions.export_document(code))
    except ServiceError as error:
        _fail(error)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"Wrote {output}.", err=True)
    else:
        click.echo(text, nl=False)


@click.command("demo")
def demo_command() -> None:
    """Load the demo workflow, integration and admin user (skips what exists)."""
    from .demo import load_demo

    for line in load_demo(current_app.instance_path):
        click.echo(line)


@click.command("plugins")
def plugins_command() -> None:
    """List the registered trigger types and integration settings."""
    registry = current_app.extensions["wfapp"]["registry"]
    click.echo(json.dumps({
        "trigger_types": {n: t.label for n, t in registry.trigger_types.items()},
        "integration_settings": list(registry.integration_settings),
    }, indent=2))


def register_cli(app: Flask) -> None:
    """Attach the commands to the app."""
    for command in (user_cli, token_cli, wf_cli, demo_command, plugins_command):
        app.cli.add_command(command)
