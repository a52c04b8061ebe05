"""Email through Apprise against a real SMTP server (aiosmtpd) that requires a login: the
[monitor.smtp] settings with username_env/password_env deliver, and a wrong password is a delivery
error that names the server, never the password."""

from __future__ import annotations

from collections.abc import Iterator
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import pytest

from pgrunbook.config import Config
from pgrunbook.monitor.notify import make_notice, send
from tests.conftest import free_port

pytestmark = pytest.mark.integration

USER, PASSWORD = "pgrunbook@example.com", 'Sm"tp p@ss\\w%rd'


@pytest.fixture
def guarded_mailbox() -> Iterator[tuple[int, list[EmailMessage], list[tuple[str, str]]]]:
    """An SMTP server that refuses mail until the client logs in with USER/PASSWORD (AUTH PLAIN/LOGIN
    over plain TCP: loopback only, as aiosmtpd allows with auth_require_tls off)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    got: list[EmailMessage] = []
    tried: list[tuple[str, str]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = data.login.decode(), data.password.decode()
        tried.append((login, password))
        return AuthResult(success=(login, password) == (USER, PASSWORD))

    class Handler:
        async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
            got.append(message_from_bytes(envelope.content, _class=EmailMessage, policy=default_policy))
            return "250 OK"

    port = free_port()
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    yield port, got, tried
    controller.stop()


def _config(port: int) -> Config:
    smtp = {
        "host": "127.0.0.1",
        "port": port,
        "from_addr": USER,
        "to": ["oncall@example.com", "dba@example.com"],
        "username_env": "SMTP_USER",
        "password_env": "SMTP_PASSWORD",
    }
    return Config.model_validate({"project": {"owner": "ops@example.com"}, "monitor": {"smtp": smtp}})


def test_email_with_a_login_is_delivered_and_a_wrong_password_is_never_echoed(
    guarded_mailbox: tuple[int, list[EmailMessage], list[tuple[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, got, tried = guarded_mailbox
    config = _config(port)
    notice = make_notice(config, "production", "critical", "CRITICAL", "newest backup 2.5 days old")
    monkeypatch.setenv("SMTP_USER", USER)
    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)
    [delivery] = send(config, [notice])
    assert delivery.error is None and tried[-1] == (USER, PASSWORD)  # the password arrived intact
    assert sorted(m["To"] for m in got) == ["dba@example.com", "oncall@example.com"]
    assert all("CRITICAL for production" in m["Subject"] and "ops@example.com" in m["Subject"] for m in got)
    assert all("newest backup 2.5 days old" in m.get_content() for m in got)

    wrong = "wr0ng-" + PASSWORD
    monkeypatch.setenv("SMTP_PASSWORD", wrong)
    [delivery] = send(config, [notice])
    assert delivery.error and f"127.0.0.1:{port}" in delivery.error
    assert wrong not in delivery.error and "wr0ng" not in delivery.error and len(got) == 2

    # Python's smtplib sends AUTH credentials as ASCII only: a non-ASCII password cannot be sent, and
    # that is a delivery error like any other (it was an unhandled UnicodeEncodeError before Apprise)
    monkeypatch.setenv("SMTP_PASSWORD", "pässwörd-Geheim")
    [delivery] = send(config, [notice])
    assert delivery.error and "Geheim" not in delivery.error and len(got) == 2
