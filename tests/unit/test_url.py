from __future__ import annotations

from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgrunbook.errors import ConfigError
from pgrunbook.postgres.runner import connection
from pgrunbook.postgres.url import PRISMA_ONLY, parse_database_url, redact, url_with_dbname


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
    multi = parse_database_url("postgresql://u@h1:5432,h2:5433/db")
    assert multi.params["host"] == "h1,h2" and multi.params["port"] == "5432,5433"


def test_non_postgres_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL is not a postgresql:// URL"):
        parse_database_url("mysql://u:p@h/d")


def test_redact_removes_url_passwords_and_known_secrets() -> None:
    text = "failed for postgresql://u:hunter22@h:5432/d with password=hunter22 and p%40ss"
    out = redact(text, ["hunter22", "p@ss"])
    assert "hunter22" not in out and "p%40ss" not in out


SURROGATES: tuple[Literal["Cs"]] = ("Cs",)  # not encodable: no password can hold them


@given(
    st.text(alphabet=st.characters(exclude_categories=SURROGATES, exclude_characters="\x00"), min_size=1, max_size=30)
)
def test_any_password_roundtrips_and_never_shows(password: str) -> None:
    from urllib.parse import quote

    t = parse_database_url(f"postgresql://user:{quote(password, safe='')}@localhost:5432/db")
    assert t.password == password
    assert "password" not in t.conninfo()
    assert "password" not in connection(t).env.get("PGAPPNAME", "")


# libpq's own parser decides (psycopg.conninfo.conninfo_to_dict): the shapes its documentation shows.
LIBPQ_CASES = [
    ("postgresql://u@[2001:db8::1]:5433/db", {"user": "u", "host": "2001:db8::1", "port": "5433", "dbname": "db"}),
    ("postgresql://[::1]/db", {"host": "::1", "dbname": "db"}),
    ("postgresql://u@h1:5432,h2:5433/db", {"user": "u", "host": "h1,h2", "port": "5432,5433", "dbname": "db"}),
    (
        "postgresql://h1,h2/db?target_session_attrs=read-write",
        {"host": "h1,h2", "port": ",", "dbname": "db", "target_session_attrs": "read-write"},
    ),
    ("postgresql:///db?host=%2Fvar%2Frun%2Fpostgresql", {"host": "/var/run/postgresql", "dbname": "db"}),
    ("postgresql://%2Fvar%2Frun%2Fpostgresql/db", {"host": "/var/run/postgresql", "dbname": "db"}),
    ("postgresql:///db?host=/tmp&port=5499", {"host": "/tmp", "port": "5499", "dbname": "db"}),
    ("postgres://h/db?dbname=other", {"host": "h", "dbname": "other"}),
    ("postgresql://h/my%20db?application_name=a%20b", {"host": "h", "dbname": "my db", "application_name": "a b"}),
    ("postgresql://h", {"host": "h"}),
]


@pytest.mark.parametrize(("url", "params"), LIBPQ_CASES)
def test_urls_are_read_as_libpq_reads_them(url: str, params: dict[str, str]) -> None:
    assert parse_database_url(url).params == params


@pytest.mark.parametrize(
    ("url", "display"),
    [
        ("postgresql://u:pw@[::1]:5433/db", "postgresql://u:***@[::1]:5433/db"),
        ("postgresql://u@h1:5432,h2:5433/db", "postgresql://u@h1:5432,h2:5433/db"),
        ("postgresql://h1,h2/db", "postgresql://h1,h2/db"),
        ("postgresql:///db?host=%2Fvar%2Frun", "postgresql:///db?host=/var/run"),
    ],
)
def test_the_shown_url_keeps_every_host_and_never_the_password(url: str, display: str) -> None:
    assert parse_database_url(url).display == display


@pytest.mark.parametrize("key", sorted(PRISMA_ONLY - {"schema"}))
def test_every_prisma_only_parameter_is_taken_off_before_libpq(key: str) -> None:
    t = parse_database_url(f"postgresql://u:pw@h/db?sslmode=require&{key}=5&schema=tenant%20a")
    assert t.params == {"user": "u", "host": "h", "dbname": "db", "sslmode": "require"}
    assert t.ignored == (key,) and t.schema == "tenant a"


def test_a_key_value_conninfo_string_is_refused_with_the_url_form_as_hint() -> None:
    with pytest.raises(ConfigError, match="APP_URL is a key=value connection string") as err:
        parse_database_url("host=db.internal dbname=app password=Sekr1t", source="APP_URL")
    assert "postgresql://" in (err.value.hint or "") and "Sekr1t" not in err.value.message


@pytest.mark.parametrize(
    "url", ["postgresql://u:Sekr%zz1t@h/db", "postgresql://u:Sekr1t%00@h/db", "postgresql://u@h/db?password=Sekr1t%00"]
)
def test_what_libpq_refuses_is_a_config_error_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL is not a URL libpq accepts") as err:
        parse_database_url(url)
    assert "Sekr" not in err.value.message


def test_the_target_knows_its_variable_and_gives_a_child_the_full_url() -> None:
    url = "postgresql://app:p%40ss@db:5432/shop?schema=tenant&sslmode=require&connection_limit=3"
    t = parse_database_url(url, source="DIRECT_URL")
    assert t.variable == "DIRECT_URL" and t.with_dbname("x").variable == "DIRECT_URL"
    assert t.full_url() == url
    assert t.with_dbname("shop restored").full_url() == (
        "postgresql://app:p%40ss@db:5432/shop%20restored?schema=tenant&sslmode=require&connection_limit=3"
    )
    assert parse_database_url(t.with_dbname("shop restored").full_url()).params["dbname"] == "shop restored"
    assert url_with_dbname("postgresql://h/a?dbname=b&sslmode=require", "c") == "postgresql://h/c?sslmode=require"
    assert "p%40ss" not in repr(t) and "p@ss" not in repr(t)


def test_environment_targets_carry_the_variable_they_were_read_from() -> None:
    from pgrunbook.config import Config, database_target

    env = Config(environments={"prod": {"database_url_env": "POOLED", "direct_url_env": "DIRECT"}}).environment("prod")[
        1
    ]
    both = {"POOLED": "postgresql://h:6543/db?pgbouncer=true", "DIRECT": "postgresql://h:5432/db"}
    assert database_target("prod", env, direct=True, environ=both).variable == "DIRECT"
    assert database_target("prod", env, direct=False, environ=both).variable == "POOLED"
    only_pooled = {"POOLED": both["POOLED"]}
    assert database_target("prod", env, direct=False, environ=only_pooled).variable == "POOLED"
    # trial7 finding 25: a named direct URL that is unset is an error, never the pooled URL in its place
    for environ in (only_pooled, {**only_pooled, "DIRECT": ""}):
        with pytest.raises(ConfigError) as exc:
            database_target("prod", env, direct=True, environ=environ)
        assert exc.value.message.startswith("DIRECT is not set (environment 'prod' reads its direct URL")
        assert "pgrunbook.toml: direct_url_env names it" in exc.value.message
        assert "POOLED is not used in its place" in exc.value.message and "DIRECT" in (exc.value.hint or "")


@pytest.mark.parametrize(
    ("url", "direct_named", "warned"),
    [
        ("postgresql://u@h:5432/db?pgbouncer=true", False, "DATABASE_URL looks like a transaction-mode pooler"),
        ("postgresql://u@h:5432/db?schema=s&pgbouncer=true", False, "DATABASE_URL looks like"),
        ("postgresql://u@h:6543/db", False, "DATABASE_URL looks like"),
        ("postgresql://u@ep-x-pooler.eu.aws.neon.tech/db", False, "DATABASE_URL looks like"),
        ("postgresql://u@h:5432/db?pgbouncer=true", True, "the direct URL for migrations and backups, looks like"),
        ("postgresql://u@h:5432/db?pgbouncer=false", False, None),  # Prisma: a bool, exactly "true"
        ("postgresql://u@h:5432/db?xpgbouncer=true", False, None),
        ("postgresql://u@h:5432/db", False, None),
    ],
)
def test_a_pooler_looking_url_is_warned_about(url: str, direct_named: bool, warned: str | None) -> None:
    got = parse_database_url(url).pooler_warning(direct_named=direct_named)
    assert (got[0] if got else None) == warned or (warned is not None and got is not None and warned in got[0])


@pytest.mark.parametrize(
    "libpq_text",
    [
        'FATAL:  password authentication failed for user "u"',
        'FATAL:  database "db" does not exist',
        'FATAL:  role "u" does not exist',
        "connection to server at 127.0.0.1, port 1 failed: Connection refused",
        'could not translate host name "nowhere" to address: Name or service not known',
        "connection to server at 10.0.0.1 failed: timeout expired",
        'connection to server on socket "/tmp/.s.PGSQL.5432" failed: No such file or directory',
        "something libpq has never said before",
    ],
)
def test_every_connect_error_hint_names_the_variable_the_target_came_from(libpq_text: str) -> None:
    from pgrunbook.postgres.connect import describe_connect_error

    target = parse_database_url("postgresql://u:Pw-9@127.0.0.1:1/db", source="APP_DIRECT_URL")
    err = describe_connect_error(Exception(libpq_text), target)
    assert "APP_DIRECT_URL" in (err.hint or ""), err.hint
    assert "Pw-9" not in err.message + (err.hint or "")


_NAME = st.text(
    alphabet=st.characters(exclude_categories=SURROGATES, exclude_characters="\x00"), min_size=1, max_size=12
)
_HOST = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5})?", fullmatch=True),
    st.ip_addresses(v=6).map(str),
    st.ip_addresses(v=4).map(str),
)


@given(
    user=_NAME,
    password=_NAME,
    dbname=_NAME,
    hosts=st.lists(st.tuples(_HOST, st.integers(1, 65535)), min_size=1, max_size=3),
    prisma=st.lists(st.sampled_from(sorted(PRISMA_ONLY - {"schema"})), max_size=4, unique=True),
)
def test_any_url_is_read_as_libpq_reads_it_without_prismas_parameters(
    user: str, password: str, dbname: str, hosts: list[tuple[str, int]], prisma: list[str]
) -> None:
    """User, password and database percent-encoded, one to three hosts (IPv6 in brackets) with ports,
    Prisma's parameters mixed between libpq's: libpq's reading of the URL without them is the answer."""
    from urllib.parse import quote

    from psycopg.conninfo import conninfo_to_dict

    netloc = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in hosts)
    base = f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{netloc}/{quote(dbname, safe='')}"
    query = [f"{k}=1" for k in prisma] + ["sslmode=prefer"] + ["schema=s"]
    t = parse_database_url(base + "?" + "&".join(query))
    expected = {k: str(v) for k, v in conninfo_to_dict(base + "?sslmode=prefer").items()}
    assert t.password == expected.pop("password") == password
    assert t.params == expected
    assert t.params["dbname"] == dbname and t.params["user"] == user
    assert t.params["host"] == ",".join(h for h, _ in hosts)
    assert set(t.ignored) == set(prisma) and t.schema == "s"


@settings(deadline=None)  # slow on a loaded machine: no deadline, the property is what counts
@given(
    st.text(alphabet=st.characters(exclude_categories=SURROGATES, exclude_characters="\x00"), min_size=4, max_size=30)
)
def test_the_masked_url_of_another_database_keeps_the_query_and_never_the_password(password: str) -> None:
    """trial7 finding 9: the URL to set after a rollback, shown whole but for the password."""
    from urllib.parse import quote

    t = parse_database_url(
        f"postgresql://app:{quote(password, safe='')}@db.example:5432/shop?schema=shop%20s&sslmode=require"
    )
    shown = t.with_dbname("shop_rollback_20261201").masked_url()
    assert shown == "postgresql://app:***@db.example:5432/shop_rollback_20261201?schema=shop%20s&sslmode=require"


def test_a_masked_url_masks_a_password_given_as_a_parameter() -> None:
    t = parse_database_url("postgresql://app@h/db?password=s3cr3t-xyz&sslpassword=k3y-pass")
    shown = t.masked_url()
    assert "s3cr3t-xyz" not in shown and "k3y-pass" not in shown and shown.startswith("postgresql://app@h/db?")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:Zq9HUNTER#x@127.0.0.1:5432/app",
        "postgresql://app:Zq9HUNTER?x@127.0.0.1:5432/app",
        "postgresql://app:Zq9HUNTER/x@127.0.0.1:5432/app",
        "postgresql://app:Zq9HUNTER?x=y@127.0.0.1:5432/app",  # an = after the ?: the port is not a number
        "postgresql://app:12345#x@db/app",  # a password of digits reads as a port: the # still cuts it
        "postgresql://app:12345/x@db:5432/app",
        "postgres://app:Zq9HUNTER#@db/app?schema=s",
        "postgresql://a:Zq9HUNTER/x@h1:5432,h2:5432/app",
        # an @ in the password before the delimiter (found by hypothesis): no host, or the rest as a host
        "postgresql://app:@12345/x@db/app",
        "postgresql://app:@Zq9HUNTER/@db/app",
        "postgresql://app:@0Zq9HUNTER?x@db/app",
    ],
)
def test_a_password_cut_short_by_an_unencoded_delimiter_is_refused_without_any_of_it(url: str) -> None:
    """Found by a breaker trial: an unencoded #, ? or / in the password made libpq read the password as
    the host's port, and the connection error printed it (and the journal kept it)."""
    with pytest.raises(ConfigError, match="user:password part holds an unencoded") as err:
        parse_database_url(url)
    text = err.value.message + (err.value.hint or "")
    assert "Zq9HUNTER" not in text and "12345" not in text
    assert "%23" in (err.value.hint or "") and "%2F" in (err.value.hint or "")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://localhost/db?user=me@corp",  # an @ in a query value
        "postgresql://localhost:5432/my@db",  # a database named my@db
        "postgresql://h/db?options=-c%20x&application_name=a@b",
        "postgresql://u:p%23w@h:5432/db",  # encoded, as it should be
        "postgresql:///db?host=/var/run/postgresql&user=u@x",
        "postgresql://u:p@h/db?options=me@corp/x",  # a whole user:password@host, then @ and / in a value
        "postgresql://u:p@h/my@db",
    ],
)
def test_an_at_sign_the_url_can_hold_is_not_taken_for_a_cut_password(url: str) -> None:
    parse_database_url(url)


@settings(deadline=None)  # the first URL parse loads libpq's keyword list: slow on a loaded machine
@given(
    password=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00%"), min_size=1, max_size=24),
    host=st.sampled_from(["db", "127.0.0.1", "h1:5432,h2:5433", "db.example.com:6543"]),
)
def test_a_password_written_unencoded_is_read_whole_or_refused_without_it(password: str, host: str) -> None:
    """Whatever an unencoded password holds (an @ too, as Prisma's URL parser allows: the last @ ends
    the user:password part), the URL is either read with exactly that password, which DatabaseTarget
    keeps apart from every text, or refused with none of it in the error: never half-read, leaving the
    rest of the password in a host, port or database name that errors print."""
    try:
        target = parse_database_url(f"postgresql://app:{password}@{host}/app")
    except ConfigError as err:
        # a short or plain-word password may be part of the message's own wording ("?" in "unencoded
        # '?'": newuser14 M8); a password that cannot be wording must not be there
        wording_proof = len(password) >= 6 and any(not (c.isalpha() or c.isspace()) for c in password)
        assert not wording_proof or password not in err.message + (err.hint or "")
        return
    assert target.password == password, (target.password, target.params)
