"""Kind 3 of issue 20: a secret in any spelling is removed from text pgrunbook shows or stores."""

from __future__ import annotations

import json
import re
import shlex
import unicodedata
from collections.abc import Callable
from typing import Literal
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pgrunbook.postgres.redaction import REDACTED, environment_secrets, redact, redact_urls
from pgrunbook.postgres.url import parse_database_url
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
        ("postgresql://app:p@ss@db/app", "ss@db"),  # an unencoded @: Prisma reads to the last one
        ("postgresql://app:pa#s?s@db:5432/app", "pa#s?s"),
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


# --- every encoding of every character, mixed (trial7 finding 7) --------------------------------------


def encode_uri_component(s: str) -> str:
    """JavaScript's encodeURIComponent: keeps A-Z a-z 0-9 - _ . ! ~ * ' ( ), so ' stays raw."""
    return quote(s, safe="-_.!~*'()")


def encode_uri(s: str) -> str:
    """JavaScript's encodeURI: also keeps ; , / ? : @ & = + $ #."""
    return quote(s, safe=";,/?:@&=+$-_.!~*'()#")


MORE_SPELLINGS: dict[str, Callable[[str], str]] = {
    "encodeURIComponent": encode_uri_component,
    "encodeURI": encode_uri,
    "quote_plus": quote_plus,
    "quote, quotes and backslash kept": lambda s: quote(s, safe="'\"\\ "),
    "encodeURIComponent twice": lambda s: encode_uri_component(encode_uri_component(s)),
    "NFD": lambda s: unicodedata.normalize("NFD", s),
    "NFKC": lambda s: unicodedata.normalize("NFKC", s),
    "NFD, percent-encoded": lambda s: quote(unicodedata.normalize("NFD", s), safe=""),
    "NFD in JSON": lambda s: json.dumps(unicodedata.normalize("NFD", s))[1:-1],
    "UTF-8 read as Latin-1": lambda s: s.encode("utf-8").decode("latin-1"),
    "encodeURIComponent in JSON in JSON": lambda s: json.dumps(json.dumps(encode_uri_component(s)))[1:-1],
    "repr of shlex.quote": lambda s: repr(shlex.quote(s))[1:-1],
    "JSON of shlex.quote": lambda s: json.dumps(shlex.quote(s))[1:-1],
    "JSON of a shell double-quoted": lambda s: json.dumps("".join("\\" + c if c in '"\\$`' else c for c in s))[1:-1],
    "HTML entities": lambda s: "".join(f"&#{ord(c)};" if not c.isalnum() else c for c in s),
}

TRIAL7_PASSWORDS = ["Ad'm\"in\\%2F é%", "app pw'\"\\ü%41:@/?#x", "lim%25it-long-enough", "ﬁancé-Ω-😀-tab\t"]


@pytest.mark.parametrize("spelling", sorted(MORE_SPELLINGS))
@pytest.mark.parametrize("password", TRIAL7_PASSWORDS)
def test_mixed_and_normalised_spellings_are_removed(password: str, spelling: str) -> None:
    spelled = MORE_SPELLINGS[spelling](password)
    out = redact(f"error: deploy failed: hook maintenance_on failed (exit 1): connecting with {spelled}", [password])
    evidence.output_checked(out, traceback=False, secret=spelled in out)
    assert spelled not in out
    # Only the wrapper's own quotes may remain around the mark (shlex.quote's '…').
    assert re.fullmatch(
        r"error: deploy failed: hook maintenance_on failed \(exit 1\): connecting with (\\?['\"])?\*\*\*(\\?['\"])?",
        out,
    ), (
        spelling,
        out,
    )


def test_trial7_hook_line_is_redacted_whole() -> None:
    """The tester's hook printed encodeURIComponent(pw): ' stays raw, the rest is encoded."""
    out = redact("connecting with Ad'm%22in%5C%252F%20%C3%A9%25", ["Ad'm\"in\\%2F é%"])
    assert out == "connecting with ***"


def _percent_some(chars: str, which: list[bool], upper: list[bool]) -> str:
    """``chars`` with the characters chosen by ``which`` percent-encoded in the hex case ``upper`` says."""
    out = []
    for i, ch in enumerate(chars):
        if which[i % len(which)]:
            enc = quote(ch, safe="")
            enc = enc if enc.startswith("%") else "".join(f"%{b:02X}" for b in ch.encode("utf-8"))
            out.append(enc if upper[i % len(upper)] else enc.lower())
        else:
            out.append(ch)
    return "".join(out)


WRAPPERS: dict[str, Callable[[str], str]] = {
    "none": lambda s: s,
    "json": lambda s: json.dumps(s)[1:-1],
    "json ascii-off": lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
    "json in json": lambda s: json.dumps(json.dumps(s))[1:-1],
    "repr": lambda s: repr(s)[1:-1],
    "ascii": lambda s: ascii(s)[1:-1],
    "shlex": shlex.quote,
    "shell double quotes": lambda s: "".join("\\" + c if c in '"\\$`' else c for c in s),
    "json of shlex": lambda s: json.dumps(shlex.quote(s))[1:-1],
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    password=st.text(
        alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="*"), min_size=12, max_size=20
    ),
    form=st.sampled_from(["NFC", "NFD", "NFKC", "NFKD"]),
    which=st.lists(st.booleans(), min_size=1, max_size=8),
    upper=st.lists(st.booleans(), min_size=1, max_size=4),
    wrapper=st.sampled_from(sorted(WRAPPERS)),
    before=st.text(max_size=8),
)
def test_property_any_subset_encoded_any_form_any_wrapper(
    password: str,
    form: Literal["NFC", "NFD", "NFKC", "NFKD"],
    which: list[bool],
    upper: list[bool],
    wrapper: str,
    before: str,
) -> None:
    """Whatever subset of characters is percent-encoded, in either hex case, in any Unicode
    normal form, inside JSON, repr, or shell quoting: the password does not survive."""
    spelled = WRAPPERS[wrapper](_percent_some(unicodedata.normalize(form, password), which, upper))
    assume(spelled.strip())
    out = redact(f"{before} :: {spelled} :: after", [password])
    evidence.output_checked(out, traceback=False, secret=spelled in out)
    assert spelled not in out
    assert re.search(r"\*\*\*[\\'\"]{0,4} :: after$", out), out  # at most the wrapper's quotes remain


# --- short secrets: replaced where they stand as a token, never inside words (trial7 finding 6) -------

HINTS = [
    "fix the cause, then pgrunbook migrate resolve --rolled-back 20260201000000_bad (nothing applied) "
    "or --applied 20260201000000_bad (completed by hand)",
    "environment 'default' has no app_rollback hook; set [environments.default.hooks] app_rollback",
    "the app is served from my-app.example.com; happy paths apply; mapping applies to apps",
    "postgres: connection to server at db.internal failed: FATAL: password authentication failed",
]


@pytest.mark.parametrize("secret", ["app", "pw", "ok", "on", "test", "apply", "db", "post", "admin"])
@pytest.mark.parametrize("hint", HINTS)
def test_short_secret_inside_words_leaves_hints_intact(secret: str, hint: str) -> None:
    """Only where the secret stands alone: ``applied`` and ``app_rollback`` stay (a true hint), a
    standalone ``app`` goes."""
    assume_inside = all(
        (m.start() > 0 and hint[m.start() - 1].isalnum()) or (m.end() < len(hint) and hint[m.end()].isalnum())
        for m in re.finditer(re.escape(secret), hint)
    )
    if assume_inside:
        assert redact(hint, [secret]) == hint
    for around in (" {} ", '"{}"', "'{}'", "={}&", ":{}@", "({})", "[{}]", "\n{}\n", "\\n{}\\n", "%20{}%20"):
        text = "connecting with" + around.format(secret) + "now"
        out = redact(text, [secret])
        assert out == "connecting with" + around.format(REDACTED) + "now", (around, out)


common_words = st.sampled_from(
    ["applied", "apply", "rollback", "app_rollback", "mapping", "happy", "test", "testing", "admin", "postgres"]
)


@settings(max_examples=200, deadline=None)
@given(
    secret=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=8),
    words=st.lists(common_words, min_size=1, max_size=6),
    affix=st.tuples(st.sampled_from(["", "x", "re", "_", "9"]), st.sampled_from(["", "s", "ed", "_db", "1"])),
    sep=st.sampled_from([" ", ": ", "\n", '"', "'", "=", "@", "/", "\\n", "%20", ", "]),
)
def test_property_short_secret_never_survives_and_words_do(
    secret: str, words: list[str], affix: tuple[str, str], sep: str
) -> None:
    """A word that only contains the secret survives unchanged; the secret standing alone never does."""
    inside = affix[0] + secret + affix[1]
    assume(inside != secret)
    hint = " ".join([*words, inside])
    embedded = all(
        (m.start() > 0 and (hint[m.start() - 1].isalnum() or hint[m.start() - 1] == "_"))
        or (m.end() < len(hint) and (hint[m.end()].isalnum() or hint[m.end()] == "_"))
        for m in re.finditer(re.escape(secret), hint)
    )
    if embedded:
        assert redact(hint, [secret]) == hint
    text = f"{hint}{sep}{secret}{sep}{hint}"
    out = redact(text, [secret])
    assert f"{sep}{REDACTED}{sep}" in out, out


def test_password_equal_to_the_user_name_keeps_names_but_not_credentials() -> None:
    """``postgresql://app:app@…``: the role name stays readable in hints, the password position not."""
    target = parse_database_url("postgresql://app:app@127.0.0.1:5432/shop", source="DATABASE_URL")
    assert target.secrets() == []
    hint = 'GRANT "postgres" TO "app", or restore with --owner app; postgresql://app:app@db/shop PGPASSWORD=app'
    out = redact(hint, [*target.secrets(), *environment_secrets({"DATABASE_URL": target.url})])
    assert out == 'GRANT "postgres" TO "app", or restore with --owner app; postgresql://app:***@db/shop PGPASSWORD=***'


@pytest.mark.parametrize(("secret", "text"), [("!pw", "user!pw here"), ("pw!", "a pw!x"), ("#1", "id#1")])
def test_a_short_secret_with_a_punctuation_edge_goes_even_beside_a_word(secret: str, text: str) -> None:
    """The token boundary applies only at an edge that is a word character: a letter beside ``!`` cannot
    turn the secret into another word."""
    assert secret not in redact(text, [secret])
