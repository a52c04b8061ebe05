"""Notifications: a Slack-compatible webhook and SMTP email, both named in [monitor].

Addresses and credentials live in environment variables, never in the config file or in error text.
A failed channel does not stop the others: each failure comes back as one redacted line.
"""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage

from pgrunbook.config import Config
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


def send(config: Config, notices: list[Notice]) -> list[Delivery]:
    """Send every notice through every configured channel; returns what was sent and what failed."""
    out: list[Delivery] = []
    if not notices:
        return out
    var = config.monitor.webhook_url_env
    url = os.environ.get(var) if var else None
    if url:
        out += [_webhook(url, n) for n in notices]
    if config.monitor.smtp is not None:
        out += _email(config, notices)
    return out


def _webhook(url: str, notice: Notice) -> Delivery:
    import httpx

    try:
        httpx.post(
            url,
            json={"text": notice.text, "environment": notice.environment, "status": notice.status},
            timeout=10,
        ).raise_for_status()
    except httpx.HTTPError as exc:
        text = redact(str(exc), [url]).replace(url, "<webhook>")
        return Delivery("webhook", notice.environment, f"could not post to the webhook: {text}")
    return Delivery("webhook", notice.environment)


def _email(config: Config, notices: list[Notice]) -> list[Delivery]:
    smtp = config.monitor.smtp
    assert smtp is not None
    user = os.environ.get(smtp.username_env) if smtp.username_env else None
    password = os.environ.get(smtp.password_env) if smtp.password_env else None
    secrets = [s for s in (password,) if s]
    try:
        cls = smtplib.SMTP_SSL if smtp.ssl else smtplib.SMTP
        with cls(smtp.host, smtp.port, timeout=smtp.timeout_s) as server:
            if smtp.starttls:
                server.starttls(context=ssl.create_default_context())
            if user and password:
                server.login(user, password)
            for n in notices:
                msg = EmailMessage()
                msg["Subject"] = n.headline
                msg["From"] = smtp.from_addr
                msg["To"] = ", ".join(smtp.to)
                msg.set_content(n.text + "\n")
                server.send_message(msg)
    except (OSError, smtplib.SMTPException) as exc:
        text = redact(str(exc), secrets)
        where = f"{smtp.host}:{smtp.port}"
        return [Delivery("email", n.environment, f"could not send email through {where}: {text}") for n in notices]
    return [Delivery("email", n.environment) for n in notices]
