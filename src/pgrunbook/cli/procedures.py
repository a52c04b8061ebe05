"""The commands deploy, rollback, runs (the journal):
each parses its options, calls one library function and renders."""

from __future__ import annotations

import sys
from typing import Any

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
    print_steps,
    restore_options,
    state,
)
from pgrunbook.cli.render import escape
from pgrunbook.errors import EXIT_USAGE, PgRunbookError, Stopped


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

    st = state()
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
    journal = open_journal(env)
    before = {r.id for r in journal.runs(limit=1, environment=env.name)}
    try:
        with live_steps(st, journal, f"rollback {env.name}") as progress:
            report = do_rollback(
                env,
                journal,
                mode,  # type: ignore[arg-type]
                backup_id=backup_id,
                progress=progress,
                options=make_restore_options(owner, skip_missing_roles, skip_superuser_objects),
            )
    except PgRunbookError as exc:
        if st.json_mode and exc.report is not None:  # the run started and failed: its report, as deploy's
            st.output.emit_json(exc.report.to_dict())
        if not st.json_mode:
            # only this rollback's own run: a refusal before it started must never show an earlier run's
            # steps and recovery SQL as if they were this one's (running that SQL would undo a restore)
            last = [r for r in journal.runs(limit=1, environment=env.name) if r.id not in before]
            if last and last[0].kind == "rollback":
                print_steps(st, [s.to_dict() for s in last[0].steps])
                if last[0].recovery:
                    click.echo(f"recovery: {last[0].recovery}", err=True)
        raise
    if st.json_mode:
        st.output.emit_json(report.to_dict())
        return
    print_steps(st, report.steps)
    for w in report.warnings:
        st.output.out.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    if report.maintenance_window_s is not None:
        st.output.out.print(f"maintenance window: {report.maintenance_window_s:.1f}s", highlight=False)
    if report.database and report.replaced_database:
        st.output.out.print(
            f"app now on {report.database} (backup {report.backup_id}); {report.replaced_database} kept",
            highlight=False,
        )
    elif report.database:
        st.output.out.print(
            f"{report.database} holds backup {report.backup_id}, restored and verified; the app was not pointed at it",
            highlight=False,
        )
    if report.next_step:
        st.output.out.print(f"[bold]next:[/] {escape(report.next_step)}", highlight=False)
    st.output.out.print(f"rollback {report.run_id}: {report.outcome}", highlight=False)


@cli.command()
@env_option
@click.option("--limit", default=20, show_default=True)
@json_option
@handle_errors
def runs(env_name: str | None, limit: int) -> None:
    """The journal: every operation, its steps, timings, outcome, who ran it. Newest first."""
    from pgrunbook.journal import Journal, journal_path

    st = state()
    path = journal_path(st.config)
    records = Journal(path).runs(limit=limit, environment=env_name) if path.exists() else []
    if st.json_mode:
        st.output.emit_json([r.to_dict() for r in records])
        return
    if not records:
        st.output.info(escape(f"no runs recorded in {path}"))
    for r in records:
        outcome = f"{r.outcome} (interrupted: process {r.pid} is gone)" if r.interrupted else r.outcome
        st.output.out.print(
            f"[bold]{r.id}[/]  {r.kind} {r.environment}  {outcome}  by {r.user}@{r.host}  {r.started_at}",
            highlight=False,
        )
        print_steps(st, [s.to_dict() for s in r.steps])
        if r.detail:  # why it failed, or what is next (as --json's detail): a refused run has no steps (trial11 F2)
            st.output.out.print(f"      detail: {escape(r.detail)}", highlight=False)
        if r.outcome not in ("succeeded", "rolled_back") and r.recovery:
            st.output.out.print(f"      recovery: {escape(r.recovery)}", highlight=False)


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
    st = state()
    env = st.env(env_name)
    journal = open_journal(env)
    opts = DeployOptions(
        auto_rollback=auto_rollback,
        outside_window=outside_window,
        allow_lint=allow_lint,
        skip_staging_check=skip_staging_check,
        keep_maintenance_on_failure=keep_maintenance_on_failure,
    )
    try:
        with live_steps(st, journal, f"deploy {env.name}") as progress:
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
    except Stopped as exc:  # the journal knows where the deploy was and what getting back takes
        from pgrunbook.journal import where_interrupted

        rec = journal.get(journal.started[-1]) if journal.started else None
        if rec is not None:
            hit = [s.name for s in rec.steps if s.status == "failed"]  # the step the stop broke off
            where = f"at step {hit[0]}" if hit else where_interrupted(rec)
            off = any(s.name == "maintenance off" and s.status == "succeeded" for s in rec.steps)
            migrated = any(s.name == "migrate" for s in rec.steps)
            exc.within(
                f"deploy {rec.id} was stopped {where}"
                + ("" if migrated else ", before migrating: nothing was migrated")
                + ("; maintenance was turned off" if off else "")
            )
            shows = "pgrunbook runs shows the run"
            if not migrated:
                exc.note(hint=f"run the same deploy again ({shows})")
            exc.note(hint=f"{rec.recovery} ({shows})" if rec.recovery else shows)
        raise
    if st.json_mode:
        st.output.emit_json(report.to_dict())
    else:
        _print_deploy(st, report)


def _print_deploy(st: State, report: Any) -> None:
    print_steps(st, report.steps)
    for w in report.warnings:
        st.output.out.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    if report.maintenance_window_s is not None:
        st.output.out.print(f"maintenance window: {report.maintenance_window_s:.1f}s", highlight=False)
    if report.database and report.replaced_database:  # pointed: replaced_database is set only then
        st.output.out.print(
            f"app now on {report.database} (pre-deploy backup {report.backup_id}); "
            f"{report.replaced_database} kept for forensics",
            highlight=False,
        )
    elif report.database:  # restored and verified, but pointing the app failed (breaker13b N1)
        st.output.out.print(
            f"{report.database} holds pre-deploy backup {report.backup_id}, restored and verified; the app was "
            "not pointed at it",
            highlight=False,
        )
    if report.next_step:
        st.output.out.print(f"[bold]next:[/] {escape(report.next_step)}", highlight=False)
    st.output.out.print(f"deploy {report.run_id}: {report.outcome}", highlight=False)
