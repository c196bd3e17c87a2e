"""Commands under `flask --app wfapp`: user, token, wf, demo. They call the services."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

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
@click.option("--expires-days", type=int, default=None,
              help="The token stops working after this many days (default: never).")
def token_create(name: str, label: str, expires_days: int | None) -> None:
    """Print a new API token for user NAME (it acts with that user's role)."""
    try:
        token = users.create_token(name, label, expires_days)
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
    from .services.checks import workflow_checks

    summary = workflow_checks(workflow).summary()
    if summary:  # lint and the saved scenarios run on every save, this one too
        click.echo(f"Checked: {summary} (flask --app wfapp wf lint FILE lists them).", err=True)


@wf_cli.command("export")
@click.argument("code")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True),
              help="File to write; standard output when omitted.")
@click.option("--version", "number", type=click.IntRange(min=1),
              help="The version to export; the latest when omitted.")
def wf_export(code: str, output: str | None, number: int | None) -> None:
    """Export workflow CODE (a version of it) as JSON carrying its version number."""
    try:
        text = definitions.dumps(definitions.export_version(code, number))
    except ServiceError as error:
        _fail(error)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"Wrote {output}.", err=True)
    else:
        click.echo(text, nl=False)


def _checked_file(file: Any) -> Any:
    """Lint and run the scenarios of a workflow file; exit 1 when it is not JSON."""
    from .services.checks import check_file_document

    try:
        document = definitions.parse_file(file.read())
    except ServiceError as error:
        _fail(error)
    return check_file_document(document)


@wf_cli.command("lint")
@click.argument("file", type=click.File("rb"))
def wf_lint(file: click.File) -> None:
    """Lint a workflow FILE: print errors and warnings; exit 1 when it has errors (for CI)."""
    checks = _checked_file(file)
    errors = checks.lint.errors + checks.case_errors
    for item in errors:
        click.echo(f"error: {item.path}: {item.message} [{item.code}]")
    for item in checks.lint.warnings:
        click.echo(f"warning: {item.path}: {item.message} [{item.code}]")
    click.echo(f"{len(errors)} error(s), {len(checks.lint.warnings)} warning(s)", err=True)
    sys.exit(1 if errors else 0)


@wf_cli.command("test")
@click.argument("file", type=click.File("rb"))
def wf_test(file: click.File) -> None:
    """Run the saved scenarios of a workflow FILE; exit 1 when one fails or the file is invalid."""
    checks = _checked_file(file)
    errors = checks.lint.errors + checks.case_errors
    for item in errors:
        click.echo(f"error: {item.path}: {item.message} [{item.code}]")
    for case in checks.cases:
        verdict = "PASS" if case.passed else "FAIL"
        click.echo(f"{verdict} {case.name}: ends in {case.state}"
                   + ("" if case.passed else " — " + "; ".join(case.problems)))
    failed = len(checks.failing)
    click.echo(f"{len(checks.cases) - failed} passed, {failed} failed"
               + (f", {len(errors)} error(s)" if errors else ""), err=True)
    sys.exit(1 if failed or errors else 0)


@click.command("demo")
def demo_command() -> None:
    """Load the demo workflow, integration and admin user (skips what exists)."""
    from .demo import load_demo

    for line in load_demo(current_app.instance_path):
        click.echo(line)


@click.command("plugins")
def plugins_command() -> None:
    """Print (as JSON) the loaded plugins and what each registered."""
    from .services.registry import describe_plugins

    registry = current_app.extensions["wfapp"]["registry"]
    click.echo(json.dumps({
        "trigger_types": {n: t.label for n, t in registry.trigger_types.items()},
        "integration_settings": list(registry.integration_settings),
        "plugins": describe_plugins(),
    }, indent=2))


@click.command("worker")
@click.option("--burst", is_flag=True, help="Run the queued jobs, then exit.")
@click.option("--schedules/--no-schedules", default=True, show_default=True,
              help="Take part in queueing the periodic jobs (sweep, polls).")
@click.option("--verbose", is_flag=True, help="Log every job RQ runs (the periodic sweep too).")
def worker_command(burst: bool, schedules: bool, verbose: bool = False) -> None:
    """Run an RQ worker inside the app context, with the periodic sweep and schedules.

    The worker is RQ's SimpleWorker: jobs run in this process, which keeps the app context,
    the plugin registry and the warm database pool from one job to the next. Each job is a short
    batch loop with a time budget, so the fork-per-job isolation of RQ's default worker would
    only add its fork and reconnect cost to every batch.
    """
    from flask import g
    from redis.exceptions import RedisError
    from rq import SimpleWorker

    from .queue import RedisQueue, get_queue
    from .shutdown import request_stop

    stop_signal: list[str] = []
    g.actor = "worker"  # what jobs change is recorded as the worker's doing
    queue = get_queue()
    if not isinstance(queue, RedisQueue):
        click.echo("Error: set WFAPP_REDIS_URL to run workers; without Redis the web process "
                   "runs jobs itself (the embedded queue).", err=True)
        sys.exit(1)
    problem = queue.check()
    if problem:
        click.echo(f"Error: {problem}", err=True)
        sys.exit(1)
    if schedules and not burst:
        _start_scheduler(queue, current_app.extensions["wfapp"]["schedules"])
    # A worker mixes a CPU-bound thread (event batches) with threads that mostly wait on the
    # network (action deliveries, polls); each of those needs the GIL back after every wait,
    # and with Python's default 5 ms switch interval a few waits per call add up to tens of
    # milliseconds per delivery. A shorter interval hands the GIL over sooner.
    sys.setswitchinterval(float(current_app.config.get("WORKER_SWITCH_INTERVAL", 0.001)))

    class AppWorker(SimpleWorker):
        """Ends each job's database session, so no job (a plugin's included) leaves a
        transaction open in this long-lived app context for the next one."""

        def request_stop(self, signum: int, frame: Any) -> None:
            # SIGTERM/SIGINT: the job in hand ends after its current batch (wfapp.shutdown),
            # then RQ's warm shutdown stops the loop.
            stop_signal.append(signal.Signals(signum).name)
            request_stop()
            super().request_stop(signum, frame)

        def execute_job(self, job: Any, queue: Any) -> Any:
            from .extensions import db

            try:
                return super().execute_job(job, queue)
            finally:
                db.session.remove()

    started = time.monotonic()
    while True:
        # The worker's own connection: RQ sets its read timeout above its long BLPOP, which it
        # can only do for a pool that has no connections yet (the app's client times out after
        # 10 s and would log "Timeout reading from socket" on every idle BLPOP).
        connection = queue.worker_connection()
        worker = AppWorker([queue.queue_on(connection)], connection=connection)
        if not burst:
            click.echo(f"wfapp worker {worker.name} (pid {os.getpid()}) takes jobs from Redis "
                       f"at {_redacted(queue.url)}; Ctrl+C or SIGTERM stops it after the "
                       "current job.", err=True)
        # Routine jobs (a sweep every few seconds) are not logged unless asked; failures are.
        try:
            worker.work(burst=burst, logging_level="INFO" if verbose else "WARNING")
        except RedisError:
            # RQ's own clean-up (registering the worker's death) needs Redis too.
            if burst or stop_signal:
                raise
        if burst or stop_signal or not _wait_for_redis(queue, worker.name, stop_signal):
            break
    if stop_signal:
        # One line for whoever stopped it (systemd, an orchestrator): it stopped cleanly.
        click.echo(f"wfapp worker {worker.name} (pid {os.getpid()}) stopped on "
                   f"{stop_signal[0]} after {time.monotonic() - started:.0f} s: the batch in hand "
                   "finished, partition leases released", err=True)


def _wait_for_redis(queue: Any, name: str, stop_signal: list[str]) -> bool:
    """RQ ended its loop by itself (it does when Redis goes away under a job): wait for Redis
    and say True to carry on, or False when the worker was told to stop meanwhile.

    Without this the worker process would end, and the events stored while Redis was away
    would wait for someone to start a worker again.
    """
    from rq.exceptions import StopRequested

    problem = queue.check()
    click.echo(f"wfapp worker {name} (pid {os.getpid()}): RQ stopped its loop "
               f"({problem or 'an unexpected error, logged above'}); carrying on once Redis "
               "answers.", err=True)
    try:
        time.sleep(1)  # an error that repeats at once must not spin
        while not stop_signal:
            if queue.check() is None:
                return True
            time.sleep(2)
    except StopRequested:  # SIGTERM while waiting: RQ's handler is still installed
        pass
    return False


def _redacted(url: str) -> str:
    """A Redis URL without its password, for log lines."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _start_scheduler(queue: Any, schedules: list[tuple[str, float, str]]) -> None:
    """Enqueue each periodic job once per interval across all workers (a Redis SET NX mark)."""
    import threading
    import time

    def loop() -> None:
        while True:
            for name, interval, path in schedules:
                try:
                    if queue.once(name, interval):
                        queue.enqueue(path)
                except Exception as exc:  # Redis away: try again next round
                    click.echo(f"scheduler: {exc}", err=True)
            time.sleep(1.0)

    threading.Thread(target=loop, daemon=True, name="wfapp-scheduler").start()


def register_cli(app: Flask) -> None:
    """Attach the commands to the app."""
    for command in (user_cli, token_cli, wf_cli, demo_command, plugins_command, worker_command):
        app.cli.add_command(command)
