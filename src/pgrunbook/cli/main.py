"""``pgrunbook``: a thin click layer over the library."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.table import Table

from pgrunbook import __version__
from pgrunbook.cli.render import Output, human_age, human_size
from pgrunbook.config import Config, load_config
from pgrunbook.environment import Environment
from pgrunbook.errors import EXIT_FAILURE, EXIT_USAGE, PgRunbookError
from pgrunbook.postgres.url import redact

F = TypeVar("F", bound=Callable[..., Any])


class State:
    def __init__(self, config_path: str | None, json_mode: bool, debug: bool):
        self.config_path = config_path
        self.json_mode = json_mode
        self.debug = debug
        self.output = Output(json_mode)
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    def env(self, name: str | None) -> Environment:
        return Environment.resolve(self.config, name)


def _secrets() -> list[str]:
    """Passwords of every URL in the environment: scrubbed from any error text, whatever its origin."""
    from pgrunbook.postgres.url import parse_database_url

    found = []
    for key, value in os.environ.items():
        if value.startswith(("postgres://", "postgresql://")):
            try:
                found.extend(parse_database_url(value, source=key).secrets())
            except PgRunbookError:
                continue
    return found


def handle_errors(fn: F) -> F:
    """Expected failures: one ``error:`` line and a ``hint:`` line, the exit code they carry. No traceback
    unless --debug, and never a password."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        state: State | None = ctx.find_object(State)
        debug = state.debug if state else False
        try:
            return fn(*args, **kwargs)
        except PgRunbookError as exc:
            if debug:
                raise
            secrets = _secrets()
            click.echo(f"error: {redact(exc.message, secrets)}", err=True)
            if exc.hint:
                click.echo(f"hint: {redact(exc.hint, secrets)}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted; nothing half-done is listed or kept", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:
            if debug:
                raise
            click.echo(
                f"error: internal error: {type(exc).__name__}: {redact(str(exc), _secrets())}".splitlines()[0], err=True
            )
            click.echo("hint: rerun with --debug for the traceback and report it", err=True)
            sys.exit(EXIT_FAILURE)

    return wrapper  # type: ignore[return-value]


def env_option(fn: F) -> F:
    return click.option(
        "--env",
        "env_name",
        metavar="NAME",
        help="environment from pgrunbook.toml (may be left out when only one is defined)",
    )(fn)


def json_option(fn: F) -> F:
    """--json is accepted before or after the sub-command, as users type it both ways."""

    def set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            state = ctx.find_object(State)
            if state:
                state.json_mode = True
                state.output = Output(True)
        return value

    return click.option(
        "--json", "json_flag", is_flag=True, expose_value=False, callback=set_json, help="one JSON document on stdout"
    )(fn)


class Group(click.Group):
    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        except click.UsageError as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            if exc.ctx:
                click.echo(f"hint: {exc.ctx.command_path} --help", err=True)
            sys.exit(EXIT_USAGE)
        except click.exceptions.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(130)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(EXIT_USAGE)


@click.group(cls=Group)
@click.version_option(__version__, prog_name="pgrunbook")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="PGRUNBOOK_CONFIG",
    help="pgrunbook.toml to use (default: found by walking up from here)",
)
@click.option("--json", "json_mode", is_flag=True, help="one JSON document on stdout, nothing else there")
@click.option("--debug", is_flag=True, help="show tracebacks")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, json_mode: bool, debug: bool) -> None:
    """The database runbook of a Prisma + PostgreSQL application, safe to execute."""
    ctx.obj = State(config_path, json_mode, debug)


def _state() -> State:
    return click.get_current_context().find_object(State)  # type: ignore[return-value]


# --- init, doctor ------------------------------------------------------------------------------------


@cli.command()
@click.option("--force", is_flag=True, help="overwrite an existing pgrunbook.toml")
@json_option
@handle_errors
def init(force: bool) -> None:
    """Write a commented pgrunbook.toml here, detecting prisma/migrations."""
    from pgrunbook.init import write_config

    path = write_config(Path.cwd(), force=force)
    st = _state()
    if st.json_mode:
        st.output.emit_json({"path": str(path)})
    else:
        click.echo(f"wrote {path}")


@cli.command()
@env_option
@json_option
@handle_errors
def doctor(env_name: str | None) -> None:
    """Check config, connectivity, client tools, storage, free space and Prisma history."""
    from pgrunbook.doctor import exit_code, run_doctor

    st = _state()
    checks = run_doctor(st.env(env_name))
    if st.json_mode:
        st.output.emit_json({"ok": exit_code(checks) == 0, "checks": [c.to_dict() for c in checks]})
    else:
        marks = {
            "ok": "[green]ok[/]",
            "warning": "[yellow]warn[/]",
            "failed": "[red]FAIL[/]",
            "skipped": "[dim]skip[/]",
        }
        for c in checks:
            st.output.out.print(f"{marks[c.status]:>16}  {c.name}: {c.detail}", highlight=False)
            if c.hint and c.status in ("warning", "failed"):
                st.output.out.print(f"{'':>6}  hint: {c.hint}", highlight=False)
    sys.exit(exit_code(checks))


# --- backup ------------------------------------------------------------------------------------------


@cli.group()
def backup() -> None:
    """Create, list, verify and prune backups."""


@backup.command("create")
@env_option
@click.option(
    "--label",
    default="manual",
    show_default=True,
    help="scheduled, pre-deploy, manual, pre-restore, or your own (a-z0-9._-)",
)
@json_option
@handle_errors
def backup_create(env_name: str | None, label: str) -> None:
    """Dump, compress, checksum, store; the manifest last. Prints the backup id."""
    from pgrunbook.backup.create import create_backup

    st = _state()
    env = st.env(env_name)
    with st.output.progress(f"backup {env.name}") as progress:
        m = create_backup(env, label=label, progress=progress)
    location = f"{env.storage.display}/{env.repository.key(m.id, m.file)}"
    if st.json_mode:
        st.output.emit_json(
            {
                "id": m.id,
                "environment": m.environment,
                "location": location,
                "size": m.size,
                "sha256": m.sha256,
                "duration_s": m.duration_s,
                "label": m.label,
                "migration_head": m.migration_head.model_dump() if m.migration_head else None,
                "tables": len(m.tables),
                "rows": sum(t.rows for t in m.tables),
            }
        )
    else:
        st.output.info(
            f"backup of {m.database} ({m.environment}): {human_size(m.size)} in {m.duration_s:.1f}s, "
            f"{len(m.tables)} tables, {sum(t.rows for t in m.tables)} rows -> {location}"
        )
        click.echo(m.id)


@backup.command("list")
@env_option
@json_option
@handle_errors
def backup_list(env_name: str | None) -> None:
    """Backups of an environment: size, age, label, migration head, verified state."""
    st = _state()
    env = st.env(env_name)
    manifests = env.repository.list_backups()
    if st.json_mode:
        st.output.emit_json(
            [
                {
                    "id": m.id,
                    "label": m.label,
                    "created_at": m.created_at,
                    "size": m.size,
                    "verified": m.verified,
                    "drilled": m.drilled,
                    "compression": m.compression,
                    "migration_head": m.migration_head.model_dump() if m.migration_head else None,
                }
                for m in manifests
            ]
        )
        return
    if not manifests:
        st.output.info(f"no backups of environment {env.name!r} in {env.storage.display}")
        return
    table = Table(title=f"backups of {env.name} in {env.storage.display}", title_justify="left")
    for col in ("id", "label", "age", "size", "migration head", "verified"):
        table.add_column(col)
    for m in manifests:
        head = f"{m.migration_head.name} ({m.migration_head.count})" if m.migration_head else "-"
        verified = (
            "drill ok"
            if m.drilled and m.verified
            else ("ok" if m.verified else ("FAILED" if m.verifications else "no"))
        )
        table.add_row(m.id, m.label, human_age(m.created_at), human_size(m.size), head, verified)
    st.output.out.print(table)


@backup.command("verify")
@click.argument("backup_id")
@env_option
@click.option("--drill", is_flag=True, help="also restore into a scratch database and compare row counts")
@json_option
@handle_errors
def backup_verify(backup_id: str, env_name: str | None, drill: bool) -> None:
    """Checksum and table of contents; --drill restores into a scratch database too."""
    from pgrunbook.backup.verify import verify_backup

    st = _state()
    env = st.env(env_name)
    with st.output.progress(f"verify {backup_id}") as progress:
        result = verify_backup(env, backup_id, drill_restore=drill, progress=progress)
    if st.json_mode:
        st.output.emit_json(result.to_dict())
    else:
        for c in result.checks:
            mark = "[green]ok[/]" if c.ok else "[red]FAIL[/]"
            st.output.out.print(f"{mark:>14}  {c.name}: {c.detail}", highlight=False)
        st.output.out.print(f"{backup_id}: {'verified' if result.ok else 'FAILED verification'}", highlight=False)
    if not result.ok:
        if not st.json_mode:
            click.echo(f"error: backup {backup_id} failed verification; do not rely on it", err=True)
            click.echo("hint: take a new backup (pgrunbook backup create) and find out what damaged this one", err=True)
        sys.exit(EXIT_FAILURE)


@backup.command("prune")
@env_option
@click.option("--dry-run", is_flag=True, help="show the decisions, delete nothing")
@json_option
@handle_errors
def backup_prune(env_name: str | None, dry_run: bool) -> None:
    """Apply the retention policy; shows each backup kept or removed and why."""
    from pgrunbook.backup.prune import prune

    st = _state()
    env = st.env(env_name)
    report = prune(env, dry_run=dry_run)
    rows = report.to_list()
    if st.json_mode:
        st.output.emit_json(rows)
        return
    verb = {"keep": "keep", "remove": "would remove" if dry_run else "removed"}
    r = env.config.backup.retention
    st.output.info(
        f"retention: daily {r.daily}, weekly {r.weekly}, monthly {r.monthly} "
        f"({env.config.backup.timezone}){' — dry run, nothing deleted' if dry_run else ''}"
    )
    for row in rows:
        colour = "green" if row["action"] == "keep" else "red"
        reasons = "; ".join(row["reasons"])  # type: ignore[arg-type]
        st.output.out.print(f"[{colour}]{verb[str(row['action'])]:>12}[/]  {row['id']}  {reasons}", highlight=False)
    if not rows:
        st.output.info("no backups")


# --- demo --------------------------------------------------------------------------------------------


@cli.command()
@click.option("--rows", default=20000, show_default=True, help="orders in the sample database")
@json_option
@handle_errors
def demo(rows: int) -> None:
    """The runbook end to end on a throwaway local PostgreSQL cluster, cleaned up afterwards."""
    from pgrunbook.demo import run_demo

    st = _state()
    summary = run_demo(st.output, rows=rows)
    if st.json_mode:
        st.output.emit_json(summary)


def main() -> None:
    cli(prog_name="pgrunbook")
