"""``pgrunbook restore``: a restore into a new database (optionally pointing the app at it) or in place,
journaled as one run."""

from __future__ import annotations

import shlex
import time

import psycopg

from pgrunbook.backup.method import RestoreReport, method_for
from pgrunbook.backup.preflight import RestoreOptions
from pgrunbook.backup.restore_database import database_state
from pgrunbook.backup.restore_verify import READ_QUERY_FIX
from pgrunbook.environment import Environment
from pgrunbook.errors import BackupNotFound, ConfigError, DatabaseError, PgRunbookError, ReadQueryFailed, Stopped
from pgrunbook.journal import Journal, Run
from pgrunbook.monitor.moved import app_moved
from pgrunbook.postgres.connect import connect_maintenance, connect_server, exists_on_server
from pgrunbook.postgres.database_swap import rename_database, replaced_name, sessions_on, set_aside, staging_name
from pgrunbook.postgres.names import quote_ident
from pgrunbook.postgres.url import DatabaseTarget
from pgrunbook.prisma.engine import status_in
from pgrunbook.procedures.point_app import restore_into_and_point
from pgrunbook.procedures.restore_in_place import restore_in_place
from pgrunbook.procedures.steps import free_stamp
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
    if into is None:
        refuse_lost_database(env, backup_id)
    lost = lost_own_database(env, into, backup_id, point=point) if into is not None else None
    backup_id = resolve_backup(env, backup_id, in_place=into is None, recreate=lost is not None)
    run = journal.start("restore", env.name, {"backup": backup_id, "into": into, "in_place": into is None})
    try:
        if lost:
            assert into is not None
            report = recreate(env, backup_id, into, run=run, progress=progress, options=options, aside=lost == "empty")
        elif into is None:
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
    if into is None or point or lost:  # the app now runs on what was restored
        note = behind_note(env, report.database, url_moves=into is not None and not lost)
        if note is not None:
            report.warnings.append(note)
    try:
        run.finish("succeeded", report.next_step or "")
    except Stopped as exc:  # the journal write after the work: the run did succeed, and is recorded so
        run.finish("succeeded", report.next_step or "")
        exc.note(*finished_note(report))
        raise
    return report, run.id


def lost_own_database(env: Environment, into: str, backup_id: str, *, point: bool) -> str | None:
    """Is ``into`` the environment's own database, gone from its server (disaster recovery)? "missing"
    when gone; "empty" when a database of that name holds no relation (made again after the loss, by
    hand or by an admin): the recovery sets it aside once its copy is verified (``recreate``); None
    otherwise (another name, or a database with relations: refused later as the environment's own).
    ``--point-app`` is refused for both (ConfigError: the app's URL names that database already), and
    so is an empty one something is connected to (DatabaseError: it may be in use). Raises
    DatabaseError when the server cannot be reached."""
    target = env.target(direct=True)
    if into != target.dbname:
        return None
    with _beside(target, into, f"restore {env.name}") as conn:
        # the sessions first: looking into the database opens one of pgrunbook's own, which lingers for a
        # moment after it closes (breaker14b B3: a third of the runs refused themselves for it)
        sessions = _settled_sessions(conn, into)
        state, _ = database_state(conn, target, into)
        rights = _may_rename(conn, into) if state == "empty" else None
    if state not in ("missing", "empty"):
        return None
    said = "does not exist" if state == "missing" else "is empty"
    if point:
        raise ConfigError(
            f"--point-app: {into} is the environment's own database, which {said}: the restore recreates it under "
            "the name the app's URL already names, so there is nothing to point; nothing was changed",
            hint=f"pgrunbook restore {backup_id} --into {shlex.quote(into)} --env {env.name} (without --point-app)",
        )
    if rights is not None:
        raise DatabaseError(
            f"{into} exists, empty, and belongs to {rights}: the recovery renames it aside once its copy is "
            "verified, which only its owner (or a member of that role) or a superuser may; nothing was changed",
            hint=f"as an admin: DROP DATABASE {quote_ident(into)} (it holds no table), or ALTER DATABASE "
            f"{quote_ident(into)} OWNER TO the role in {target.variable}; then run the same command",
        )
    if sessions and state == "empty":
        raise DatabaseError(
            f"{into} exists, empty, and {len(sessions)} session(s) use it ({', '.join(sessions[:3])}); the "
            "recovery puts its verified copy in place of an empty database nobody uses; nothing was changed",
            hint=f"close them (is the app connected to the empty {into}?), then run the same command",
        )
    return state


def _beside(target: DatabaseTarget, dbname: str, purpose: str) -> psycopg.Connection:
    """A connection to ``target``'s server that is not a session of ``dbname`` (its maintenance
    database), or, when the role may connect to none of them, one to the database itself."""
    try:
        return connect_maintenance(target, avoid=(dbname,), purpose=purpose)
    except DatabaseError:
        return connect_server(target, purpose=purpose)


def _settled_sessions(conn: psycopg.Connection, dbname: str, *, wait_s: float = 2.0) -> list[str]:
    """The sessions on ``dbname`` that are still there after up to ``wait_s`` seconds: a closed
    connection's backend leaves pg_stat_activity a moment after its client has gone."""
    deadline = time.monotonic() + wait_s
    while (sessions := sessions_on(conn, dbname)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return sessions


def _may_rename(conn: psycopg.Connection, dbname: str) -> str | None:
    """None when the connected role may rename database ``dbname`` (its owner, a member of the owner's
    role, or a superuser); else the owner's name."""
    row = conn.execute(
        "SELECT pg_get_userbyid(d.datdba), pg_has_role(d.datdba, 'MEMBER') OR r.rolsuper FROM pg_database d, "
        "pg_roles r WHERE d.datname = %s AND r.rolname = current_user",
        (dbname,),
    ).fetchone()
    return None if row is None or row[1] else str(row[0])


def recreate(
    env: Environment,
    backup_id: str,
    dbname: str,
    *,
    run: Run,
    progress: ProgressFn = no_progress,
    options: RestoreOptions | None = None,
    aside: bool = False,
) -> RestoreReport:
    """Disaster recovery (trial11 F18): the environment's database ``dbname`` is gone. The backup is
    restored and verified under a staging name, then renamed to ``dbname``, so the app never connects
    to a half-restored database and a killed run leaves only the staging database (a leftover doctor
    lists), never a partial one under the app's name (breaker13 F1). ``aside``: an empty database made
    again under the name is renamed to ``<db>_replaced_<stamp>`` in the same transaction (kept, named in
    the report's warnings): nothing is ever restored into it (breaker14: a killed restore into it left a
    partial database under the app's name, the app writing into it meanwhile). Raises DatabaseError when
    the rename fails (the verified staging database is kept and named)."""
    _refuse_without_createdb(env, dbname)
    stamp = free_stamp(env, dbname, lambda s: [staging_name(dbname, s)] + ([replaced_name(dbname, s)] if aside else []))
    staging = staging_name(dbname, stamp)
    try:
        report = method_for(env).restore_into(env, backup_id, staging, progress=progress, run=run, options=options)
    except ReadQueryFailed as exc:  # verified but not put into use (trial8 #8): say how to finish by hand
        exc.message += f"; it is the recovery's staging copy of the lost database {dbname}"
        finish = (
            f"ALTER DATABASE {quote_ident(dbname)} RENAME TO {quote_ident(replaced_name(dbname, stamp))}; "
            if aside
            else ""
        ) + f"ALTER DATABASE {quote_ident(staging)} RENAME TO {quote_ident(dbname)}"
        exc.hint = (
            f"{READ_QUERY_FIX}); then, to finish the recovery, as an admin: {finish}; "
            f"or drop the copy: DROP DATABASE {quote_ident(staging)}"
        )
        raise
    with run.step("rename") as info:
        try:
            # never on the database about to be renamed: a session there would stop the rename
            target = env.target(direct=True)
            with connect_maintenance(target, avoid=(dbname, staging), purpose=f"restore {env.name}") as conn:
                if aside:
                    kept = replaced_name(dbname, stamp)
                    info["detail"] = _put_in_place(env, conn, dbname, staging, kept)
                    report.warnings.append(_aside_note(env, conn, dbname, kept))
                else:
                    rename_database(conn, staging, dbname)
                    info["detail"] = f"{staging} -> {dbname}"
        except DatabaseError as exc:
            exc.message += f" ({staging} holds backup {backup_id}, restored and verified)"
            raise
    report.database = dbname
    moved = _moved_note(env, dbname)
    if moved is not None:
        report.warnings.append(moved)
    return report


def _put_in_place(env: Environment, conn: psycopg.Connection, dbname: str, staging: str, aside: str) -> str:
    """The empty database ``dbname`` set aside as ``aside`` and ``staging`` renamed to ``dbname`` in one
    transaction, once more checked to be empty and unused (written to while the recovery ran: refused,
    nothing renamed). Returns the step's detail. Raises DatabaseError."""
    target = env.target(direct=True)
    state, _ = database_state(conn, target, dbname)
    if state != "empty":
        raise DatabaseError(
            f"{dbname} is no longer empty (something wrote to it while the recovery ran); nothing was renamed",
            hint=f"look at what was written to {dbname}; to put the recovery's copy in its place anyway, once "
            f"nobody uses either: ALTER DATABASE {quote_ident(dbname)} RENAME TO {quote_ident(aside)}; "
            f"ALTER DATABASE {quote_ident(staging)} RENAME TO {quote_ident(dbname)};",
        )
    set_aside(conn, dbname, staging, aside)
    return f"{dbname} (empty) -> {aside}; {staging} -> {dbname}"


def _aside_note(env: Environment, conn: psycopg.Connection, dbname: str, kept: str) -> str:
    """What became of the database set aside, looked at after the rename: a session may have written to
    it between the last check and the rename (breaker14b B2), so "empty" is said only when it still is."""
    target = env.target(direct=True)
    try:
        state, _ = database_state(conn, target, kept)
    except PgRunbookError:
        state = "unknown"
    if state == "empty":
        return (
            f"the empty database that held the name {dbname} is kept as {kept}; drop it once you have looked at "
            f"it: DROP DATABASE {quote_ident(kept)};"
        )
    return (
        f"the database that held the name {dbname} is kept as {kept}, and it is NOT empty: something wrote to it "
        "while the recovery ran; look at what it holds before you drop it"
    )


def _moved_note(env: Environment, dbname: str) -> str | None:
    """When a journaled run moved the app away from ``dbname``: that the database recreated is not the
    app's (breaker14b B5: the abandoned one was recreated without a word)."""
    moved = app_moved(env)
    if moved is None or moved.named != dbname:
        return None
    return f"the app is not on {dbname}: {moved.message()}; {moved.hint()}"


def _refuse_without_createdb(env: Environment, dbname: str) -> None:
    """The recovery creates its staging database: a role without CREATEDB is told so before anything
    (breaker13 N13), with the two ways through. Raises DatabaseError."""
    target = env.target(direct=True)
    with connect_server(target, purpose=f"restore {env.name}") as conn:
        row = conn.execute("SELECT current_user, rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user")
        found = row.fetchone()
    if found is None or found[1]:
        return
    role = str(found[0])
    raise DatabaseError(
        f"role {role} may not create databases, and the recovery of {dbname} restores into a new database before "
        "it takes the name; nothing was changed",
        hint=f"as an admin: ALTER ROLE {quote_ident(role)} CREATEDB (it may be revoked afterwards), or run the same "
        f"command with an admin's URL in {target.variable}",
    )


def refuse_lost_database(env: Environment, backup_id: str) -> None:
    """An in-place restore of a database that does not exist has nothing to replace (and no state to
    keep a pre-restore backup of): refused before anything, pointing at the disaster-recovery path,
    ``restore --into`` its own name, which recreates it. Raises DatabaseError."""
    target = env.target(direct=True)
    if exists_on_server(target, purpose=f"restore {env.name}"):
        return
    raise DatabaseError(
        f"in-place restore replaces database {target.dbname!r}, which does not exist on {target.display}; "
        "nothing was changed",
        hint=f"recreate it from the backup: pgrunbook restore {backup_id} --into {shlex.quote(target.dbname)} "
        f"--env {env.name}",
    )


def behind_note(env: Environment, dbname: str, *, url_moves: bool = False) -> str | None:
    """When database ``dbname`` lacks migrations of this checkout: what the app pointed at it may miss
    and the two ways forward (trial11 F21: a restore of an older backup, the app pointed at it, and not
    a word that the running code expects newer tables). None when nothing is missing or when the history
    cannot be read (the restore itself is done and verified: this note never fails it). ``url_moves``:
    pgrunbook's own URL still names another database (restore --into --point-app)."""
    try:
        status = status_in(env, dbname)
    except PgRunbookError:
        return None
    missing = status.pending + status.failed  # a failed one is not applied either (breaker13 F7)
    if not missing:
        return None
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    failed = (
        f"; {', '.join(status.failed)} failed there: resolve it first (pgrunbook status shows how), or migrate "
        "deploy stops with P3009"
        if status.failed
        else ""
    )
    return (
        f"{dbname} has not applied {len(missing)} migration(s) of this checkout ({shown}){failed}: an app built "
        f"with them may fail on it; roll the app back to a release of that time (pgrunbook rollback --app-only "
        f"--env {env.name}) or apply them (pgrunbook migrate deploy --env {env.name}"
        + (f", once pgrunbook's URL names {dbname})" if url_moves else ")")
    )


def finished_note(report: RestoreReport) -> tuple[str, str]:
    """A stop that arrives once the restore has finished (its journal write, its output): nothing was
    undone, and the error line says so rather than "nothing half-done is kept"."""
    return (
        f"it came after the restore had finished: {report.database} holds backup {report.backup_id}, "
        "verified, and is kept",
        "nothing to redo; pgrunbook runs shows the run" + (f"; next: {report.next_step}" if report.next_step else ""),
    )


def resolve_backup(env: Environment, backup_id: str, *, in_place: bool, recreate: bool = False) -> str:
    """The fixed id a restore restores, resolved once before anything runs: an in-place restore takes a
    pre-restore backup first, which ``latest`` would name if it were resolved again later. For an
    in-place restore ``latest`` never names a pre-restore backup (the state before an earlier in-place
    restore: restoring it would undo that restore); named by its id, one is restored. Nor does it
    name a backup only presumed this database's (repository.ownership_doubt). Other ids are returned
    as given (checked where they are read). ``recreate`` (a lost database restored under its own
    name) skips pre-restore backups too: the newest one may hold what an in-place restore replaced, or
    an empty database (breaker13 F11). Raises BackupNotFound."""
    if backup_id != "latest":
        return backup_id
    skip = ("pre-restore",) if in_place or recreate else ()
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
