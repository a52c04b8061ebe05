"""Swapping a restored database in under the live one's name: atomically, with everything that lives
on the database itself carried over.

pg_restore (without ``--create``) restores what is inside a database; what lives on the database —
its owner, ``GRANT … ON DATABASE``, ``ALTER DATABASE … SET``, ``ALTER ROLE … IN DATABASE … SET``, the
connection limit, its comment — belongs to the cluster and stays with the replaced database unless it
is copied. ``read_database`` reads all of it, ``carry_over`` turns it into statements for the new one,
and ``swap`` runs both renames and those statements in one transaction: ALTER DATABASE … RENAME is
transactional, so a failure or a kill at any point leaves either the old state or the new one, never
a moment without a database under the live name.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from pgrunbook.errors import DatabaseError
from pgrunbook.postgres.names import derived_dbname, quote_ident

# Settings whose value is a list that PostgreSQL stores quoted element by element (GUC_LIST_QUOTE);
# each element becomes its own literal, as pg_dumpall's makeAlterConfigCommand does.
LIST_SETTINGS = {
    "search_path",
    "temp_tablespaces",
    "session_preload_libraries",
    "shared_preload_libraries",
    "local_preload_libraries",
    "unix_socket_directories",
}


@dataclass(frozen=True)
class Grant:
    grantee: str | None  # None: PUBLIC
    privilege: str
    grantable: bool


@dataclass
class DatabaseState:
    name: str
    owner: str
    connection_limit: int
    comment: str
    acl_is_default: bool
    grants: list[Grant] = field(default_factory=list)
    settings: list[tuple[str | None, str]] = field(default_factory=list)  # (role or None, "key=value")
    #: after a swap: the carry-over statements the connected role was refused, each "<statement>
    #: (<the server's reason>)", to be run by a superuser; the rest was carried
    refused: list[str] = field(default_factory=list)


def read_database(conn: psycopg.Connection, name: str) -> DatabaseState | None:
    row = conn.execute(
        "SELECT pg_get_userbyid(datdba), datconnlimit, coalesce(shobj_description(oid, 'pg_database'), ''), "
        "datacl IS NULL, oid FROM pg_database WHERE datname = %s",
        (name,),
    ).fetchone()
    if row is None:
        return None
    owner, limit, comment, default_acl, oid = row
    grants = [
        Grant(grantee, priv, bool(grantable))
        for grantee, priv, grantable in conn.execute(
            "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, a.privilege_type, "
            "a.is_grantable FROM pg_database d, aclexplode(d.datacl) a WHERE d.oid = %s ORDER BY 1, 2",
            (oid,),
        ).fetchall()
    ]
    settings = [
        (role, setting)
        for role, setting in conn.execute(
            "SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, unnest(s.setconfig) "
            "FROM pg_db_role_setting s WHERE s.setdatabase = %s ORDER BY 1 NULLS FIRST",
            (oid,),
        ).fetchall()
    ]
    return DatabaseState(name, str(owner), int(limit), str(comment), bool(default_acl), grants, settings)


def split_list_value(value: str) -> list[str]:
    """'"$user", public' → ['$user', 'public'] (PostgreSQL's SplitGUCList rules: double quotes, "")."""
    out, cur, quoted, i = [], "", False, 0
    while i < len(value):
        ch = value[i]
        if ch == '"':
            if quoted and i + 1 < len(value) and value[i + 1] == '"':
                cur += '"'
                i += 2
                continue
            quoted = not quoted
        elif ch == "," and not quoted:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
        i += 1
    out.append(cur.strip())
    return [v for v in out if v != ""]


def setting_clause(setting: str) -> sql.Composed:
    """'search_path="$user", public' → ``search_path TO '$user', 'public'``; others one literal."""
    key, _, value = setting.partition("=")
    if key.lower() in LIST_SETTINGS:
        values = sql.SQL(", ").join(sql.Literal(v) for v in split_list_value(value))
    else:
        values = sql.Literal(value)  # type: ignore[assignment]
    return sql.SQL("{} TO {}").format(sql.Identifier(key), values)


def carry_over(
    state: DatabaseState, to: str, *, keep_comment_prefix: str = "pgrunbook:", comment: bool = True
) -> list[sql.Composed]:
    """Statements giving database ``to`` everything ``state`` describes (run after the renames);
    ``comment=False`` leaves ``to``'s own comment (a restored copy's provenance) as it is."""
    db = sql.Identifier(to)
    out = [sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, sql.Identifier(state.owner))]
    if not state.acl_is_default:
        out.append(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
        out.append(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(db, sql.Identifier(state.owner)))
        for g in state.grants:
            who = sql.SQL("PUBLIC") if g.grantee is None else sql.Identifier(g.grantee)
            option = sql.SQL(" WITH GRANT OPTION") if g.grantable else sql.SQL("")
            out.append(sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(sql.SQL(g.privilege), db, who, option))
    out.append(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(db, sql.Literal(state.connection_limit)))
    for role, setting in state.settings:
        if role is None:
            out.append(sql.SQL("ALTER DATABASE {} SET {}").format(db, setting_clause(setting)))
        else:
            out.append(
                sql.SQL("ALTER ROLE {} IN DATABASE {} SET {}").format(sql.Identifier(role), db, setting_clause(setting))
            )
    if comment and state.comment and not state.comment.startswith(keep_comment_prefix):
        out.append(sql.SQL("COMMENT ON DATABASE {} IS {}").format(db, sql.Literal(state.comment)))
    return out


def _refusal(conn: psycopg.Connection, stmt: sql.Composed, exc: psycopg.Error) -> str:
    return f"{stmt.as_string(conn)} ({str(exc).splitlines()[0]})"


def carry_over_refusals(conn: psycopg.Connection, live: str) -> list[str]:
    """Which carry-over statements of a swap the connected role would be refused, found before anything
    changes: each is run against ``live`` itself (its own values, so nothing would change anyway) in a
    transaction that is always rolled back, each in a savepoint so one refusal does not hide the next.
    The staging database's owner change is checked by role membership (on ``live`` it is a no-op the
    server does not check). E.g. ``ALTER ROLE app IN DATABASE … SET``: on PostgreSQL 16+ a CREATEROLE
    admin needs ADMIN OPTION on ``app``; before 16, CREATEROLE. ``conn``: autocommit, on another
    database. Returns them as ``swap`` reports them in ``DatabaseState.refused``."""
    state = read_database(conn, live)
    if state is None:
        return []
    refused: list[str] = []
    row = conn.execute(
        "SELECT rolsuper OR pg_has_role(current_user, %s, 'MEMBER') FROM pg_roles WHERE rolname = current_user",
        (state.owner,),
    ).fetchone()
    statements = carry_over(state, live)
    if row is not None and not row[0]:
        refused.append(f"{statements[0].as_string(conn)} (the connected role is not a member of role {state.owner!r})")
    with conn.transaction(force_rollback=True):
        for stmt in statements[1:]:
            try:
                with conn.transaction():
                    conn.execute(stmt)
            except psycopg.errors.InsufficientPrivilege as exc:
                refused.append(_refusal(conn, stmt, exc))
    return refused


def copy_database_settings(conn: psycopg.Connection, source: str, to: str) -> tuple[DatabaseState | None, list[str]]:
    """Give database ``to`` what lives on database ``source`` itself (owner, database privileges,
    connection limit, ``ALTER DATABASE … SET``, ``ALTER ROLE … IN DATABASE … SET``); ``to`` keeps its
    own comment. Each statement on its own (a savepoint): one the connected role may not run (another
    role's per-database setting, for a non-superuser) is listed, not fatal. ``conn``: autocommit, on a
    third database. Returns (what ``source`` has, None when it does not exist; the statements refused,
    as text with the server's reason)."""
    state = read_database(conn, source)
    if state is None:
        return None, []
    refused: list[str] = []
    for stmt in carry_over(state, to, comment=False):
        try:
            with conn.transaction():
                conn.execute(stmt)
        except psycopg.errors.InsufficientPrivilege as exc:
            refused.append(_refusal(conn, stmt, exc))
    return state, refused


# Sessions the connected role may not end: PostgreSQL lets a non-superuser signal only backends of roles
# whose privileges it has (or with pg_signal_backend), never a superuser's nor one without a role
# (src/backend/storage/ipc/signalfuncs.c, pg_signal_backend).
_CANNOT_END = """
NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
AND (a.usesysid IS NULL
     OR coalesce((SELECT rolsuper FROM pg_roles r WHERE r.oid = a.usesysid), true)
     OR NOT (pg_has_role(current_user, a.usesysid, 'USAGE')
             OR pg_has_role(current_user, 'pg_signal_backend', 'USAGE')))
"""


def sessions_in_the_way(conn: psycopg.Connection, dbname: str, *, transient: bool = True) -> list[str]:
    """Sessions on ``dbname`` the connected role may not end, as "pid N (user U, application A)";
    ``transient=False`` leaves out autovacuum workers (they end by themselves)."""
    rows = conn.execute(
        "SELECT a.pid, coalesce(a.usename, a.backend_type), coalesce(a.application_name, '') "
        f"FROM pg_stat_activity a WHERE a.datname = %s AND a.pid <> pg_backend_pid() AND {_CANNOT_END}"
        + ("" if transient else " AND a.backend_type IS DISTINCT FROM 'autovacuum worker'"),
        (dbname,),
    ).fetchall()
    return [f"pid {pid} (user {user}{', application ' + app if app else ''})" for pid, user, app in rows]


def refuse_sessions_in_the_way(conn: psycopg.Connection, dbname: str, outcome: str, *, transient: bool = True) -> None:
    """DatabaseError naming the first session on ``dbname`` the connected role may not end, if any;
    ``outcome`` says what became of the databases ("nothing was swapped")."""
    blocking = sessions_in_the_way(conn, dbname, transient=transient)
    if blocking:
        more = f" and {len(blocking) - 1} more" if len(blocking) > 1 else ""
        raise DatabaseError(
            f"cannot disconnect {blocking[0]}{more} from {dbname}: only a superuser may end it; {outcome}",
            hint="ask whoever runs it to close it, or a superuser to end it (SELECT pg_terminate_backend(pid)), "
            "then run the restore again; or run it as a superuser",
        )


def describe(state: DatabaseState) -> str:
    parts = [f"owner {state.owner}"]
    if not state.acl_is_default:
        parts.append(f"{len(state.grants)} database privilege(s)")
    if state.connection_limit != -1:
        parts.append(f"connection limit {state.connection_limit}")
    if state.settings:
        parts.append(f"{len(state.settings)} setting(s)")
    if state.comment and not state.comment.startswith("pgrunbook:"):
        parts.append("its comment")
    done = ", ".join(parts)
    if state.refused:
        done += f"; NOT carried over, run as a superuser: {'; '.join(state.refused)}"
    return done


def swap(conn: psycopg.Connection, live: str, staging: str, replaced: str, *, attempts: int = 10) -> DatabaseState:
    """One transaction: disconnect the live database's clients, rename live → replaced and staging →
    live, and carry the live database's own settings over. ``conn`` is on another database, autocommit.
    Returns what was carried over; a carry-over statement the connected role is refused (another role's
    per-database setting without ADMIN OPTION on it) is skipped in its own savepoint and listed in
    ``refused``, as ``copy_database_settings`` does for a rollback: the restore is never lost to it.
    Any other failure rolls the whole swap back (DatabaseError, "nothing was swapped")."""
    state = read_database(conn, live)
    if state is None:
        raise DatabaseError(f"database {live} does not exist; nothing was swapped")
    last: Exception | None = None
    rename = sql.SQL("ALTER DATABASE {} RENAME TO {}")
    for _ in range(attempts):
        try:
            with conn.transaction():
                conn.execute(
                    "SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a WHERE a.datname = %s "
                    f"AND a.pid <> pg_backend_pid() AND NOT ({_CANNOT_END})",
                    (live,),
                )
                conn.execute(rename.format(sql.Identifier(live), sql.Identifier(replaced)))
                conn.execute(rename.format(sql.Identifier(staging), sql.Identifier(live)))
                state.refused = []
                for stmt in carry_over(state, live):
                    try:
                        with conn.transaction():
                            conn.execute(stmt)
                    except psycopg.errors.InsufficientPrivilege as exc:
                        state.refused.append(_refusal(conn, stmt, exc))
            return state
        except psycopg.errors.ObjectInUse as exc:
            last = exc
            time.sleep(0.3)
        except psycopg.Error as exc:
            why = re.sub(r"\s+", " ", str(exc)).strip() or type(exc).__name__
            raise DatabaseError(
                f"could not swap {staging} in for {live}: {why}; nothing was swapped",
                hint="the swap renames both databases (their owner's right, with CREATEDB) and carries the live "
                "database's settings over; run the restore as the databases' owner or a superuser",
            ) from None
    for name in (live, staging):
        refuse_sessions_in_the_way(conn, name, "nothing was swapped")
    why = re.sub(r"\s+", " ", str(last)).strip()
    raise DatabaseError(
        f"could not swap {staging} in for {live}: {why}; nothing was swapped",
        hint=f"is the app really in maintenance, and nothing else connected to {live} or {staging}?",
    )


def sessions_on(conn: psycopg.Connection, dbname: str) -> list[str]:
    """The other sessions connected to database ``dbname``: "pid 123 (user app, application psql)"."""
    rows = conn.execute(
        "SELECT pid, usename, application_name FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
        "ORDER BY pid",
        (dbname,),
    ).fetchall()
    return [f"pid {r[0]} (user {r[1]}" + (f", application {r[2]})" if r[2] else ")") for r in rows]


def set_aside(conn: psycopg.Connection, live: str, staging: str, aside: str, *, attempts: int = 10) -> None:
    """One transaction: rename ``live`` (an empty database made again under a lost database's name) to
    ``aside`` and ``staging`` (the recovery's verified copy) to ``live``. Nobody's session is ended: one
    on ``live`` means something uses it, so it is named and nothing is renamed. ``conn`` is on another
    database, autocommit. Raises DatabaseError ("nothing was renamed")."""
    rename = sql.SQL("ALTER DATABASE {} RENAME TO {}")
    why = ""
    for _ in range(attempts):
        try:
            with conn.transaction():
                conn.execute(rename.format(sql.Identifier(live), sql.Identifier(aside)))
                conn.execute(rename.format(sql.Identifier(staging), sql.Identifier(live)))
            return
        except psycopg.errors.ObjectInUse as exc:
            why = re.sub(r"\s+", " ", str(exc)).strip()
            time.sleep(0.3)
        except psycopg.Error as exc:
            why = re.sub(r"\s+", " ", str(exc)).strip() or type(exc).__name__
            break
    by_hand = (
        f"ALTER DATABASE {quote_ident(live)} RENAME TO {quote_ident(aside)}; "
        f"ALTER DATABASE {quote_ident(staging)} RENAME TO {quote_ident(live)};"
    )
    raise DatabaseError(
        f"could not put {staging} in place of the empty database {live}: {why}; nothing was renamed",
        hint=f"once nothing is connected to either: {by_hand}",
    )


def rename_database(conn: psycopg.Connection, name: str, to: str, *, attempts: int = 10) -> None:
    """``ALTER DATABASE name RENAME TO to``, ``conn`` on another database (autocommit), retried while a
    session of ``name`` is still ending (ObjectInUse). Raises DatabaseError naming both databases: ``name``
    is kept as it is (a database ``to`` created meanwhile, a role without the right)."""
    stmt = sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(name), sql.Identifier(to))
    why = ""
    for _ in range(attempts):
        try:
            conn.execute(stmt)
            return
        except psycopg.errors.ObjectInUse as exc:
            why = re.sub(r"\s+", " ", str(exc)).strip()
            time.sleep(0.3)
        except psycopg.errors.DuplicateDatabase:
            # another run (two recoveries at once) or an operator took the name meanwhile: renaming
            # cannot succeed while it exists, so the hint must not offer the rename (breaker13 N11)
            raise DatabaseError(
                f"could not rename {name} to {to}: a database {to} was created meanwhile (another run, or by "
                f"hand); {name} is kept as it is",
                hint=f"check that {to} is the one to keep (pgrunbook runs shows what ran), then drop the extra copy "
                f"once nothing is connected to it: DROP DATABASE {quote_ident(name)};",
            ) from None
        except psycopg.Error as exc:
            why = re.sub(r"\s+", " ", str(exc)).strip() or type(exc).__name__
            break
    raise DatabaseError(
        f"could not rename {name} to {to}: {why}; {name} is kept as it is",
        hint=f"once nothing is connected to it: ALTER DATABASE {quote_ident(name)} RENAME TO {quote_ident(to)};",
    )


# --- the names of an in-place restore's databases -------------------------------------------------------

_STAMP = re.compile(r"\d{14}")


def staging_name(live: str, stamp: str) -> str:
    """The database an in-place restore of ``live`` restores into before the swap (``stamp``: UTC
    YYYYmmddHHMMSS); the name keeps within PostgreSQL's 63 bytes."""
    return derived_dbname(live, f"_restore_{stamp}")


def replaced_name(live: str, stamp: str) -> str:
    """The name the live database is kept under once the swap replaced it."""
    return derived_dbname(live, f"_replaced_{stamp}")


def staging_databases(conn: psycopg.Connection, live: str) -> list[str]:
    """Databases named like ``staging_name(live, …)``: what a killed in-place restore left behind
    (after a swap the staging name is gone, so the live database is never among them)."""
    prefix = staging_name(live, "0" * 14)[:-14]  # the same cut as the names it looks for
    rows = conn.execute(
        "SELECT datname FROM pg_database WHERE starts_with(datname, %s) AND datname <> %s ORDER BY datname",
        (prefix, live),
    ).fetchall()
    return [str(r[0]) for r in rows if _STAMP.fullmatch(str(r[0])[len(prefix) :])]


def database_exists(conn: psycopg.Connection, name: str) -> bool:
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = %s)", (name,)).fetchone()
    return bool(row and row[0])


def drop_statement(name: str) -> str:
    """The exact statement that drops database ``name`` (quoted as SQL needs, sessions ended first)."""
    return f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE);"
