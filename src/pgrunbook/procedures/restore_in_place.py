"""Restore in place (the risky path): the environment's database replaced by a backup.

Maintenance on, a verified pre-restore backup, the backup restored into a fresh database, names
swapped, the live database verified, maintenance off. The live database is never overwritten: until
the swap it is untouched; after it, the replaced one is kept under another name.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from pgrunbook.backup.method import RestoreReport, VerifyResult, method_for
from pgrunbook.environment import Environment, ProgressFn, no_progress
from pgrunbook.errors import ConfigError, DatabaseError, VerificationFailed
from pgrunbook.postgres.connect import connect
from pgrunbook.postgres.url import DatabaseTarget, url_with_dbname
from pgrunbook.procedures.journal import Run
from pgrunbook.procedures.steps import maintenance_off, maintenance_on, verified_backup


def restore_in_place(
    env: Environment,
    backup_id: str,
    *,
    confirm: str | None,
    run: Run,
    progress: ProgressFn = no_progress,
    keep_maintenance_on_failure: bool = False,
) -> RestoreReport:
    """Maintenance on, verified pre-restore backup, restore into a fresh database, swap names, verify,
    maintenance off. Refused (ConfigError) unless ``confirm`` is the live database's name; a backup that
    fails its integrity check (VerificationFailed) stops it before maintenance starts."""
    method = method_for(env)
    target = env.target(direct=True)
    live = target.dbname
    if confirm != live:
        raise ConfigError(
            f"in-place restore replaces database {live!r}: pass --confirm {live}"
            + (f" (you gave {confirm!r})" if confirm else ""),
            hint=f"or restore into a new database: pgrunbook restore {backup_id} --into {live}_restored",
        )
    with run.step("check backup"):
        _require_intact(method.verify(env, backup_id, progress=progress, record=False))
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    staging, replaced = f"{live[:40]}_restore_{stamp}", f"{live[:40]}_replaced_{stamp}"
    run.set_recovery(f"database {live} is untouched; nothing to undo")
    ok = False
    try:
        maintenance_on(env, run)
        safety = verified_backup(env, run, "pre-restore backup", label="pre-restore", progress=progress, method=method)
        run.set_recovery(f"database {live} is untouched; a pre-restore backup {safety.id} exists")
        report = method.restore_into(env, backup_id, staging, progress=progress, run=run)
        report.pre_restore_backup = safety.id
        with run.step("swap databases") as info:
            run.set_recovery(
                f'if {live} is missing, rename it back: ALTER DATABASE "{replaced}" RENAME TO "{live}"; '
                f"the pre-restore backup is {safety.id}"
            )
            _swap(target, env.url_var(), live, staging, replaced)
            info["detail"] = f"{staging} -> {live}; the previous {live} is now {replaced}"
        run.set_recovery(
            f'to go back to the state before the restore: ALTER DATABASE "{live}" RENAME TO "{staging}"; '
            f'ALTER DATABASE "{replaced}" RENAME TO "{live}" (or restore the pre-restore backup {safety.id})'
        )
        report.database, report.replaced_database = live, replaced
        report.database_url = url_with_dbname(os.environ[env.url_var(direct=False)], live)
        with run.step("verify live database"):
            checks = method.verify_database(env, backup_id, target, env.url_var())
            if not all(c.ok for c in checks):
                raise VerificationFailed(f"database {live} after the swap differs from the backup")
        ok = True
        return report
    finally:
        maintenance_off(
            env, run, keep=not ok and keep_maintenance_on_failure, why_kept="kept on after a failure, as asked"
        )


def _require_intact(result: VerifyResult) -> None:
    bad = [c for c in result.checks if not c.ok]
    if bad:
        raise VerificationFailed(
            f"backup {result.id} failed its integrity check ({bad[0].name}: {bad[0].detail}); "
            "no database was created or changed",
            hint="choose another backup: pgrunbook backup list",
        )


def _swap(target: DatabaseTarget, var: str, live: str, staging: str, replaced: str) -> None:
    """Rename live -> replaced and staging -> live from a connection to another database; clients of the
    live database are disconnected (the app is in maintenance). Owner and database settings follow."""
    maint = "postgres" if live != "postgres" else "template1"
    with connect(target.with_dbname(maint), purpose="restore swap", var=var) as admin:
        row = admin.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (live,)).fetchone()
        if row:
            admin.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(staging), sql.Identifier(row[0]))
            )
        for (setting,) in admin.execute(
            "SELECT unnest(setconfig) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
            "WHERE d.datname = %s AND s.setrole = 0",
            (live,),
        ).fetchall():
            key, _, value = setting.partition("=")
            admin.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    sql.Identifier(staging), sql.Identifier(key), sql.Literal(value)
                )
            )
        last: Exception | None = None
        for _ in range(10):
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (live,),
            )
            try:
                admin.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(live), sql.Identifier(replaced))
                )
                break
            except psycopg.errors.ObjectInUse as exc:
                last = exc
                time.sleep(0.3)
        else:
            raise DatabaseError(
                f"could not take {live} out of use to swap it: {last}",
                hint="is the app really in maintenance? nothing was swapped",
            )
        admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(staging), sql.Identifier(live)))
