"""``pgrunbook restore``: a restore into a new database (optionally pointing the app at it) or in place,
journaled as one run."""

from __future__ import annotations

from pgrunbook.backup.method import RestoreReport
from pgrunbook.backup.preflight import RestoreOptions
from pgrunbook.environment import Environment, ProgressFn, no_progress
from pgrunbook.journal import Journal
from pgrunbook.procedures.point_app import restore_into_and_point
from pgrunbook.procedures.restore_in_place import restore_in_place


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
        run.finish("succeeded")
    except BaseException as exc:
        run.finish("failed", str(getattr(exc, "message", exc)))
        raise
    return report, run.id
