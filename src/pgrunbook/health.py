"""``pgrunbook health``: the runbook's "GET /api/health should return status: ok", plus a read query.

Retries until a deadline, because right after a deploy or a restore the app may need a moment; each
failure is named for what it is, so the operator knows whether to look at the app, the network or the
database.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from pgrunbook.environment import Environment
from pgrunbook.errors import MissingDatabase, PgRunbookError
from pgrunbook.postgres.catalog import run_read_query
from pgrunbook.postgres.connect import connect
from pgrunbook.postgres.redaction import redact_urls
from pgrunbook.postgres.url import DatabaseTarget

FailureKind = Literal[
    "connection refused",
    "timeout",
    "non-2xx",
    "not JSON",
    "status not ok",
    "database unreachable",
    "database does not exist",
    "read query failed",
    "http error",
]


@dataclass
class HealthCheck:
    name: str
    ok: bool
    detail: str
    kind: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "kind": self.kind}


@dataclass
class HealthResult:
    ok: bool
    checks: list[HealthCheck] = field(default_factory=list)
    attempts: int = 0
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "attempts": self.attempts,
            "duration_s": self.duration_s,
            "checks": [c.to_dict() for c in self.checks],
        }

    @property
    def summary(self) -> str:
        bad = [c for c in self.checks if not c.ok]
        return "; ".join(f"{c.name}: {c.detail}" for c in bad) or "healthy"


def probe_http(url: str, timeout_s: float) -> HealthCheck:
    """One GET; healthy only for a 2xx JSON body whose ``status`` is ``ok``."""
    import httpx  # here, not at the top: ~0.1 s of every command's start-up, needed only by health checks

    shown = redact_urls(url)  # a token in the URL (?token=, user:pass@) is never echoed
    try:
        resp = httpx.get(url, timeout=timeout_s, follow_redirects=True)
    except httpx.ConnectError as exc:
        kind = "connection refused" if "refused" in str(exc).lower() else "http error"
        return HealthCheck(
            "http",
            False,
            f"{shown}: {kind} ({redact_urls(str(exc))})" if kind == "http error" else f"{shown}: connection refused",
            kind,
        )
    except httpx.TimeoutException:
        return HealthCheck("http", False, f"{shown}: no answer within {timeout_s:g}s", "timeout")
    except httpx.HTTPError as exc:
        return HealthCheck("http", False, f"{shown}: {type(exc).__name__}: {redact_urls(str(exc))}", "http error")
    if not 200 <= resp.status_code < 300:
        return HealthCheck("http", False, f"{shown}: HTTP {resp.status_code}", "non-2xx")
    try:
        body = resp.json()
    except ValueError:
        return HealthCheck(
            "http", False, f"{shown}: HTTP {resp.status_code} but the body is not JSON ({resp.text[:60]!r})", "not JSON"
        )
    status = body.get("status") if isinstance(body, dict) else None
    if status != "ok":
        return HealthCheck("http", False, f"{shown}: status is {status!r}, not 'ok'", "status not ok")
    return HealthCheck("http", True, f"{shown}: HTTP {resp.status_code}, status ok")


def probe_database(target: DatabaseTarget, read_query: str, timeout_s: float) -> HealthCheck:
    try:
        with connect(target, purpose="health", connect_timeout=max(1, int(timeout_s))) as conn:
            try:
                run_read_query(conn, read_query, target.schema)
            except Exception as exc:
                return HealthCheck("database", False, f"{read_query}: {str(exc).splitlines()[0]}", "read query failed")
    except MissingDatabase as exc:
        return HealthCheck("database", False, exc.message, "database does not exist")
    except PgRunbookError as exc:
        return HealthCheck("database", False, exc.message, "database unreachable")
    return HealthCheck("database", True, f"{target.display}: {read_query} ok")


def check_health(
    env: Environment,
    *,
    target: DatabaseTarget | None = None,
    url: str | None = None,
    deadline_s: float | None = None,
    check_http: bool = True,
) -> HealthResult:
    """Retry both checks until both pass or the deadline passes; the last failure is what is reported.
    A database the server says does not exist ends the retries at once: waiting does not bring it back
    (a lost database, or a URL naming the wrong one), and the operator needs that answer now."""
    s = env.settings
    url = url or s.health_url
    deadline_s = s.health_deadline_s if deadline_s is None else deadline_s
    db_target = target or env.target(direct=False)
    t0 = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        checks = []
        if check_http and url:
            checks.append(probe_http(url, s.health_timeout_s))
        checks.append(probe_database(db_target, s.read_query, s.health_timeout_s))
        ok = all(c.ok for c in checks)
        elapsed = time.monotonic() - t0
        lost = any(c.kind == "database does not exist" for c in checks)
        if ok or lost or elapsed + s.health_interval_s >= deadline_s:
            return HealthResult(ok, checks, attempts, round(elapsed, 3))
        time.sleep(s.health_interval_s)
