"""``pgrunbook``: a thin click layer over the library."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.markup import escape
from rich.table import Table

from pgrunbook import __version__
from pgrunbook.cli.render import Output, human_age, human_size, step_line
from pgrunbook.config import Config
from pgrunbook.environment import Environment, ProgressFn
from pgrunbook.errors import EXIT_FAILURE, EXIT_NEGATIVE, EXIT_USAGE, PgRunbookError
from pgrunbook.postgres.url import redact
from pgrunbook.prisma.config_file import load_project_config

if TYPE_CHECKING:
    from pgrunbook.journal import Journal

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
            self._config = load_project_config(self.config_path)
        return self._config

    def env(self, name: str | None) -> Environment:
        return Environment.resolve(self.config, name)


def _secrets() -> list[str]:
    """Every secret the process can see, scrubbed from any error text whatever its origin: passwords of
    the URLs in the environment, variables named like secrets, and the variables the configuration
    names (webhook URL, SMTP password, serve token), when it loads."""
    from pgrunbook.postgres.redaction import environment_secrets
    from pgrunbook.postgres.url import parse_database_url

    found = environment_secrets(os.environ)
    for key, value in os.environ.items():
        if value.startswith(("postgres://", "postgresql://")):
            try:
                found.extend(parse_database_url(value, source=key).secrets())
            except PgRunbookError:
                continue
    with contextlib.suppress(Exception):  # a broken config must not hide the error being reported
        ctx = click.get_current_context(silent=True)
        state = ctx.find_object(State) if ctx else None
        config = state._config if state else None
        if config is not None:
            names = [config.monitor.webhook_url_env, config.serve.token_env]
            if config.monitor.smtp is not None:
                names.append(config.monitor.smtp.password_env)
            found.extend(os.environ[n].strip() for n in names if n and os.environ.get(n, "").strip())
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
            for line in exc.details:
                click.echo(f"  - {redact(line, secrets)}", err=True)
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


def restore_options(fn: F) -> F:
    """--owner / --skip-missing-roles / --skip-superuser-objects, for every command that restores."""
    fn = click.option(
        "--skip-superuser-objects",
        is_flag=True,
        help="leave out what only a superuser may create (event triggers, some extensions); listed in the report",
    )(fn)
    fn = click.option(
        "--skip-missing-roles",
        is_flag=True,
        help="leave out grants and policies naming roles the target lacks; listed in the report",
    )(fn)
    return click.option(
        "--owner",
        metavar="ROLE",
        help="give every object and the database to ROLE (another server, a managed service); "
        "default: the owners and privileges of the backup",
    )(fn)


def _restore_options(owner: str | None, skip_missing_roles: bool, skip_superuser_objects: bool) -> Any:
    from pgrunbook.backup.preflight import RestoreOptions

    return RestoreOptions(owner, skip_missing_roles, skip_superuser_objects)


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
    """Write a commented pgrunbook.toml here from the project's Prisma files (prisma.config.ts, package.json)."""
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
            st.output.out.print(f"{marks[c.status]:>16}  {escape(c.name)}: {escape(c.detail)}", highlight=False)
            if c.hint and c.status in ("warning", "failed"):
                st.output.out.print(f"{'':>6}  hint: {escape(c.hint)}", highlight=False)
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
    from pgrunbook.backup.copy import backup_with_copies

    st = _state()
    env = st.env(env_name)
    with st.output.progress(f"backup {env.name}") as progress:
        m, copies = backup_with_copies(env, label=label, progress=progress)
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
                "copies": copies,
            }
        )
    else:
        st.output.info(
            f"backup of {m.database} ({m.environment}): {human_size(m.size)} in {m.duration_s:.1f}s, "
            f"{len(m.tables)} tables, {sum(t.rows for t in m.tables)} rows -> {location}"
        )
        click.echo(m.id)


@backup.command("copy")
@click.argument("backup_id")
@env_option
@click.option(
    "--to", "destination", required=True, metavar="STORAGE", help="a folder, file:///path or s3://bucket/prefix"
)
@json_option
@handle_errors
def backup_copy(backup_id: str, env_name: str | None, destination: str) -> None:
    """Copy a backup to a second storage, verified there before its manifest is written."""
    from pgrunbook.backup.copy import copy_backup

    st = _state()
    env = st.env(env_name)
    m = copy_backup(env, backup_id, destination)
    destination = redact(destination, _secrets())
    if st.json_mode:
        st.output.emit_json(
            {
                "id": m.id,
                "from": env.storage.display,
                "to": destination,
                "size": m.size,
                "sha256": m.sha256,
                "verified": True,
            }
        )
    else:
        click.echo(f"copied {m.id} ({human_size(m.size)}) to {destination}; sha256 verified there")


@backup.command("list")
@env_option
@json_option
@handle_errors
def backup_list(env_name: str | None) -> None:
    """Backups of an environment: size, age, label, migration head, verified state."""
    st = _state()
    env = st.env(env_name)
    scan = env.repository.scan()
    manifests = scan.ours
    note = scan.foreign_note()
    if note:
        click.echo(f"note: {note} in {env.storage.display}/{env.name}", err=True)
    if scan.unreadable:
        click.echo(
            f"warning: {len(scan.unreadable)} backup(s) with an unreadable manifest not listed; "
            "pgrunbook doctor names them",
            err=True,
        )
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
        st.output.info(escape(f"no backups of environment {env.name!r} in {env.storage.display}"))
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
        if m.verified and m.drill_problem is not None:  # sound backup; the drill server had a problem
            verified += " (drill could not run)"
        table.add_row(m.id, m.label, human_age(m.created_at), human_size(m.size), head, verified)
    st.output.out.print(table)


@backup.command("verify")
@click.argument("backup_id")
@env_option
@click.option("--drill", is_flag=True, help="also restore into a scratch database and compare row counts")
@restore_options
@json_option
@handle_errors
def backup_verify(
    backup_id: str,
    env_name: str | None,
    drill: bool,
    owner: str | None,
    skip_missing_roles: bool,
    skip_superuser_objects: bool,
) -> None:
    """Checksum and table of contents; --drill restores into a scratch database too."""
    from pgrunbook.backup.verify import verify_backup

    st = _state()
    env = st.env(env_name)
    options = _restore_options(owner, skip_missing_roles, skip_superuser_objects)
    with st.output.progress(f"verify {backup_id}") as progress:
        result = verify_backup(env, backup_id, drill_restore=drill, progress=progress, options=options)
    if st.json_mode:
        st.output.emit_json(result.to_dict())
    else:
        for c in result.checks:
            mark = "[green]ok[/]" if c.ok else "[red]FAIL[/]"
            st.output.out.print(f"{mark:>14}  {escape(c.name)}: {escape(c.detail)}", highlight=False)
        st.output.out.print(f"{backup_id}: {'verified' if result.ok else 'FAILED verification'}", highlight=False)
    if not result.recorded:
        click.echo(
            f"warning: the result above was not recorded in the backup's manifest: {redact(result.not_recorded)}",
            err=True,
        )
        click.echo(
            "hint: the checks ran and stand as printed; make the storage writable and verify again to record "
            "them (backup list and check show the last recorded verification)",
            err=True,
        )
    if not result.ok:
        if not st.json_mode:
            if result.damaged or (result.cause or {}).get("where") == "archive":
                click.echo(f"error: backup {backup_id} failed verification; do not rely on it", err=True)
                click.echo(
                    "hint: take a new backup (pgrunbook backup create) and find out what damaged this one", err=True
                )
            else:  # the backup passed its own checks: the drill server or the definition is the problem
                cause = result.cause or {}
                click.echo(f"error: the drill could not restore {backup_id}: {cause.get('message', '')}", err=True)
                click.echo(
                    f"hint: {cause.get('hint') or 'see the checks above'}; the backup itself passed its checks "
                    "(size, checksum, frames, table of contents)",
                    err=True,
                )
        sys.exit(EXIT_FAILURE)
    if not result.recorded:
        sys.exit(EXIT_NEGATIVE)


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
    if report.foreign_note:
        click.echo(f"note: {report.foreign_note}; they were not considered and nothing of them was removed", err=True)
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


# --- migrations --------------------------------------------------------------------------------------


@cli.command()
@env_option
@json_option
@handle_errors
def status(env_name: str | None) -> None:
    """Prisma migration status. Exit 0 up to date, 1 pending, 2 failed or inconsistent."""
    from pgrunbook.prisma.engine import migration_status

    st = _state()
    env = st.env(env_name)
    result = migration_status(env)
    if st.json_mode:
        st.output.emit_json(result.to_dict())
        sys.exit(result.exit_code)
    out = st.output.out
    out.print(
        escape(f"{len(result.applied)} migrations applied in {env.name} ({env.config.migrations_dir})"), highlight=False
    )
    sections = [
        ("pending", result.pending, "yellow"),
        ("failed", result.failed, "red"),
        ("modified after apply", result.modified, "red"),
        ("applied but missing locally", result.missing_locally, "red"),
        ("folder without migration.sql", result.without_script, "red"),
    ]
    for title, names, colour in sections:
        for name in names:
            out.print(f"[{colour}]{title:>28}[/]  {escape(name)}", highlight=False)
    for index, fix in result.invalid_indexes:
        out.print(f"[yellow]{'invalid index':>28}[/]  {escape(index)}: clean up with {escape(fix)}", highlight=False)
    if result.exit_code == 0:
        out.print("Database schema is up to date!", highlight=False)
    elif result.failed:
        out.print(
            f"hint: after fixing the cause: pgrunbook migrate resolve --rolled-back {result.failed[0]} "
            f"(or --applied if completed by hand)",
            highlight=False,
        )
    elif result.pending and not result.inconsistent:
        out.print("hint: pgrunbook migrate deploy applies them (pgrunbook deploy in production)", highlight=False)
    sys.exit(result.exit_code)


@cli.group()
def migrate() -> None:
    """Prisma-compatible migrations: deploy, resolve, lint."""


@migrate.command("deploy")
@env_option
@click.option("--dry-run", is_flag=True, help="print the plan, apply nothing")
@click.option("--confirm", metavar="DBNAME", help="on a protected environment without a fresh verified backup")
@json_option
@handle_errors
def migrate_deploy_cmd(env_name: str | None, dry_run: bool, confirm: str | None) -> None:
    """Apply pending migrations in order, exactly as prisma migrate deploy does."""
    from pgrunbook.procedures.migrate import migrate

    st = _state()
    env = st.env(env_name)

    def progress(event: str, name: str, seconds: float | None) -> None:
        if not st.output.interactive:
            return  # quiet when piped: the summary line or --json carries the result
        if event == "start":
            st.output.info(f"applying {escape(name)} …")
        elif event == "ok":
            st.output.info(f"  [green]applied[/] {escape(name)} in {seconds:.2f}s")
        else:
            st.output.info(f"  [red]FAILED[/] {escape(name)} after {seconds:.2f}s")

    report = migrate(env, dry_run=dry_run, confirm=confirm, progress=progress)
    for w in report.warnings:
        st.output.info(f"[yellow]warning:[/] {escape(w)}")
    if st.json_mode:
        st.output.emit_json(report.to_dict())
        return
    if dry_run:
        if report.pending:
            click.echo(f"{len(report.pending)} pending migration(s) would be applied, in this order:")
            for name in report.pending:
                click.echo(f"  {name}")
        else:
            click.echo("nothing to apply: the database is up to date")
    elif report.applied:
        click.echo(f"applied {len(report.applied)} migration(s): {', '.join(a.name for a in report.applied)}")
    else:
        click.echo("nothing to apply: the database is up to date")


@migrate.command("resolve")
@env_option
@click.option("--applied", "applied", metavar="NAME", help="record NAME as applied (baseline, or finished by hand)")
@click.option("--rolled-back", "rolled_back", metavar="NAME", help="record the failed NAME as rolled back")
@json_option
@handle_errors
def migrate_resolve_cmd(env_name: str | None, applied: str | None, rolled_back: str | None) -> None:
    """As prisma migrate resolve: mark a migration applied or a failed one rolled back."""
    from pgrunbook.prisma.engine import resolve_applied, resolve_rolled_back

    if bool(applied) == bool(rolled_back):
        raise PgRunbookError("give exactly one of --applied NAME or --rolled-back NAME", exit_code=EXIT_USAGE)
    st = _state()
    env = st.env(env_name)
    if applied:
        resolve_applied(env, applied)
        message = f"migration {applied} marked as applied"
    else:
        assert rolled_back is not None
        resolve_rolled_back(env, rolled_back)
        message = f"migration {rolled_back} marked as rolled back"
    if st.json_mode:
        st.output.emit_json({"ok": True, "applied": applied, "rolled_back": rolled_back})
    else:
        click.echo(message)


@migrate.command("lint")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@env_option
@click.option("--all", "all_", is_flag=True, help="lint every migration, not only the pending ones")
@json_option
@handle_errors
def migrate_lint_cmd(paths: tuple[Path, ...], env_name: str | None, all_: bool) -> None:
    """Flag dangerous operations (locks, rewrites, data loss) with the safe alternative.

    Without PATHs: the pending migrations of the environment (all of them with --all, or when the
    database cannot be reached). Exit 0 clean, 1 warnings only, 2 errors.
    """
    from pgrunbook.prisma.lint import lint_files, migration_files

    st = _state()
    files, scope = migration_files(st.config, list(paths), env_name, all_)
    from pgrunbook.prisma.splitter import config_splits

    findings = lint_files(
        files, engine=st.config.migrate.engine, root=st.config.migrations_dir, split=config_splits(st.config)
    )
    code = 2 if any(f.severity == "error" for f in findings) else (1 if findings else 0)
    if st.json_mode:
        st.output.emit_json({"scope": scope, "files": len(files), "findings": [f.to_dict() for f in findings]})
        sys.exit(code)
    colour = {"error": "red", "warning": "yellow"}
    for f in findings:
        st.output.out.print(
            f"{escape(f.file)}:{f.line}: [{colour[f.severity]}]{f.severity}[/] "
            f"{escape('[' + f.rule + ']')} {escape(f.what)}",
            highlight=False,
        )
        st.output.out.print(f"    why: {escape(f.why)}\n    instead: {escape(f.instead)}", highlight=False)
    st.output.info(f"{len(files)} file(s) linted ({scope}): {len(findings)} finding(s)")
    sys.exit(code)


# --- restore, health, rollback, runs -----------------------------------------------------------------


def _journal(env: Environment) -> Journal:
    from pgrunbook.journal import Journal, journal_path

    secrets: list[str] = _secrets()
    with contextlib.suppress(PgRunbookError):
        secrets += env.target().secrets()
    return Journal(journal_path(env.config), secrets)


def _print_steps(st: State, steps: list[dict[str, Any]]) -> None:
    if st.output.live_steps and sys.stdout.isatty():
        return  # the terminal showed each step as it ran
    for step in steps:
        st.output.out.print(step_line(step), highlight=False)


@contextlib.contextmanager
def _live(st: State, journal: Journal, description: str) -> Iterator[ProgressFn]:
    """On a terminal, a procedure shows each step as it starts and ends, and bars for its long steps
    (backup, restore): at 2 a.m. a silent minute reads as a hang. Quiet with --json or without one."""
    with st.output.progress(description) as progress:
        if st.output.interactive:
            journal.on_step = st.output.show_step
            st.output.live_steps = True
        try:
            yield progress
        finally:
            journal.on_step = None


@cli.command()
@click.argument("backup_id")
@env_option
@click.option("--into", "into", metavar="NEWDB", help="restore into this new (or empty) database: the preferred path")
@click.option("--in-place", is_flag=True, help="replace the environment's database: the risky path")
@click.option("--confirm", metavar="DBNAME", help="with --in-place: the exact name of the database replaced")
@click.option("--point-app", is_flag=True, help="with --into: run the point_app hook, then health")
@click.option("--keep-maintenance-on-failure", is_flag=True, help="with --in-place: stay in maintenance if it fails")
@restore_options
@json_option
@handle_errors
def restore(
    backup_id: str,
    env_name: str | None,
    into: str | None,
    in_place: bool,
    confirm: str | None,
    point_app: bool,
    keep_maintenance_on_failure: bool,
    owner: str | None,
    skip_missing_roles: bool,
    skip_superuser_objects: bool,
) -> None:
    """Restore a backup into a new database (checked first, verified after), or in place."""
    from pgrunbook.procedures.restore import restore as run_restore

    if bool(into) == in_place:
        raise PgRunbookError("give exactly one of --into NEWDB or --in-place --confirm DBNAME", exit_code=EXIT_USAGE)
    st = _state()
    env = st.env(env_name)
    options = _restore_options(owner, skip_missing_roles, skip_superuser_objects)
    journal = _journal(env)
    try:
        with _live(st, journal, f"restore {backup_id}") as progress:
            report, run_id = run_restore(
                env,
                journal,
                backup_id,
                into=into,
                confirm=confirm,
                point=point_app,
                keep_maintenance_on_failure=keep_maintenance_on_failure,
                options=options,
                progress=progress,
            )
    except BaseException:
        rec = journal.get(journal.started[-1]) if journal.started else None
        if rec and rec.recovery and not st.json_mode:
            click.echo(f"recovery: {rec.recovery}", err=True)
        raise
    if st.json_mode:
        st.output.emit_json({**report.to_dict(), "run_id": run_id})
        return
    st.output.info(
        f"restored {report.backup_id} into {report.database} in {report.duration_s:.1f}s "
        f"({report.method}); row counts equal the manifest"
    )
    if report.cleared_unfinished:
        st.output.info(
            f"replaced {report.database}, left by an interrupted restore and never used "
            f"({report.cleared_unfinished.removeprefix('pgrunbook: ')})"
        )
    for check in report.checks:
        if check.name == "owners and privileges":
            st.output.info(f"owners and privileges: {check.detail}")
    for line in report.skipped:
        st.output.info(f"left out: {line}")
    if report.replaced_database:
        st.output.info(
            f"the previous database is kept as {report.replaced_database}; "
            f"pre-restore backup {report.pre_restore_backup}"
        )
    if report.carried_over:
        st.output.info(f"carried over from the live database: {report.carried_over}")
    click.echo(report.database)


@cli.command()
@env_option
@click.option("--deadline", type=float, help="seconds to keep retrying (default: health_deadline_s)")
@click.option("--url", help="health URL (default: the environment's health_url)")
@json_option
@handle_errors
def health(env_name: str | None, deadline: float | None, url: str | None) -> None:
    """GET the health URL (JSON status: ok) and run the read query; retries until the deadline."""
    from pgrunbook.health import check_health

    st = _state()
    env = st.env(env_name)
    result = check_health(env, url=url, deadline_s=deadline)
    if st.json_mode:
        st.output.emit_json(result.to_dict())
    else:
        for c in result.checks:
            mark = "[green]ok[/]" if c.ok else f"[red]FAIL[/] ({c.kind})"
            st.output.out.print(f"{mark}  {c.name}: {escape(c.detail)}", highlight=False)
    if not result.ok:
        if not st.json_mode:
            click.echo(
                f"error: unhealthy after {result.attempts} tries in {result.duration_s:.0f}s: {result.summary}",
                err=True,
            )
        sys.exit(EXIT_FAILURE)
    if not env.settings.health_url and not url:
        st.output.info("note: no health_url configured for this environment: only the read query was checked")


@cli.command()
@env_option
@click.option("--app-only", "mode", flag_value="app-only", help="app_rollback hook, then health")
@click.option(
    "--with-db",
    "mode",
    flag_value="with-db",
    help="restore the last known-good backup into a new database, point the app, app_rollback, health",
)
@click.option(
    "--backup", "backup_id", metavar="ID", help="with --with-db: the backup (default: newest verified pre-deploy)"
)
@restore_options
@json_option
@handle_errors
def rollback(
    env_name: str | None,
    mode: str | None,
    backup_id: str | None,
    owner: str | None,
    skip_missing_roles: bool,
    skip_superuser_objects: bool,
) -> None:
    """The runbook's decision tree: restore backup + roll the app back, or roll the app back only."""
    from pgrunbook.procedures.rollback import commands, decide
    from pgrunbook.procedures.rollback import rollback as do_rollback

    st = _state()
    env = st.env(env_name)
    if mode is None:
        if st.json_mode or not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise PgRunbookError(
                "rollback needs --with-db or --app-only when not on a terminal",
                hint=" | ".join(commands(env.name)),
                exit_code=EXIT_USAGE,
            )
        wrong = click.confirm("Did the migration fail, or does the data look wrong?", default=False, err=True)
        app_only = (
            False
            if wrong
            else click.confirm("Is it an app-only regression, with no schema change?", default=False, err=True)
        )
        decision = decide(migration_failed_or_data_wrong=wrong, app_only_regression=app_only)
        st.output.info(escape(decision.reason))
        if decision.mode is None:
            for c in commands(env.name):
                st.output.info(f"  {escape(c)}")
            sys.exit(1)
        mode = decision.mode
    journal = _journal(env)
    before = {r.id for r in journal.runs(limit=1, environment=env.name)}
    try:
        with _live(st, journal, f"rollback {env.name}") as progress:
            report = do_rollback(
                env,
                journal,
                mode,  # type: ignore[arg-type]
                backup_id=backup_id,
                progress=progress,
                options=_restore_options(owner, skip_missing_roles, skip_superuser_objects),
            )
    except PgRunbookError:
        if not st.json_mode:
            # only this rollback's own run: a refusal before it started must never show an earlier run's
            # steps and recovery SQL as if they were this one's (running that SQL would undo a restore)
            last = [r for r in journal.runs(limit=1, environment=env.name) if r.id not in before]
            if last and last[0].kind == "rollback":
                _print_steps(st, [s.to_dict() for s in last[0].steps])
                if last[0].recovery:
                    click.echo(f"recovery: {last[0].recovery}", err=True)
        raise
    if st.json_mode:
        st.output.emit_json(report.to_dict())
        return
    _print_steps(st, report.steps)
    if report.database:
        st.output.out.print(
            f"app now on {report.database} (backup {report.backup_id}); {report.replaced_database} kept untouched",
            highlight=False,
        )
    st.output.out.print(f"rollback {report.run_id}: {report.outcome}", highlight=False)


@cli.command()
@env_option
@click.option("--limit", default=20, show_default=True)
@json_option
@handle_errors
def runs(env_name: str | None, limit: int) -> None:
    """The journal: every operation, its steps, timings, outcome, who ran it. Newest first."""
    from pgrunbook.journal import Journal, journal_path

    st = _state()
    path = journal_path(st.config)
    records = Journal(path).runs(limit=limit, environment=env_name) if path.exists() else []
    if st.json_mode:
        st.output.emit_json([r.to_dict() for r in records])
        return
    if not records:
        st.output.info(escape(f"no runs recorded in {path}"))
    for r in records:
        st.output.out.print(
            f"[bold]{r.id}[/]  {r.kind} {r.environment}  {r.outcome}  by {r.user}@{r.host}  {r.started_at}",
            highlight=False,
        )
        _print_steps(st, [s.to_dict() for s in r.steps])
        if r.outcome not in ("succeeded", "rolled_back") and r.recovery:
            st.output.out.print(f"      recovery: {escape(r.recovery)}", highlight=False)


# --- deploy ------------------------------------------------------------------------------------------


@cli.command()
@env_option
@click.option("--auto-rollback", is_flag=True, help="on failure, run the decision tree's rollback automatically")
@click.option("--outside-window", is_flag=True, help="deploy outside the environment's quiet window")
@click.option("--allow-lint", multiple=True, metavar="RULE", help="accept this lint rule's errors (repeatable)")
@click.option("--skip-staging-check", is_flag=True, help="do not require staging to have the migrations first")
@click.option("--keep-maintenance-on-failure", is_flag=True, help="stay in maintenance when the deploy fails")
@click.option("--resume", "resume_id", metavar="RUN_ID", help="continue an interrupted deploy")
@click.option("--rollback", "roll_back", is_flag=True, help="with --resume: roll the interrupted deploy back")
@json_option
@handle_errors
def deploy(
    env_name: str | None,
    auto_rollback: bool,
    outside_window: bool,
    allow_lint: tuple[str, ...],
    skip_staging_check: bool,
    keep_maintenance_on_failure: bool,
    resume_id: str | None,
    roll_back: bool,
) -> None:
    """The production migration procedure: preflight, maintenance on, verified pre-deploy backup,
    migrate, health, maintenance off — journaled, with the rollback decision tree on failure."""
    from pgrunbook.procedures.deploy import DeployFailed, DeployOptions, resume
    from pgrunbook.procedures.deploy import deploy as run_deploy

    if roll_back and not resume_id:
        raise PgRunbookError("--rollback goes with --resume RUN_ID", exit_code=EXIT_USAGE)
    st = _state()
    env = st.env(env_name)
    journal = _journal(env)
    opts = DeployOptions(
        auto_rollback=auto_rollback,
        outside_window=outside_window,
        allow_lint=allow_lint,
        skip_staging_check=skip_staging_check,
        keep_maintenance_on_failure=keep_maintenance_on_failure,
    )
    try:
        with _live(st, journal, f"deploy {env.name}") as progress:
            opts.progress = progress
            if resume_id:
                report = resume(env, journal, resume_id, opts, roll_back=roll_back)
            else:
                report = run_deploy(env, journal, opts)
    except DeployFailed as exc:
        if st.json_mode:
            st.output.emit_json(exc.report.to_dict())
        else:
            _print_deploy(st, exc.report)
        raise
    if st.json_mode:
        st.output.emit_json(report.to_dict())
    else:
        _print_deploy(st, report)


def _print_deploy(st: State, report: Any) -> None:
    _print_steps(st, report.steps)
    for w in report.warnings:
        st.output.out.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    if report.maintenance_window_s is not None:
        st.output.out.print(f"maintenance window: {report.maintenance_window_s:.1f}s", highlight=False)
    if report.database:
        st.output.out.print(
            f"app now on {report.database} (pre-deploy backup {report.backup_id}); "
            f"{report.replaced_database} kept for forensics",
            highlight=False,
        )
    st.output.out.print(f"deploy {report.run_id}: {report.outcome}", highlight=False)


@cli.command()
@click.argument("env_a")
@click.argument("env_b")
@json_option
@handle_errors
def drift(env_a: str, env_b: str) -> None:
    """Migration-history and live-schema differences between two environments. Exit 1 on drift."""
    from pgrunbook.drift import compare_environments

    st = _state()
    result = compare_environments(st.env(env_a), st.env(env_b))
    if st.json_mode:
        st.output.emit_json(result.to_dict())
    else:
        for title, items in (("history", result.history), ("schema", result.schema)):
            for item in items:
                st.output.out.print(f"[red]{title}[/]  {escape(item)}", highlight=False)
        for note in result.notes:  # differences the server majors bring, shown apart
            st.output.out.print(f"[dim]note[/]  {escape(note)}", highlight=False)
        if result.aligned:
            st.output.out.print(
                f"{env_a} and {env_b} are aligned: same migration history, same schema", highlight=False
            )
        else:
            st.output.out.print(
                f"{len(result.history)} history and {len(result.schema)} schema difference(s)", highlight=False
            )
    sys.exit(0 if result.aligned else 1)


# --- monitoring --------------------------------------------------------------------------------------


@cli.command()
@click.option("--env", "env_names", multiple=True, metavar="NAME", help="only these environments (default: all)")
@click.option(
    "--prometheus",
    "prom_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="write the metrics to this textfile (node_exporter's textfile collector)",
)
@json_option
@handle_errors
def check(env_names: tuple[str, ...], prom_file: Path | None) -> None:
    """Backup freshness, last drill, retention, failed migrations, storage. Exit 0 ok, 1 warning, 2 critical."""
    from pgrunbook.monitor.check import check as check_and_notify

    st = _state()
    report = check_and_notify(st.config, list(env_names) or None, prometheus=prom_file)
    if st.json_mode:
        st.output.emit_json(report.to_dict())
    else:
        colour = {"ok": "green", "warning": "yellow", "critical": "red"}
        for e in report.environments:
            for f in e.findings:
                st.output.out.print(
                    f"[{colour[f.status]}]{f.status:>8}[/]  {e.environment}: {f.name}: {escape(f.detail)}",
                    highlight=False,
                )
        st.output.out.print(f"check: {report.status}", highlight=False)
    sys.exit({"ok": 0, "warning": 1, "critical": 2}[report.status])


@cli.command()
@click.option("--host", default=None, help="address to bind (default [serve] host, 127.0.0.1); others need the token")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=None, help="port (default [serve] port, 8765; 0 picks a free one)"
)
@json_option
@handle_errors
def serve(host: str | None, port: int | None) -> None:
    """Run the schedule, checks and notifications; serve /metrics, /healthz and the status page."""
    import json as jsonlib
    import signal
    import threading

    from pgrunbook.monitor.serve import Service

    st = _state()
    secrets = _secrets()
    quiet = st.json_mode or not sys.stderr.isatty()

    def log(event: dict[str, object]) -> None:
        if quiet:
            click.echo(redact(jsonlib.dumps(event, default=str), secrets), err=True)
            return
        what = event.get("event")
        if what == "job":
            text = f"{event['environment']}/{event['job']}: {event['what']} {event.get('detail', '')}"
        elif what == "check":
            sent = event.get("notified") or []
            text = f"check: {event['status']}" + (f" (notified {', '.join(sent)})" if sent else "")  # type: ignore[arg-type]
        elif what == "listening":
            text = f"pgrunbook serve: listening on {event['url']} ({len(event['jobs'])} scheduled jobs)"  # type: ignore[arg-type]
        else:
            text = " ".join(f"{k}={v}" for k, v in event.items())
        click.echo(redact(text, secrets), err=True)

    service = Service(st.config, log=log, secrets=secrets, host=host, port=port)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    service.start()
    done.wait()
    log({"event": "stopping", "running_jobs": service.scheduler.running()})
    service.stop()


@cli.command()
@click.option(
    "--print",
    "kind",
    required=True,
    type=click.Choice(["cron", "systemd", "kubernetes"]),
    help="the platform to print a schedule for",
)
@handle_errors
def schedule(kind: str) -> None:
    """Print ready-to-use backup, prune and drill schedules ([schedule] in pgrunbook.toml)."""
    import shutil

    from pgrunbook.monitor.schedule import config_jobs, render

    st = _state()
    cfg = st.config
    exe = shutil.which("pgrunbook") or "pgrunbook"
    config_path = str(cfg.source or (cfg.root / "pgrunbook.toml"))
    try:
        text = render(
            kind,
            config_jobs(cfg),
            exe,
            config_path,
        )
    except ValueError as exc:
        raise PgRunbookError(
            str(exc), hint="use 5-field cron expressions in [schedule]", exit_code=EXIT_USAGE
        ) from None
    click.echo(text, nl=False)


# --- demo --------------------------------------------------------------------------------------------


@cli.command()
@click.option("--rows", default=20000, show_default=True, help="orders in the sample database")
@json_option
@handle_errors
def demo(rows: int) -> None:
    """The runbook end to end on a throwaway local PostgreSQL cluster, cleaned up afterwards."""
    from pgrunbook.cli.demo import run_demo

    st = _state()
    summary = run_demo(st.output, rows=rows)
    if st.json_mode:
        st.output.emit_json(summary)


def main() -> None:
    cli(prog_name="pgrunbook")
