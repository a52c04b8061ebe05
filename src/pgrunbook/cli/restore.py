"""The commands restore (into a new database, or in place):
each parses its options, calls one library function and renders."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pgrunbook.cli.app import (
    State,
    cli,
    env_option,
    handle_errors,
    json_option,
    live_steps,
    make_restore_options,
    open_journal,
    restore_options,
    state,
)
from pgrunbook.cli.render import escape
from pgrunbook.errors import EXIT_USAGE, PgRunbookError, Stopped

if TYPE_CHECKING:
    from pgrunbook.backup.method import RestoreReport


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
    st = state()
    env = st.env(env_name)
    options = make_restore_options(owner, skip_missing_roles, skip_superuser_objects)
    journal = open_journal(env)
    try:
        with live_steps(st, journal, f"restore {backup_id}") as progress:
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
    try:
        _show(st, report, run_id)
    except Stopped as exc:  # the restore is done and recorded: the error line says so
        from pgrunbook.procedures.restore import finished_note

        exc.note(*finished_note(report))
        raise


def _show(st: State, report: RestoreReport, run_id: str) -> None:
    if st.json_mode:
        st.output.emit_json({**report.to_dict(), "run_id": run_id})
        return
    st.output.info(
        f"restored {report.backup_id} into {report.database} in {report.duration_s:.1f}s "
        f"({report.method}); row counts equal the manifest"
    )
    if report.cleared_unfinished:
        st.output.info(
            f"replaced {report.database}, left by an interrupted restore and not in use "
            f"({report.cleared_unfinished.removeprefix('pgrunbook: ')})"
        )
    for check in report.checks:
        if check.name == "owners and privileges":
            st.output.info(f"owners and privileges: {check.detail}")
    if report.next_step:
        st.output.info(escape(f"next: {report.next_step}"))
    for warning in report.warnings:
        st.output.info(f"[yellow]warning:[/] {escape(warning)}")
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
