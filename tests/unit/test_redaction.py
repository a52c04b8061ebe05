"""Kind 3 of issue 20: a secret in any spelling is removed from text pgrunbook shows or stores."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pgrunbook.postgres.redaction import REDACTED, environment_secrets, redact, redact_urls
from pgrunbook.postgres.url import redact as url_redact
from tests import evidence

SPELLINGS: dict[str, Callable[[str], str]] = {
    "raw": lambda s: s,
    "percent (upper hex)": lambda s: quote(s, safe=""),
    "percent (lower hex)": lambda s: re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(s, safe="")),
    "percent, / kept": lambda s: quote(s),
    "form encoded (+ for space)": lambda s: quote_plus(s),
    "json ascii": lambda s: json.dumps(s)[1:-1],
    "json utf-8": lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
    "json in json": lambda s: json.dumps(json.dumps(s))[1:-1],
    "json of a raw line": lambda s: json.dumps(f"pw={s}")[1:-1],
    "python repr": lambda s: repr(s)[1:-1],
    "python ascii": lambda s: ascii(s)[1:-1],
    "shlex.quote": shlex.quote,
    "shell double quotes": lambda s: "".join("\\" + c if c in '"\\$`' else c for c in s),
}


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
@pytest.mark.parametrize(
    "password", ["Pw-s3cr3t-Zq9!", 'q"uo\\te', "pä$$ wörd", "it's 'x' \"y\"", "😀emoji/slash", "tab\there\nnl"]
)
def test_every_spelling_of_a_password_is_removed(password: str, spelling: str) -> None:
    spelled = SPELLINGS[spelling](password)
    text = f"error: hook maintenance_on failed (exit 1): {{'detail': {spelled}}} end"
    out = redact(text, [password])
    evidence.output_checked(out, traceback=False, secret=spelled in out)
    assert spelled not in out, (spelling, out)
    assert REDACTED in out


# The property: whatever the password and however it is spelled, no spelling survives.
passwords = st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="*"), min_size=6, max_size=24)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(password=passwords, spelling=st.sampled_from(sorted(SPELLINGS)), before=st.text(max_size=10))
def test_property_no_spelling_of_any_password_survives(password: str, spelling: str, before: str) -> None:
    spelled = SPELLINGS[spelling](password)
    assume(spelled.strip())
    text = f"{before} :: {spelled} :: after"
    out = redact(text, [password])
    evidence.output_checked(out, traceback=False, secret=spelled in out)
    assert spelled not in out


def test_url_redact_is_the_same_function() -> None:
    """One redaction module: postgres/url.py re-exports it for its existing callers."""
    assert url_redact is redact


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        ("postgresql://app:hunter22@db:5432/app", "hunter22"),
        ("postgres://app:p%40ss@db/app?sslmode=require", "p%40ss"),
        ("s3://AKIAEXAMPLE:wJalrXUtnFEMI@bucket/prefix", "wJalrXUtnFEMI"),
        ("https://user:tok3n-value@hooks.example.com/x", "tok3n-value"),
        ("https://ghp_abcdef123456@github.com/org/repo", "ghp_abcdef123456"),
        ("https://hooks.example.com/notify?token=abc123secret&channel=ops", "abc123secret"),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA%2F2024&X-Amz-Signature=deadbeef99&X-Amz-Date=1",
            "deadbeef99",
        ),
        ("https://api.example.com/hook?api_key=k-123456&x=1", "k-123456"),
        ("host=db password='se cret' user=app", "se cret"),
        ("sslpassword=keypass1 host=db", "keypass1"),
    ],
)
def test_credentials_in_any_url_are_removed(text: str, leaked: str) -> None:
    out = redact(f"cannot reach {text}: timed out")
    assert leaked not in out, out
    assert "timed out" in out


def test_urls_keep_what_helps_the_reader() -> None:
    out = redact_urls("postgresql://app:pw@db:5432/app and https://hooks.example.com/x?channel=ops")
    assert "postgresql://app:***@db:5432/app" in out
    assert "channel=ops" in out


def test_environment_secrets_by_url_and_by_name() -> None:
    env = {
        "DATABASE_URL": "postgresql://app:dbpass99@db/app",
        "SLACK_WEBHOOK_URL": "https://x:hookpass77@hooks.example.com/T/B",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-key-123",
        "GITHUB_TOKEN": "ghp_tokenvalue",
        "AWS_ACCESS_KEY_ID": "AKIAPUBLIC",  # an id, not a secret
        "SHORT_TOKEN": "1",  # too short to redact everywhere
        "PATH": "/usr/bin",
    }
    found = set(environment_secrets(env))
    assert {"dbpass99", "hookpass77", "aws-secret-key-123", "ghp_tokenvalue"} <= found
    assert "AKIAPUBLIC" not in found and "1" not in found and "/usr/bin" not in found
