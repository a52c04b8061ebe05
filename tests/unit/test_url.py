from __future__ import annotations

from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgrunbook.errors import ConfigError
from pgrunbook.postgres.runner import connection
from pgrunbook.postgres.url import parse_database_url, redact


def test_prisma_url_parameters_stay_away_from_libpq() -> None:
    t = parse_database_url(
        "postgresql://app:p%40ss@db.example.com:6543/shop?schema=tenant&connection_limit=5"
        "&sslmode=require&pgbouncer=true"
    )
    assert t.params == {"user": "app", "host": "db.example.com", "port": "6543", "dbname": "shop", "sslmode": "require"}
    assert t.password == "p@ss"
    assert t.schema == "tenant"
    assert set(t.ignored) == {"connection_limit", "pgbouncer"}
    assert t.pooler_suspected


def test_conninfo_for_argv_never_holds_the_password() -> None:
    t = parse_database_url("postgres://u:topsecret@h/d")
    assert "topsecret" not in t.conninfo()
    assert "topsecret" not in t.display and "***" in t.display
    assert connection(t).env["PGPASSWORD"] == "topsecret"
    assert "topsecret" not in repr(t)


def test_socket_host_and_ipv6_and_multi_host() -> None:
    assert parse_database_url("postgresql:///db?host=/var/run/postgresql").params["host"] == "/var/run/postgresql"
    assert parse_database_url("postgresql://u@[::1]:5433/db").params == {
        "user": "u",
        "host": "::1",
        "port": "5433",
        "dbname": "db",
    }
    multi = parse_database_url("postgresql://u@h1:5432,h2/db")
    assert multi.params["host"] == "h1,h2" and multi.params["port"] == "5432,5432"


def test_non_postgres_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL is not a postgresql:// URL"):
        parse_database_url("mysql://u:p@h/d")


def test_redact_removes_url_passwords_and_known_secrets() -> None:
    text = "failed for postgresql://u:hunter22@h:5432/d with password=hunter22 and p%40ss"
    out = redact(text, ["hunter22", "p@ss"])
    assert "hunter22" not in out and "p%40ss" not in out


SURROGATES: tuple[Literal["Cs"]] = ("Cs",)  # not encodable: no password can hold them


@given(st.text(alphabet=st.characters(exclude_categories=SURROGATES), min_size=1, max_size=30))
def test_any_password_roundtrips_and_never_shows(password: str) -> None:
    from urllib.parse import quote

    t = parse_database_url(f"postgresql://user:{quote(password, safe='')}@localhost:5432/db")
    assert t.password == password
    assert "password" not in t.conninfo()
    assert "password" not in connection(t).env.get("PGAPPNAME", "")
