"""Database URLs: parsing Prisma-style URLs into libpq parameters, and keeping the password out of sight.

Prisma URLs carry parameters libpq rejects (``?schema=public``, ``connection_limit``, ``pgbouncer``),
so they cannot be handed to libpq as they are. The password is kept apart from every other parameter
so that argv, logs and messages can be built from the rest without a way to leak it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, quote, unquote

from pgrunbook.errors import ConfigError
from pgrunbook.postgres.redaction import REDACTED, redact

# libpq connection keywords (PostgreSQL 17 docs, "Parameter Key Words"); anything else in a URL's query
# string is Prisma's or a pooler's and must not reach libpq.
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
    ]
)
SECRET_KEYWORDS = frozenset({"password", "sslpassword"})

_POOLER_HINTS = (
    re.compile(r"pgbouncer=true"),
    re.compile(r"-pooler\."),  # Neon
    re.compile(r"pooler\.supabase\.com"),
    re.compile(r":6543(/|$)"),  # Supabase transaction mode
)


@dataclass(frozen=True)
class DatabaseTarget:
    """A parsed database URL: libpq parameters, the secret kept apart, and Prisma's schema."""

    params: dict[str, str]
    password: str | None = field(default=None, repr=False)
    schema: str = "public"
    ignored: tuple[str, ...] = ()
    pooler_suspected: bool = False

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
        port = self.params.get("port")
        return f"postgresql://{auth}{host}{':' + port if port else ''}/{quote(self.dbname, safe='')}"

    def with_dbname(self, dbname: str) -> DatabaseTarget:
        """The same server and credentials, another database (scratch, restore target)."""
        return replace(self, params={**self.params, "dbname": dbname})

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

    def secrets(self) -> list[str]:
        """Strings that must never appear in any output."""
        return [s for s in (self.password, self.params.get("sslpassword")) if s]


def _quote_conninfo(value: str) -> str:
    if value and re.fullmatch(r"[A-Za-z0-9_./:,@+-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def parse_database_url(url: str, *, source: str = "DATABASE_URL") -> DatabaseTarget:
    """Parse a postgresql:// URL the way libpq reads it, keeping Prisma's extras out of libpq's way."""
    m = re.fullmatch(r"(postgres(?:ql)?)://([^/?#]*)(/[^?#]*)?(\?[^#]*)?(#.*)?", url.strip())
    if not m:
        raise ConfigError(
            f"{source} is not a postgresql:// URL",
            hint="expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE",
        )
    netloc, path, query = m.group(2), m.group(3) or "", (m.group(4) or "")[1:]
    params: dict[str, str] = {}
    password: str | None = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, sep, pw = userinfo.partition(":")
        if user:
            params["user"] = unquote(user)
        if sep:
            password = unquote(pw)
    hosts, ports = _split_hosts(netloc, source)
    if hosts:
        params["host"] = ",".join(hosts)
    if any(ports):
        params["port"] = ",".join(ports)
    if path.strip("/"):
        params["dbname"] = unquote(path[1:])
    schema = "public"
    ignored: list[str] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "schema":
            schema = value or "public"
            if "\x00" in schema or len(schema.encode()) > 63:
                raise ConfigError(
                    f"{source}: ?schema= names an invalid PostgreSQL schema ({len(schema.encode())} bytes"
                    f"{', a NUL character' if chr(0) in schema else ''})",
                    hint="a schema name is at most 63 bytes without NUL characters; percent-encode spaces and "
                    "quotes in the URL (Billing%20Prod)",
                )
        elif key == "password":
            password = value
        elif key in LIBPQ_KEYWORDS or key == "sslpassword":
            params[key] = value
        else:
            ignored.append(key)
    pooler = any(p.search(url) for p in _POOLER_HINTS)
    return DatabaseTarget(params, password, schema, tuple(ignored), pooler)


def _split_hosts(netloc: str, source: str) -> tuple[list[str], list[str]]:
    hosts: list[str] = []
    ports: list[str] = []
    if not netloc:
        return hosts, ports
    for part in netloc.split(","):
        hm = re.fullmatch(r"(\[[^\]]*\]|[^:]*)(?::(\d*))?", part)
        if not hm:
            raise ConfigError(f"{source} has an unreadable host part", hint="check the URL's host:port")
        host = unquote(hm.group(1).strip("[]"))
        hosts.append(host or "localhost")
        ports.append(hm.group(2) or "")
    if any(ports) and not all(ports):
        ports = [p or "5432" for p in ports]
    return hosts, ports


def url_with_dbname(url: str, dbname: str) -> str:
    """The same URL (user, password, host, parameters such as ?schema=) for another database."""
    m = re.fullmatch(r"(postgres(?:ql)?://[^/?#]*)(/[^?#]*)?(\?[^#]*)?(#.*)?", url.strip())
    if not m:
        raise ConfigError("cannot derive the restored database's URL from a URL that is not postgresql://")
    return f"{m.group(1)}/{quote(dbname, safe='')}{m.group(3) or ''}"


__all__ = ["REDACTED", "DatabaseTarget", "parse_database_url", "redact", "url_with_dbname"]
