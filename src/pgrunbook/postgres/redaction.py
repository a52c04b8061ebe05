"""Redaction: the one place that knows every spelling a secret can take in text.

A password reaches output in many forms, mixed within one string: raw, percent-encoded (any subset
of its characters, either hex case, ``+`` for a space, twice encoded: ``encodeURIComponent``,
``encodeURI``, ``quote``, ``quote_plus``), JSON-escaped (``\\u00e9`` in either case, ``\\/``,
surrogate pairs), Python-escaped (``repr``/``ascii``: ``\\xe9``, ``\\U0001f600``), shell-quoted
(``shlex.quote``'s ``'"'"'``, ``'\\''``, backslashes in double quotes), HTML entities, each of those
once more inside JSON (backslashes doubled: a journal row of a JSON document), in Unicode's
composed or decomposed form (NFC, NFD, NFKC, NFKD) or as UTF-8 read as Latin-1 (mojibake).

Rather than list every spelling (a password of n characters has 2**n percent-encoded ones alone),
``secret_pattern`` builds one regular expression per secret: the secret's characters in order, each
matching any of its own spellings. A match is a decoded equal of the secret, however it was encoded.

Where a secret is replaced: a secret of ``WHOLE_TOKEN_BELOW`` characters or fewer (``app``) only where it
stands as a token of its own — not inside a longer word or identifier (``applied``, ``app_rollback``,
``my-app.example``) — so hints stay true; a longer secret everywhere, inside words too (a random
16-character password inside a word is a leak, not a coincidence). Whatever the length, credentials
in URLs and ``password=`` keywords are removed by position, secret known or not.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from functools import lru_cache

REDACTED = "***"

# Query parameters whose value is a credential (S3 presigned URLs, webhook and API tokens).
_SECRET_PARAM = re.compile(
    r"([?&;](?:[A-Za-z0-9_.-]*(?:token|secret|password|passwd|pwd|key|sig|signature|credential|auth|sas)"
    r"[A-Za-z0-9_.-]*)=)([^&;#\s\"'<>]+)",
    re.IGNORECASE,
)
# postgres URLs keep their user name (it says who connected); only the password goes, up to the last @
# before the path: Prisma reads an unencoded @ in a password as part of it.
_PG_USERINFO = re.compile(r"(postgres(?:ql)?://[^:/@\s]*):[^/\s]*@")
# Any other scheme: the whole userinfo may be a token (https://TOKEN@host, s3://KEY:SECRET@bucket).
_URL_USERINFO = re.compile(r"\b((?!postgres(?:ql)?://)[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s\"'<>]+@")
_KEYWORD_PASSWORD = re.compile(r"((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
# Variable names whose values are secrets wherever they come from (checked by name, values >= 6 chars).
_SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_KEY|PRIVATE_KEY)$", re.IGNORECASE)

# Secrets this short or shorter are replaced only where they stand as a token of their own.
WHOLE_TOKEN_BELOW = 11
# One or more backslashes: an escape, at any nesting depth (JSON in JSON doubles each backslash).
_BS = r"\\{1,16}"
_NAMED_ESCAPES = {"\n": "n", "\t": "t", "\r": "r", "\b": "b", "\f": "f", "\v": "v", "\a": "a", "\0": "0"}
_HTML_NAMES = {"&": "amp", "<": "lt", ">": "gt", '"': "quot", "'": "(?:apos|#39)"}
# A token goes on across letters, digits, underscores, and dots or hyphens between them (a.b, my-app).
_TOKEN_BEFORE = (
    r"(?:(?<![^\W])(?<![^\W][.-])|(?<=\\[nrtbfv0])|(?<=%[0-9A-Fa-f]{2})|(?<=\\x[0-9A-Fa-f]{2})|(?<=\\u[0-9A-Fa-f]{4}))"
)
_TOKEN_AFTER = r"(?![^\W]|[.-][^\W])"


def _hex(value: int, width: int) -> str:
    """``value`` as hexadecimal digits of ``width``, each letter in either case."""
    return "".join(f"[{d.lower()}{d}]" if d.isalpha() else d for d in f"{value:0{width}X}")


def _char_pattern(ch: str) -> str:
    """A regular expression for one character in any of its spellings."""
    cp = ord(ch)
    alts = [re.escape(ch)]
    if ch == "\\":
        alts = [_BS]
    elif cp < 128 and not ch.isalnum():
        alts.append(_BS + re.escape(ch))  # \" \' \/ \$ \` and their JSON-in-JSON forms
    if ch == "'":
        q, d = f"(?:{_BS})?'", f'(?:{_BS})?"'  # each quote of the idiom may be escaped once more
        alts += [q + d + q + d + q, q + _BS + q + q]  # shlex.quote's '"'"' and the '\'' idiom
    if ch == " ":
        alts.append(r"\+")
    if ch in _NAMED_ESCAPES:
        alts.append(_BS + _NAMED_ESCAPES[ch])
    if ch in _HTML_NAMES:
        alts.append(f"&{_HTML_NAMES[ch]};")
    if not ch.isalnum():
        alts.append(f"&#0*{cp};|&#[xX]0*{_hex(cp, 1)};")
    # Percent-encoded: each UTF-8 byte (or the one Latin-1 byte), possibly encoded twice (%25xx).
    utf8 = "".join(f"%(?:25)?{_hex(b, 2)}" for b in ch.encode("utf-8"))
    alts.append(utf8)
    if 127 < cp < 256:
        alts.append(f"%(?:25)?{_hex(cp, 2)}")
    # Python and JSON escapes.
    if cp < 256:
        alts.append(f"{_BS}x{_hex(cp, 2)}")
    if cp < 0x10000:
        alts.append(f"{_BS}u{_hex(cp, 4)}")
    else:
        alts.append(f"{_BS}U{_hex(cp, 8)}")
        high, low = 0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF)
        alts.append(f"{_BS}u{_hex(high, 4)}{_BS}u{_hex(low, 4)}")
    # The raw character last: alternatives are tried in order, and a longer spelling must win over a
    # raw prefix of it (``%25`` is an encoded ``%``, not ``%`` followed by ``25``).
    return "(?:" + "|".join([*alts[1:], alts[0]]) + ")"


def _unicode_forms(secret: str) -> set[str]:
    """``secret`` composed, decomposed, compatibility-folded, and its UTF-8 read as Latin-1/cp1252."""
    forms = {unicodedata.normalize(nf, secret) for nf in ("NFC", "NFD", "NFKC", "NFKD")} | {secret}
    for form in {secret, unicodedata.normalize("NFC", secret)}:  # mojibake of what was typed, not of K forms
        for codec in ("latin-1", "cp1252"):
            try:
                forms.add(form.encode("utf-8").decode(codec))
            except UnicodeDecodeError:
                continue
    return forms


@lru_cache(maxsize=256)
def secret_pattern(secret: str) -> re.Pattern[str]:
    """One compiled expression matching ``secret`` in every spelling ``redact`` removes (module doc);
    a short secret only where it stands as a token of its own."""
    body = "|".join(
        "".join(_char_pattern(ch) for ch in form) for form in sorted(_unicode_forms(secret), key=len, reverse=True)
    )
    if len(secret) > WHOLE_TOKEN_BELOW:
        return re.compile(f"(?:{body})")
    # A token boundary only where the secret's own edge is a word character: ``!x`` after ``a`` is
    # still the secret (``a`` cannot make it another word), ``app`` inside ``applied`` is not.
    before = _TOKEN_BEFORE if _is_word(secret[0]) else ""
    after = _TOKEN_AFTER if _is_word(secret[-1]) else ""
    return re.compile(f"{before}(?:{body}){after}")


def _is_word(ch: str) -> bool:
    return bool(re.match(r"\w", ch))


def redact_urls(text: str) -> str:
    """Credentials in URLs of any scheme: userinfo and token-looking query parameters."""
    text = _PG_USERINFO.sub(rf"\1:{REDACTED}@", text)
    text = _URL_USERINFO.sub(rf"\1{REDACTED}@", text)
    return _SECRET_PARAM.sub(rf"\1{REDACTED}", text)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without any spelling of any of ``secrets`` and without credentials in URLs or
    ``password=`` keywords. Known secrets go first, so a URL's password is gone in every form."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = secret_pattern(secret).sub(REDACTED, text)
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
                if unquote(parts.password) != unquote(
                    parts.username or ""
                ):  # shown as the user name anyway (DatabaseTarget.secrets)
                    found.append(unquote(parts.password))
            elif parts is not None and parts.username and not value.startswith(("postgres://", "postgresql://")):
                found.append(unquote(parts.username))
        if _SECRET_NAME.search(name) and len(value) >= 6:
            found.append(value)
    return found
