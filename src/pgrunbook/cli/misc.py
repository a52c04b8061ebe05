"""The commands init, doctor, health, drift, demo:
each parses its options, calls one library function and renders."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pgrunbook.cli.app import cli, env_option, handle_errors, json_option, state
from pgrunbook.cli.render import escape
from pgrunbook.errors import EXIT_FAILURE


@cli.command()
@click.option("--force", is_flag=True, help="overwrite an existing pgrunbook.toml")
@json_option
@handle_errors
def init(force: bool) -> None:
    """Write a commented pgrunbook.toml here from the project's Prisma files (prisma.config.ts, package.json)."""
    from pgrunbook.init import migrations_setting, missing_migrations_note, write_config

    path = write_config(Path.cwd(), force=force)
    note = missing_migrations_note(Path.cwd())
    st = state()
    if st.json_mode:
        st.output.emit_json(
            {"path": str(path), "migrations": migrations_setting(Path.cwd()), "migrations_found": note is None}
        )
    else:
        click.echo(f"wrote {path}")
        if note:
            click.echo(f"note: {note}", err=True)


@cli.command()
@env_option
@json_option
@handle_errors
def doctor(env_name: str | None) -> None:
    """Check config, connectivity, client tools, storage, free space and Prisma history."""
    from pgrunbook.doctor import exit_code, run_doctor

    st = state()
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


@cli.command()
@env_option
@click.option("--deadline", type=float, help="seconds to keep retrying (default: health_deadline_s)")
@click.option("--url", help="health URL (default: the environment's health_url)")
@json_option
@handle_errors
def health(env_name: str | None, deadline: float | None, url: str | None) -> None:
    """GET the health URL (JSON status: ok) and run the read query; retries until the deadline."""
    from pgrunbook.health import check_health

    st = state()
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
@click.argument("env_a")
@click.argument("env_b")
@json_option
@handle_errors
def drift(env_a: str, env_b: str) -> None:
    """Migration-history and live-schema differences between two environments. Exit 1 on drift."""
    from pgrunbook.drift import compare_environments

    st = state()
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


@cli.command()
@click.option("--rows", default=20000, show_default=True, help="orders in the sample database")
@json_option
@handle_errors
def demo(rows: int) -> None:
    """The runbook end to end on a throwaway local PostgreSQL cluster, cleaned up afterwards."""
    from pgrunbook.cli.demo import run_demo

    st = state()
    summary = run_demo(st.output, rows=rows)
    if st.json_mode:
        st.output.emit_json(summary)
