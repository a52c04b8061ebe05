"""Notifications: a Slack-compatible webhook and SMTP email, both named in [monitor], sent by Apprise.

Addresses and credentials live in environment variables, never in the config file or in error text.
A failed channel does not stop the others: each failure comes back as one redacted line.

Apprise (the notification library behind many self-hosted tools) does the sending: its ``json://``
service posts the webhook's body, re-shaped with Apprise's payload mapping to the body pgrunbook has
always posted (``{"text", "environment", "status"}``, which Slack, Mattermost and Rocket.Chat take),
and its ``mailto://`` service speaks SMTP with STARTTLS or TLS and a login. Other Apprise services can
be added later without touching the callers.

Values read from the environment are checked when a command that notifies starts (``check``,
``serve``), so a malformed URL is one ``error:`` naming the variable, not a failure hours later.
Surrounding whitespace is stripped first: ``echo "$URL" > secret`` leaves a trailing newline, and
the curl, Docker and Kubernetes users who made that secret mean the URL without it; whitespace *inside*
a URL is refused.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from pgrunbook.config import Config
from pgrunbook.errors import ConfigError
from pgrunbook.postgres.url import redact


@dataclass(frozen=True)
class Notice:
    environment: str
    status: str  # ok (recovered), warning, critical, failed
    headline: str  # "CRITICAL for production on db-1 (owner: ...)"
    detail: str

    @property
    def text(self) -> str:
        return f"{self.headline}: {self.detail}"


def make_notice(config: Config, environment: str, status: str, verb: str, detail: str) -> Notice:
    """One wording for every channel: what, where, on which host, and who owns it."""
    owner = f" (owner: {config.project.owner})" if config.project.owner else ""
    return Notice(environment, status, f"pgrunbook {verb} for {environment} on {socket.gethostname()}{owner}", detail)


@dataclass
class Delivery:
    channel: str
    environment: str
    error: str | None = None


@dataclass(frozen=True)
class Channels:
    """What notifications go to, resolved from the configuration and the environment, validated."""

    webhook: str | None  # the URL, surrounding whitespace removed
    smtp_user: str | None
    smtp_password: str | None

    @property
    def secrets(self) -> list[str]:
        """Everything that must never appear in a log line or an error: the whole URL, its token path
        and query, its password, the SMTP password."""
        out = [s for s in (self.smtp_password,) if s]
        if self.webhook:
            parts = urlsplit(self.webhook)
            out += [self.webhook, self.webhook.split("://", 1)[-1]]
            out += [p for p in (parts.password, unquote(parts.password or ""), parts.query) if p]
            out += [seg for seg in parts.path.split("/") if len(seg) >= 8]  # token-like path segments
        return out


def check_webhook_url(value: str, var: str) -> str:
    """The webhook URL with surrounding whitespace removed, or a ConfigError naming the variable.

    Only http and https are accepted; the URL's text is never put in the error (it carries a token)."""
    url = value.strip()
    problem = None
    if not url:
        problem = "it is empty"
    elif any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        problem = "it contains whitespace or control characters inside the URL"
    else:
        try:
            parts = urlsplit(url)
            port = parts.port  # raises on a port that is not a number or out of range
        except ValueError as exc:
            problem = f"it cannot be parsed ({exc})"
        else:
            if parts.scheme not in ("http", "https"):
                problem = f"its scheme is {parts.scheme or 'missing'!r}, not http or https"
            elif not parts.hostname:
                problem = "it names no host"
            elif port == 0:
                problem = "its port is 0"
    if problem:
        raise ConfigError(
            f"{var} (the webhook URL named by [monitor] webhook_url_env) is not a valid URL: {problem}",
            hint=f"set {var} to the https:// URL your chat tool gave for its incoming webhook",
        )
    return url


def resolve_channels(config: Config, environ: Mapping[str, str] | None = None) -> Channels:
    """Read and check the channels' settings from the environment; ConfigError names what is wrong."""
    environ = os.environ if environ is None else environ
    var = config.monitor.webhook_url_env
    raw = environ.get(var) if var else None
    webhook = check_webhook_url(raw, var) if raw and var else None
    if raw is not None and var and not raw.strip():
        webhook = None  # set but empty: notifications by webhook are off, as when unset
    user = password = None
    smtp = config.monitor.smtp
    if smtp is not None:
        user = environ.get(smtp.username_env) if smtp.username_env else None
        password = environ.get(smtp.password_env) if smtp.password_env else None
        if bool(user) != bool(password) and smtp.username_env and smtp.password_env:
            missing = smtp.password_env if user else smtp.username_env
            raise ConfigError(
                f"{missing} is not set, but [monitor.smtp] logs in with a user name and a password",
                hint=f"set {missing}, or remove username_env and password_env from [monitor.smtp]",
            )
    return Channels(webhook, user, password)


def send(config: Config, notices: list[Notice], only: set[str] | None = None) -> list[Delivery]:
    """Send every notice through every configured channel (or those in ``only``: "webhook", "email");
    returns what was sent and what failed. A malformed setting is a failed delivery here, not a crash."""
    out: list[Delivery] = []
    if not notices:
        return out
    try:
        channels = resolve_channels(config)
    except ConfigError as exc:
        return [Delivery("settings", n.environment, exc.message) for n in notices]
    if channels.webhook and (only is None or "webhook" in only):
        out += [_webhook(channels, n) for n in notices]
    if config.monitor.smtp is not None and (only is None or "email" in only):
        out += _email(config, channels, notices)
    return out


def webhook_service_url(url: str, notice: Notice) -> str:
    """The Apprise ``json://`` URL that posts ``{"text", "environment", "status"}`` to ``url``.

    Apprise's payload mapping: ``:key=`` drops one of its own fields, ``:message=text`` renames the
    body's field, ``:name=value`` adds a field; the webhook's own query parameters become ``-name=value``
    (passed through to the request)."""
    parts = urlsplit(url)
    scheme = "jsons" if parts.scheme == "https" else "json"
    userinfo = parts.netloc.rpartition("@")[0]  # as written: already percent-encoded, Apprise decodes it once
    auth = f"{userinfo}@" if userinfo else ""
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else (parts.hostname or "")
    port = f":{parts.port}" if parts.port else ""
    query: list[tuple[str, str]] = [(f"-{k}", v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    query += [(":version", ""), (":title", ""), (":attachments", ""), (":type", ""), (":message", "text")]
    query += [(":environment", notice.environment), (":status", notice.status), ("cto", "5"), ("rto", "10")]
    encoded = "&".join(f"{quote(k, safe=':-')}={quote(v, safe='')}" for k, v in query)
    return f"{scheme}://{auth}{host}{port}{parts.path or '/'}?{encoded}"


def _webhook(channels: Channels, notice: Notice) -> Delivery:
    assert channels.webhook is not None
    ok, detail = _apprise(webhook_service_url(channels.webhook, notice), "", notice.text)
    if ok:
        return Delivery("webhook", notice.environment)
    text = redact(detail, channels.secrets)
    return Delivery("webhook", notice.environment, f"could not post to the webhook: {text}")


def email_service_url(config: Config, channels: Channels) -> str:
    """The Apprise ``mailto://`` URL for [monitor.smtp]: host, port, TLS mode, login, sender, recipients."""
    smtp = config.monitor.smtp
    assert smtp is not None
    mode = "ssl" if smtp.ssl else ("starttls" if smtp.starttls else "insecure")
    auth = ""
    if channels.smtp_user and channels.smtp_password:
        auth = f"{quote(channels.smtp_user, safe='')}:{quote(channels.smtp_password, safe='')}@"
    host = f"[{smtp.host}]" if ":" in smtp.host else smtp.host
    query = [
        ("smtp", smtp.host),
        ("mode", mode),
        ("from", smtp.from_addr),
        ("to", ",".join(smtp.to)),
        ("cto", f"{smtp.timeout_s:g}"),
        ("rto", f"{smtp.timeout_s:g}"),
        ("format", "text"),
    ]
    encoded = "&".join(f"{k}={quote(v, safe='')}" for k, v in query)
    return f"mailto://{auth}{host}:{smtp.port}?{encoded}"


def _email(config: Config, channels: Channels, notices: list[Notice]) -> list[Delivery]:
    smtp = config.monitor.smtp
    assert smtp is not None
    url = email_service_url(config, channels)
    out = []
    for n in notices:
        ok, detail = _apprise(url, n.headline, n.text + "\n")
        if ok:
            out.append(Delivery("email", n.environment))
        else:
            text = redact(detail, channels.secrets)
            where = f"{smtp.host}:{smtp.port}"
            out.append(Delivery("email", n.environment, f"could not send email through {where}: {text}"))
    return out


def _apprise(service_url: str, title: str, body: str) -> tuple[bool, str]:
    """Send one message through one Apprise service; (sent, what Apprise said when it was not)."""
    import apprise

    _quiet_apprise()
    sender = apprise.Apprise()
    with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
        if not sender.add(service_url):
            return False, "the service URL was refused"
        try:
            ok = bool(sender.notify(body=body, title=title))
        except Exception as exc:  # Apprise reports failures by its return value; anything else is one too
            return False, f"{type(exc).__name__}: {exc}"
        said = captured.getvalue() if hasattr(captured, "getvalue") else ""
    lines = [ln.strip() for ln in said.splitlines() if ln.strip()]
    return ok, "; ".join(lines[-2:]) or "not delivered"


def _quiet_apprise() -> None:
    """Apprise's own log lines go nowhere by default (they could name a service URL); what a failure
    said is captured per message above, redacted, and reported as the delivery's error."""
    logger = logging.getLogger("apprise")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
