"""Which databases a restore may write into (backup/targets.py), and how a lost database is recognised
in a connection failure (postgres/connect.py): pure rules, table-tested."""

from __future__ import annotations

import psycopg
import pytest

from pgrunbook.backup.targets import refuse_restore_target
from pgrunbook.errors import ConfigError, MissingDatabase
from pgrunbook.postgres.connect import describe_connect_error, missing_database
from pgrunbook.postgres.url import parse_database_url


@pytest.mark.parametrize(
    ("dbname", "source", "refused"),
    [
        ("template0", "app", "a template database"),
        ("template1", "app", "every database created later would copy the backup"),
        ("postgres", "app", "the server's maintenance database"),
        ("postgres", "postgres", "the server's maintenance database"),
        ("app", "app", "it is this environment's own database"),
        ("app_copy", "app", None),
        ("App", "app", None),  # names compare exactly, as PostgreSQL's do
        ("app", None, None),
    ],
)
def test_restore_targets(dbname: str, source: str | None, refused: str | None) -> None:
    if refused is None:
        refuse_restore_target(dbname, source)
        return
    with pytest.raises(ConfigError) as caught:
        refuse_restore_target(dbname, source)
    assert refused in caught.value.message and "nothing was changed" in caught.value.message


@pytest.mark.parametrize(
    ("libpq", "missing"),
    [
        ('connection to server at "127.0.0.1", port 5432 failed: FATAL:  database "app" does not exist', True),
        # breaker13 F3: names whose quotes changed the message's own quoting were not recognised
        ('connection to server at "h", port 5432 failed: FATAL:  database "Shop App\'s" does not exist', True),
        ('connection to server at "h", port 5432 failed: FATAL:  database "a"b" does not exist', True),
        ('connection to server at "h", port 5432 failed: FATAL:  role "database_admin" does not exist', False),
        ('connection to server at "h", port 5432 failed: FATAL:  password authentication failed for user "a"', False),
        ('connection to server at "h", port 5432 failed: Connection refused', False),
    ],
)
def test_a_lost_database_is_told_from_other_connection_failures(libpq: str, missing: bool) -> None:
    target = parse_database_url("postgresql://app:secret@h:5432/app", source="DATABASE_URL")
    ours = describe_connect_error(psycopg.OperationalError(libpq), target)
    assert missing_database(ours) is missing and isinstance(ours, MissingDatabase) is missing
    assert missing_database(psycopg.OperationalError(libpq)) is missing
    assert "secret" not in ours.message + (ours.hint or "")
