"""Database URLs: parsing Prisma-style URLs into libpq parameters, and keeping the password out of sight.

Prisma URLs carry parameters libpq rejects (``?schema=public``, ``connection_limit``, ``pgbouncer``),
so they cannot be handed to libpq as they are. The password is kept apart from every other parameter
so that argv, logs and messages can be built from the rest without a way to leak it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from functools import cache
from urllib.parse import parse_qsl, quote, unquote

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from pgrunbook.errors import ConfigError
from pgrunbook.postgres.redaction import REDACTED, redact

# libpq connection keywords (PostgreSQL 17 docs, "Parameter Key Words"): the fallback when the linked
# libpq cannot list its own (libpq_keywords()); anything else in a URL's query string is Prisma's or a
# pooler's and must not reach libpq.
LIBPQ_KEYWORDS = frozenset(
    [
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "passfile",
        "require_auth",
        "channel_binding",
        "connect_timeout",
        "client_encoding",
        "options",
        "application_name",
        "fallback_application_name",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "replication",
        "gssencmode",
        "sslmode",
        "requiressl",
        "sslnegotiation",
        "sslcompression",
        "sslcert",
        "sslkey",
        "sslcertmode",
        "sslrootcert",
        "sslcrl",
        "sslcrldir",
        "sslsni",
        "requirepeer",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "krbsrvname",
        "gsslib",
        "gssdelegation",
        "service",
        "target_session_attrs",
        "load_balance_hosts",
    ]
)
# The query parameters Prisma's engines read that libpq does not know (prisma-engines,
# quaint/src/connector/postgres/url.rs); Prisma discards any other unknown parameter, and so do we.
PRISMA_ONLY = frozenset(
    [
        "schema",
        "connection_limit",
        "pool_timeout",
        "pgbouncer",
        "statement_cache_size",
        "socket_timeout",
        "sslaccept",
        "sslidentity",
        "max_connection_lifetime",
        "max_idle_connection_lifetime",
    ]
)
SECRET_KEYWORDS = frozenset({"password", "sslpassword"})

_POOLER_HINTS = (
    re.compile(r"[?&]pgbouncer=true(&|#|$)"),  # Prisma reads it as a Rust bool: exactly "true"
    re.compile(r"-pooler\."),  # Neon
    re.compile(r"pooler\.supabase\.com"),
    re.compile(r":6543(/|$)"),  # Supabase transaction mode
)


@dataclass(frozen=True)
class DatabaseTarget:
    """A parsed database URL: libpq parameters, the secret kept apart, Prisma's schema, and the
    environment variable it came from (``variable``, named in every hint about it)."""

    params: dict[str, str]
    password: str | None = field(default=None, repr=False)
    schema: str = "public"
    ignored: tuple[str, ...] = ()
    pooler_suspected: bool = False
    variable: str = "DATABASE_URL"
    url: str = field(default="", repr=False, compare=False)  # as written, secrets included: full_url()
    #: where the URL came from when not from ``variable`` itself, for hints: "DB_URL's default in
    #: prisma.config.ts (DB_URL is not set)"; ``note``: why the variable may be unset (.env not loaded)
    origin: str = field(default="", compare=False)
    note: str = field(default="", compare=False)

    def pooler_warning(self, direct_named: bool) -> tuple[str, str] | None:
        """(detail, hint) when migrations and backups would go through what looks like a transaction-mode
        pooler (_POOLER_HINTS: Prisma's own ``pgbouncer=true``, Neon, Supabase); ``direct_named``: this is
        already the environment's direct URL."""
        if not self.pooler_suspected:
            return None
        if direct_named:
            return (
                f"{self.variable}, the direct URL for migrations and backups, looks like a transaction-mode "
                "pooler too (pgbouncer=true, Neon -pooler, Supabase :6543)",
                f"point {self.variable} at the database itself, not through the pooler",
            )
        return (
            f"{self.variable} looks like a transaction-mode pooler (pgbouncer=true, Neon -pooler, Supabase :6543)",
            "set direct_url_env (Prisma's directUrl) to a URL that bypasses the pooler for migrations and backups",
        )

    @property
    def dbname(self) -> str:
        return self.params.get("dbname") or self.params.get("user") or "postgres"

    @property
    def display(self) -> str:
        """The URL as it may be shown: host, port, user and database, never the password."""
        user = self.params.get("user", "")
        auth = f"{quote(user, safe='')}{':' + REDACTED if self.password else ''}@" if user else ""
        host = self.params.get("host", "localhost")
        if host.startswith("/"):
            return f"postgresql://{auth}/{quote(self.dbname, safe='')}?host={host}"
        hosts, ports = host.split(","), self.params.get("port", "").split(",")
        ports = ports if len(ports) == len(hosts) else ports[:1] * len(hosts)  # one port serves every host
        where = ",".join(
            f"{'[' + h + ']' if ':' in h else h}{':' + p if p else ''}" for h, p in zip(hosts, ports, strict=True)
        )
        return f"postgresql://{auth}{where}/{quote(self.dbname, safe='')}"

    def masked_url(self) -> str:
        """The whole URL as written (query parameters such as ?schema= included) with the password shown
        as ``***``: what an operator copies into the variable after a switch, typing the password in."""
        return redact(self.url, self.secrets()) if self.url else self.display

    def with_dbname(self, dbname: str) -> DatabaseTarget:
        """The same server and credentials, another database (scratch, restore target)."""
        return replace(self, params={**self.params, "dbname": dbname}, url=url_with_dbname(self.url, dbname))

    def full_url(self) -> str:
        """The whole URL, password and Prisma's parameters included, for a child process's environment
        only (the point_app hook's ``PGRUNBOOK_DATABASE_URL``, Prisma's CLI): never argv, logs or text."""
        if not self.url:
            raise ConfigError(f"{self.variable}: no URL to hand to a child process")
        return self.url

    def conninfo(self) -> str:
        """A libpq keyword/value string without any secret (password, sslpassword): safe for argv.
        The client tools' runner (postgres/runner.py) passes the secrets beside it."""
        return " ".join(f"{k}={_quote_conninfo(v)}" for k, v in self.params.items() if k not in SECRET_KEYWORDS)

    def connect_kwargs(self) -> dict[str, str]:
        """Keyword arguments for psycopg.connect, password included (stays in-process)."""
        kwargs = dict(self.params)
        if self.password is not None:
            kwargs["password"] = self.password
        return kwargs

    def inherited_password(self) -> str | None:
        """The password libpq takes from ``PGPASSWORD`` when the URL holds none: what pgrunbook's own
        connections log in with, so the client tools' runner hands it on to pg_dump/pg_restore (in their
        environment, never argv). None when the URL has a password (even an empty one: libpq then reads
        the .pgpass file, as the tools do by themselves) or PGPASSWORD is unset or empty."""
        if self.password is not None:
            return None
        return os.environ.get("PGPASSWORD") or None

    def secrets(self) -> list[str]:
        """Strings that must never appear in any output: the URL's password and sslpassword, or the
        PGPASSWORD it logs in with. A password equal to the user or database
        name is shown with that name anyway and cannot be hidden: replacing it would only blank the
        name in every hint (``GRANT … TO "***"``); it is still removed where it stands as a password
        (URL userinfo, ``password=``: redaction.redact)."""
        public = {self.params.get("user"), self.params.get("dbname")}
        found = (self.password, self.params.get("sslpassword"), self.inherited_password())
        return [s for s in found if s and s not in public]


def _quote_conninfo(value: str) -> str:
    if value and re.fullmatch(r"[A-Za-z0-9_./:,@+-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def parse_database_url(url: str, *, source: str = "DATABASE_URL") -> DatabaseTarget:
    """Parse a postgresql:// URL with libpq's own parser (``PQconninfoParse`` through
    ``psycopg.conninfo.conninfo_to_dict``) once Prisma's parameters are taken off its query string.

    ``source`` is the variable the URL came from; the target keeps it (``.variable``) for hints.
    Prisma-only parameters (PRISMA_ONLY; ``schema`` is kept as ``.schema``) and parameters neither
    libpq nor Prisma knows (``.ignored``) never reach libpq, which would refuse them. Raises
    ConfigError (no secret in its text) for a key=value string, another scheme, or what libpq refuses.
    """
    text = url.strip()
    _refuse_cut_userinfo(text, source)
    m = re.fullmatch(r"(postgres(?:ql)?://[^?#]*)(?:\?([^#]*))?(?:#.*)?", text)
    if not m:
        if "://" not in text and "=" in text:
            raise ConfigError(
                f"{source} is a key=value connection string, not a postgresql:// URL",
                hint="Prisma and pgrunbook read the same variable: write it as "
                "postgresql://USER:PASSWORD@HOST:PORT/DATABASE (a socket directory as ?host=/var/run/postgresql)",
            )
        raise ConfigError(
            f"{source} is not a postgresql:// URL",
            hint="expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE",
        )
    base, query = m.group(1), m.group(2) or ""
    kept: list[str] = []
    schema = "public"
    ignored: list[str] = []
    for pair in filter(None, query.split("&")):
        key = unquote(pair.partition("=")[0])
        if key in libpq_keywords():
            kept.append(pair)
        elif key == "schema":  # Prisma reads its query string form-encoded ("+" is a space)
            schema = (parse_qsl(pair, keep_blank_values=True) or [("", "")])[0][1] or "public"
            if "\x00" in schema or len(schema.encode()) > 63:
                raise ConfigError(
                    f"{source}: ?schema= names an invalid PostgreSQL schema ({len(schema.encode())} bytes"
                    f"{', a NUL character' if chr(0) in schema else ''})",
                    hint="a schema name is at most 63 bytes without NUL characters; percent-encode spaces and "
                    "quotes in the URL (Billing%20Prod)",
                )
        else:
            ignored.append(key)
    libpq_url = _encode_userinfo(base) + ("?" + "&".join(kept) if kept else "")
    try:
        params = {k: str(v) for k, v in conninfo_to_dict(libpq_url).items() if v is not None}
    except psycopg.Error as exc:
        raise ConfigError(
            f"{source} is not a URL libpq accepts: {redact(str(exc).strip(), _raw_secrets(text))}",
            hint="percent-encode special characters in the user name, password and database (@ is %40, / is %2F)",
        ) from None
    password = params.pop("password", None)
    pooler = any(p.search(text) for p in _POOLER_HINTS)
    return DatabaseTarget(params, password, schema, tuple(ignored), pooler, variable=source, url=text)


def _encode_userinfo(base: str) -> str:
    """``base`` (``scheme://authority/path``) with its user:password part percent-encoded the way the
    WHATWG URL parser (Prisma's engines) encodes it before reading it: the last ``@`` ends it, and an
    ``@``, a space or any character outside RFC 3986's userinfo set in it is a character of the name
    or password. libpq stops at the first ``@`` and drops bare spaces, so without this it would read
    ``app:p@ss@db`` as password ``p`` on host ``ss@db``."""
    scheme, _, rest = base.partition("://")
    authority, slash, path = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    if not at:
        return base
    return f"{scheme}://{quote(userinfo, safe=_USERINFO_SAFE)}@{hostport}{slash}{path}"


# RFC 3986 section 3.2.1: unreserved, sub-delims, ":" and the "%" of an existing escape.
_USERINFO_SAFE = "-._~!$&'()*+,;=:%"

_DELIMITER_NAMES = {"/": "/ is %2F", "?": "? is %3F", "#": "# is %23"}


def _refuse_cut_userinfo(text: str, source: str) -> None:
    """Refuse a URL whose ``user:password@`` part is cut short by an unencoded ``/``, ``?`` or ``#``.

    A URL's authority ends at the first of those (RFC 3986 section 3.2, and the WHATWG URL parser
    that Prisma's engines use), so ``postgresql://app:pa#ss@db/app`` names host ``app``, port
    ``pa`` and no password: the password would reach connection errors as a host or port, and Prisma
    reads the same URL the same wrong way. Recognised when the authority holds no ``@`` but one
    follows, and the URL cannot be read otherwise: after a ``#`` (a postgres URL has no fragment),
    after a host whose port is not a number, before any ``=`` of a query string, or before another
    host-like part of a path. ``?user=me@corp`` and a database named ``my@db`` are left alone.
    Raises ConfigError without any part of the URL in its text.
    """
    m = re.match(r"postgres(?:ql)?://([^/?#]*)([/?#])(.*)", text, re.DOTALL)
    if not m or "@" not in m.group(3):
        return
    authority, delimiter, rest = m.groups()
    _, at, hosts = authority.rpartition("@")
    hosts = hosts if at else authority
    path = rest.split("?", 1)[0] if delimiter == "/" else ""  # a query's values may hold @ and /
    ports = [h.rpartition(":")[2] for h in hosts.split(",") if ":" in h and not h.endswith("]")]
    cut = (
        delimiter == "#"
        or (at and not hosts)  # "app:@/@db/app": a password "@/" read as no host (hypothesis)
        or (not at and any(not p.isdigit() for p in ports))
        or (delimiter == "?" and "=" not in rest.rpartition("@")[0])  # no key=value before the @
        # a host (and path) after an @ in the path: "app:@0/@db/app", a password "@0/" read as host "0"
        or ("@" in path and re.search(r"[/:]", path.rpartition("@")[2]) is not None)
    )
    if not cut:
        return
    raise ConfigError(
        f"{source}: its user:password part holds an unencoded '{delimiter}', which ends the host part of "
        "a URL, so the password would be read as a host, port or database name (Prisma reads it the same way)",
        hint="percent-encode it in the password and user name ("
        + ", ".join(_DELIMITER_NAMES.values())
        + ", @ is %40); for example with python3 -c 'import urllib.parse,getpass; "
        'print(urllib.parse.quote(getpass.getpass(), safe=""))\'',
    )


@cache
def libpq_keywords() -> frozenset[str]:
    """The connection keywords the linked libpq knows (``PQconndefaults``), e.g. ``sslpassword`` from
    PostgreSQL 13 on; LIBPQ_KEYWORDS if libpq cannot be asked."""
    try:
        return frozenset(d.keyword.decode() for d in pq.Conninfo.get_defaults()) | {"password"}
    except Exception:  # a libpq that cannot list its defaults: the documented list
        return LIBPQ_KEYWORDS | {"password", "sslpassword"}


def _raw_secrets(url: str) -> list[str]:
    """The password as written in a URL libpq refused (userinfo and ?password=, raw and decoded)."""
    found = re.findall(r"://[^:/@?#]*:([^@/?#]*)@", url) + re.findall(r"[?&](?:ssl)?password=([^&#]*)", url)
    return [form for raw in found if raw for form in (raw, unquote(raw))]


def url_with_dbname(url: str, dbname: str) -> str:
    """The same URL (user, password, host, parameters such as ?schema=) for another database; a
    ``?dbname=`` (which libpq prefers over the path) is dropped. An empty ``url`` stays empty."""
    if not url:
        return url
    m = re.fullmatch(r"(postgres(?:ql)?://[^/?#]*)(/[^?#]*)?(?:\?([^#]*))?(#.*)?", url.strip())
    if not m:
        raise ConfigError("cannot derive the restored database's URL from a URL that is not postgresql://")
    query = "&".join(p for p in (m.group(3) or "").split("&") if p and unquote(p.partition("=")[0]) != "dbname")
    return f"{m.group(1)}/{quote(dbname, safe='')}{'?' + query if query else ''}"


__all__ = ["REDACTED", "DatabaseTarget", "parse_database_url", "redact", "url_with_dbname"]
