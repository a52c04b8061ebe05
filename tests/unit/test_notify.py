"""Notification settings checked when check/serve start: webhook URLs from the environment (a trailing
newline from ``echo`` is stripped, anything else malformed is refused naming the variable, never the
URL), mail settings refused at config load, and the Apprise service URLs pgrunbook builds."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgrunbook.config import Config
from pgrunbook.errors import ConfigError
from pgrunbook.monitor.notify import (
    check_webhook_url,
    email_service_url,
    make_notice,
    resolve_channels,
    send,
    webhook_service_url,
)
from tests import evidence

TOKEN = "xoxb-S3cr3tT0ken"
GOOD = f"https://hooks.example.com/services/T000/B000/{TOKEN}"


@pytest.mark.parametrize(
    "value",
    [GOOD, GOOD + "\n", "  " + GOOD + "\r\n", f"http://127.0.0.1:8080/hook/{TOKEN}?x=1", f"https://[::1]:9/{TOKEN}"],
)
def test_good_webhook_urls_pass_with_surrounding_whitespace_stripped(value: str) -> None:
    assert check_webhook_url(value, "SLACK_WEBHOOK") == value.strip()


BAD = [
    ("", "empty"),
    ("\n", "empty"),
    (f"https://hooks.example.com/services/{TOKEN} extra", "whitespace"),
    (f"https://hooks.example.com/serv\nices/{TOKEN}", "whitespace or control"),
    (f"https://hooks.example.com/\x00{TOKEN}", "control"),
    (f"htps://hooks.example.com/{TOKEN}", "scheme is 'htps'"),
    (f"hooks.example.com/services/{TOKEN}", "scheme is 'missing'"),
    (f"ftp://hooks.example.com/{TOKEN}", "scheme is 'ftp'"),
    (f"https:///{TOKEN}", "names no host"),
    (f"https://hooks.example.com:99999/{TOKEN}", "cannot be parsed"),
    (f"https://hooks.example.com:port/{TOKEN}", "cannot be parsed"),
    (f"https://[::1/{TOKEN}", "cannot be parsed"),
]


@pytest.mark.parametrize(("value", "why"), BAD)
def test_malformed_webhook_urls_are_refused_naming_the_variable_not_the_url(value: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_webhook_url(value, "SLACK_WEBHOOK")
    text = f"{caught.value.message} {caught.value.hint}"
    assert "SLACK_WEBHOOK" in text and why in text and TOKEN not in text
    evidence.bad_input("webhook URL")
    evidence.output_checked(text, traceback=False, secret=TOKEN in text)


@given(st.text(min_size=1, max_size=40))
def test_any_text_as_a_webhook_url_gives_the_url_back_or_a_named_error(junk: str) -> None:
    value = f"https://h.example.com/{TOKEN}/{junk}"
    try:
        url = check_webhook_url(value, "HOOK")
    except ConfigError as exc:
        assert "HOOK" in exc.message and TOKEN not in exc.message + (exc.hint or "")
    else:
        assert url == value.strip() and not any(c.isspace() for c in url)


def test_a_notification_that_fails_because_of_its_settings_is_a_delivery_error_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = Config.model_validate({"monitor": {"webhook_url_env": "HOOK"}})
    monkeypatch.setenv("HOOK", f"https://hooks.example.com/a b/{TOKEN}")
    notice = make_notice(config, "prod", "critical", "CRITICAL", "x")
    [delivery] = send(config, [notice])
    assert delivery.error and "HOOK" in delivery.error and TOKEN not in delivery.error
    with pytest.raises(ConfigError):
        resolve_channels(config)


def test_the_webhook_service_url_posts_the_body_pgrunbook_always_posted() -> None:
    notice = make_notice(Config(), "prod & co", "critical", "CRITICAL", "old")
    url = webhook_service_url(f"https://u:p%40ss@hooks.example.com:8443/services/{TOKEN}?a=1&b=", notice)
    parts = urlsplit(url)
    assert parts.scheme == "jsons" and parts.hostname == "hooks.example.com" and parts.port == 8443
    assert parts.path == f"/services/{TOKEN}" and parts.username == "u" and parts.password == "p%40ss"
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    assert query["-a"] == "1" and query["-b"] == ""  # the webhook's own parameters, passed through
    assert query[":message"] == "text" and query[":environment"] == "prod & co" and query[":status"] == "critical"
    assert all(query[f":{k}"] == "" for k in ("version", "title", "attachments", "type"))  # dropped fields


def test_the_email_service_url_carries_host_mode_login_and_addresses() -> None:
    smtp = {"host": "mail.example.com", "port": 465, "ssl": True, "from_addr": "pg@example.com", "to": ["a@x.io"]}
    config = Config.model_validate({"monitor": {"smtp": {**smtp, "username_env": "U", "password_env": "P"}}})
    channels = resolve_channels(config, {"U": "me@example.com", "P": "p@ss:/word"})
    url = email_service_url(config, channels)
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    assert parts.scheme == "mailto" and parts.hostname == "mail.example.com" and parts.port == 465
    assert parts.password == "p%40ss%3A%2Fword" and query["mode"] == "ssl"
    assert query["from"] == "pg@example.com" and query["to"] == "a@x.io" and query["smtp"] == "mail.example.com"
    assert "p@ss:/word" in channels.secrets


def test_smtp_login_needs_both_user_and_password() -> None:
    smtp = {"host": "m", "from_addr": "a@b.io", "to": ["c@d.io"], "username_env": "U", "password_env": "P"}
    config = Config.model_validate({"monitor": {"smtp": smtp}})
    with pytest.raises(ConfigError, match="P is not set"):
        resolve_channels(config, {"U": "me"})


MAIL_BAD = [
    ({"from_addr": "pgrunbook"}, "monitor.smtp.from_addr"),
    ({"from_addr": "pg@exa mple.com"}, "monitor.smtp.from_addr"),
    ({"to": ["oncall@example.com\n"]}, "monitor.smtp.to"),
    ({"to": ["Ops <ops@example.com>"]}, "monitor.smtp.to"),
    ({"to": []}, "monitor.smtp.to"),
    ({"host": "smtp://mail.example.com"}, "monitor.smtp.host"),
    ({"host": "mail.example.com:25"}, "monitor.smtp.host"),
    ({"host": "mail example.com"}, "monitor.smtp.host"),
    ({"password_env": "hunter2 hunter2"}, "monitor.smtp.password_env"),
]


@pytest.mark.parametrize(("change", "key"), MAIL_BAD)
def test_mail_settings_are_refused_at_config_load_naming_the_key(change: dict, key: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pgrunbook.config import load_config

    smtp = {"host": "mail.example.com", "from_addr": "pg@example.com", "to": ["oncall@example.com"], **change}
    lines = ["[monitor.smtp]"] + [f"{k} = {_toml(v)}" for k, v in smtp.items()]
    (tmp_path / "pgrunbook.toml").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(cwd=tmp_path, environ={})
    assert key in caught.value.message
    evidence.bad_input("mail setting")


def test_a_url_put_where_the_variable_name_goes_is_refused_without_echoing_it() -> None:
    from pgrunbook.config import load_config

    with pytest.raises(ConfigError) as caught:
        load_config(environ={"PGRUNBOOK_MONITOR__WEBHOOK_URL_ENV": GOOD}, cwd=__import__("pathlib").Path("/"))
    assert "monitor.webhook_url_env" in caught.value.message and TOKEN not in caught.value.message


def _toml(v: object) -> str:
    import json

    return json.dumps(v)
