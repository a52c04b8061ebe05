"""Redaction: the one place that knows every spelling a secret can take in text.

A password reaches output in many forms: raw, percent-encoded (a URL, either hex case, ``+`` for a
space), JSON-escaped (a hook or a tool printing JSON; ``\\u00e9`` or raw UTF-8; ``\\/``), Python-escaped
(``repr`` in a traceback line), shell-quoted (``shlex.quote`` or double quotes in a printed command),
and each of these once more inside JSON (a journal row of a JSON document). ``redact`` replaces all
of them, plus credentials in any URL (userinfo of every scheme; token-looking query parameters such
as ``X-Amz-Signature`` or ``access_token``) and ``password=...`` in libpq keyword strings.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Mapping
from functools import lru_cache
from urllib.parse import quote, quote_plus

REDACTED = "***"

# Query parameters whose value is a credential (S3 presigned URLs, webhook and API tokens).
_SECRET_PARAM = re.compile(
    r"([?&;](?:[A-Za-z0-9_.-]*(?:token|secret|password|passwd|pwd|key|sig|signature|credential|auth|sas)"
    r"[A-Za-z0-9_.-]*)=)([^&;#\s\"'<>]+)",
    re.IGNORECASE,
)
# postgres URLs keep their user name (it says who connected); only the password goes.
_PG_USERINFO = re.compile(r"(postgres(?:ql)?://[^:/@\s]*):[^@\s/]*@")
# Any other scheme: the whole userinfo may be a token (https://TOKEN@host, s3://KEY:SECRET@bucket).
_URL_USERINFO = re.compile(r"\b((?!postgres(?:ql)?://)[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s\"'<>]+@")
_KEYWORD_PASSWORD = re.compile(r"((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
# Variable names whose values are secrets wherever they come from (checked by name, values >= 6 chars).
_SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_KEY|PRIVATE_KEY)$", re.IGNORECASE)


def _python_escaped(secret: str, quote_char: str, ascii_only: bool) -> str:
    """The body of a Python string literal of ``secret`` between ``quote_char`` quotes (repr/ascii)."""
    out = []
    for ch in secret:
        if ch == quote_char:
            out.append("\\" + ch)
        elif ch in "'\"":
            out.append(ch)
        else:
            out.append((ascii(ch) if ascii_only else repr(ch))[1:-1])
    return "".join(out)


def _json_escaped(secret: str) -> set[str]:
    forms = {json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    forms |= {re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(), f) for f in forms}
    forms |= {f.replace("/", "\\/") for f in forms}
    return forms


def _percent_encoded(secret: str) -> set[str]:
    forms = {quote(secret, safe=""), quote(secret), quote_plus(secret), quote_plus(secret, safe="/")}
    return forms | {re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), f) for f in forms}


def _shell_quoted(secret: str) -> set[str]:
    double = re.sub(r'(["\\$`])', r"\\\1", secret)
    return {shlex.quote(secret), secret.replace("'", "'\"'\"'"), double}


@lru_cache(maxsize=256)
def spellings(secret: str) -> tuple[str, ...]:
    """Every form of ``secret`` that redact removes, longest first (so no form leaves a remnant)."""
    if not secret:
        return ()
    forms = {secret}
    forms |= _percent_encoded(secret)
    forms |= _shell_quoted(secret)
    for q in ("'", '"'):
        forms |= {_python_escaped(secret, q, False), _python_escaped(secret, q, True)}
    forms |= {f for form in list(forms) for f in _json_escaped(form)}  # also JSON of each form above
    forms |= {f for form in list(forms) for f in _json_escaped(form)}  # JSON inside JSON (journal rows)
    return tuple(sorted((f for f in forms if f), key=len, reverse=True))


def redact_urls(text: str) -> str:
    """Credentials in URLs of any scheme: userinfo and token-looking query parameters."""
    text = _PG_USERINFO.sub(rf"\1:{REDACTED}@", text)
    text = _URL_USERINFO.sub(rf"\1{REDACTED}@", text)
    return _SECRET_PARAM.sub(rf"\1{REDACTED}", text)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without any spelling of any of ``secrets`` and without credentials in URLs or
    ``password=`` keywords. Known secrets go first, so a URL's password is gone in every form."""
    for form in sorted({f for s in secrets if s for f in spellings(s)}, key=len, reverse=True):
        text = text.replace(form, REDACTED)
    text = redact_urls(text)
    return _KEYWORD_PASSWORD.sub(rf"\1{REDACTED}", text)


def environment_secrets(environ: Mapping[str, str]) -> list[str]:
    """Secrets the process environment holds: passwords in URLs of any scheme, and the values of
    variables named like a secret (AWS_SECRET_ACCESS_KEY, PGPASSWORD, *_TOKEN ...)."""
    from urllib.parse import unquote, urlsplit

    found: list[str] = []
    for name, value in environ.items():
        value = value.strip()
        if "://" in value and "@" in value:
            try:
                parts = urlsplit(value)
            except ValueError:
                parts = None
            if parts is not None and parts.password:
                found.append(unquote(parts.password))
            elif parts is not None and parts.username and not value.startswith(("postgres://", "postgresql://")):
                found.append(unquote(parts.username))
        if _SECRET_NAME.search(name) and len(value) >= 6:
            found.append(value)
    return found
