"""The commands status and migrate deploy, resolve, lint:
each parses its options, calls one library function and renders."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pgrunbook.cli.app import cli, env_option, handle_errors, json_option, state
from pgrunbook.cli.render import escape
from pgrunbook.errors import EXIT_USAGE, PgRunbookError


@cli.command()
@env_option
@json_option
@handle_errors
def status(env_name: str | None) -> None:
    """Prisma migration status. Exit 0 up to date, 1 pending, 2 failed or inconsistent."""
    from pgrunbook.prisma.engine import migration_status
    from pgrunbook.prisma.status import elsewhere_warning, resolve_hint

    st = state()
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
            error = f": {result.errors[name]}" if title == "failed" and name in result.errors else ""
            out.print(f"[{colour}]{title:>28}[/]  {escape(name + error)}", highlight=False)
    by = result.running_by or {}
    for name in result.running:
        who = f"pid {by.get('pid')} ({by.get('application_name') or 'no application_name'}) since {by.get('since')}"
        out.print(f"[yellow]{'running':>28}[/]  {escape(name)}: being applied now by {escape(who)}", highlight=False)
    elsewhere = elsewhere_warning(env.target().schema, result.history_elsewhere, env.target().variable)
    if elsewhere is not None:
        out.print(f"[yellow]warning:[/] {escape(elsewhere)}", highlight=False)
    for index, fix in result.invalid_indexes:
        out.print(f"[yellow]{'invalid index':>28}[/]  {escape(index)}: clean up with {escape(fix)}", highlight=False)
    if result.exit_code == 0:
        out.print("Database schema is up to date!", highlight=False)
    elif result.failed:
        name = result.failed[0]
        out.print(
            escape(f"hint: {resolve_hint(name, outcome_unknown=name in result.outcome_unknown)}"), highlight=False
        )
    elif result.running:
        out.print(
            f"hint: wait for {result.running[0]} to finish, then pgrunbook status again; do not resolve it while it "
            "runs",
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

    st = state()
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
    if report.role_note and report.run_as is not None:  # who the scripts ran as, when not the connecting role
        st.output.info(escape(report.role_note))
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
    st = state()
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
    from pgrunbook.prisma.lint import lint_files
    from pgrunbook.prisma.lint_scope import migration_files

    st = state()
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
