"""``pgrunbook restore``: a restore into a new database (optionally pointing the app at it) or in place,
journaled as one run."""

from __future__ import annotations

from pgrunbook.backup.method import RestoreReport
from pgrunbook.backup.preflight import RestoreOptions
from pgrunbook.environment import Environment
from pgrunbook.errors import BackupNotFound, Stopped
from pgrunbook.journal import Journal
from pgrunbook.procedures.point_app import restore_into_and_point
from pgrunbook.procedures.restore_in_place import restore_in_place
from pgrunbook.progress import ProgressFn, no_progress


def restore(
    env: Environment,
    journal: Journal,
    backup_id: str,
    *,
    into: str | None = None,
    confirm: str | None = None,
    point: bool = False,
    keep_maintenance_on_failure: bool = False,
    options: RestoreOptions | None = None,
    progress: ProgressFn = no_progress,
) -> tuple[RestoreReport, str]:
    """Restore ``backup_id`` into the new database ``into`` (with ``point``: then the point_app hook and
    health), or in place when ``into`` is None (``confirm``: the live database's name); ``options``:
    owners, roles and superuser objects (backup/preflight.py). Returns the
    report and the journal run's id. Any failure ends the run as failed (its recovery note stays in
    the journal) and is raised again."""
    backup_id = resolve_backup(env, backup_id, in_place=into is None)
    run = journal.start("restore", env.name, {"backup": backup_id, "into": into, "in_place": into is None})
    try:
        if into is None:
            report = restore_in_place(
                env,
                backup_id,
                confirm=confirm,
                run=run,
                progress=progress,
                keep_maintenance_on_failure=keep_maintenance_on_failure,
                options=options,
            )
        else:
            report = restore_into_and_point(
                env, backup_id, into, run=run, progress=progress, point=point, options=options
            )
    except BaseException as exc:
        run.finish("failed", str(getattr(exc, "message", exc)))
        if isinstance(exc, Stopped) and into is not None:
            exc.note(hint=f"run the same restore again: pgrunbook restore {backup_id} --into {into} --env {env.name}")
        raise
    try:
        run.finish("succeeded", report.next_step or "")
    except Stopped as exc:  # the journal write after the work: the run did succeed, and is recorded so
        run.finish("succeeded", report.next_step or "")
        exc.note(*finished_note(report))
        raise
    return report, run.id


def finished_note(report: RestoreReport) -> tuple[str, str]:
    """A stop that arrives once the restore has finished (its journal write, its output): nothing was
    undone, and the error line says so rather than "nothing half-done is kept"."""
    return (
        f"it came after the restore had finished: {report.database} holds backup {report.backup_id}, "
        "verified, and is kept",
        "nothing to redo; pgrunbook runs shows the run" + (f"; next: {report.next_step}" if report.next_step else ""),
    )


def resolve_backup(env: Environment, backup_id: str, *, in_place: bool) -> str:
    """The fixed id a restore restores, resolved once before anything runs: an in-place restore takes a
    pre-restore backup first, which ``latest`` would name if it were resolved again later. For an
    in-place restore ``latest`` never names a pre-restore backup (the state before an earlier in-place
    restore: restoring it would undo that restore); named by its id, one is restored. Nor does it
    name a backup only presumed this database's (repository.ownership_doubt). Other ids are returned
    as given (checked where they are read). Raises BackupNotFound."""
    if backup_id != "latest":
        return backup_id
    skip = ("pre-restore",) if in_place else ()
    chosen = env.repository.latest(skip_labels=skip).id
    doubt = env.repository.ownership_doubt() if in_place else None
    if doubt is not None:  # replacing the live database on a presumption: only when named by id
        raise BackupNotFound(
            f"restore latest --in-place refused: the newest backup, {chosen}, may not be database "
            f"{env.owner.database}'s: {doubt}; nothing was changed",
            hint=f"check it (pgrunbook backup list), then name it: pgrunbook restore {chosen} --in-place "
            f"--confirm {env.owner.database}; projects sharing a folder each need their own [project] id",
        )
    return chosen
