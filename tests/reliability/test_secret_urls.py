"""Kind 3 of issue 20: credentials in URLs pgrunbook echoes (health, S3 storage, webhook) never shown."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from pgrunbook.postgres.cluster import LocalCluster, free_port
from tests import evidence
from tests.conftest import Project, assert_clean_error

pytestmark = pytest.mark.reliability

TOKEN = "tok-Zq9-s3cr3t-777"


def test_health_url_token_is_not_echoed(project: Project) -> None:
    url = f"http://user:{TOKEN}x@127.0.0.1:{free_port()}/health?token={TOKEN}&x=1"
    r = project.cli("health", "--url", url, "--deadline", "0.5")
    text = r.stdout + r.stderr
    evidence.output_checked(text, traceback="Traceback" in text, secret=TOKEN in text)
    assert r.returncode == 2 and "error:" in r.stderr
    assert TOKEN not in text and "127.0.0.1" in text


def test_s3_url_with_credentials_is_refused_without_echoing_them(seeded: Project) -> None:
    bid = seeded.cli("backup", "create").stdout.strip()
    r = seeded.cli("backup", "copy", bid, "--to", f"s3://AKIAEXAMPLE:{TOKEN}@bucket/prefix")
    assert_clean_error(r, 3, "carries credentials")
    assert TOKEN not in r.stdout + r.stderr


def test_webhook_url_from_the_environment_is_redacted_in_errors(project: Project) -> None:
    """A webhook URL is a secret as a whole (its path is the token): named by the configuration, its
    value is removed from any error text."""
    hook = f"https://hooks.example.invalid/services/T0/B0/{TOKEN}"
    project.write_config(
        '[backup]\nstorage = "backups"\n[monitor]\nwebhook_url_env = "SLACK_URL"\n'
        "[environments.default]\n[environments.default.hooks]\n"
        'maintenance_on = "echo posting to $SLACK_URL failed; exit 1"\n'
    )
    bid = project.cli("backup", "create").stdout.strip()
    assert bid
    r = project.cli(
        "restore", bid, "--in-place", "--confirm", project.url.rsplit("/", 1)[1], extra_env={"SLACK_URL": hook}
    )
    text = r.stdout + r.stderr
    evidence.output_checked(text, traceback="Traceback" in text, secret=TOKEN in text)
    assert "hook maintenance_on failed" in r.stderr, r.stderr
    assert TOKEN not in text


# --- a password written into DATABASE_URL without percent-encoding -------------------------------------

ODD = "Zq9HUNT"  # the searchable part of every password below


@pytest.fixture
def odd_role(cluster: LocalCluster, seeded: Project) -> Iterator[Callable[[str], str]]:
    """A login role whose password is set per test; returns a function giving the unencoded URL."""
    role = "odd_pw_role"
    (seeded.root / "prisma" / "migrations").mkdir(parents=True)
    dbname = seeded.url.rsplit("/", 1)[1]

    def with_password(password: str) -> str:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        return f"postgresql://{role}:{password}@127.0.0.1:{cluster.port}/{dbname}"

    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER").format(sql.Identifier(role)))
    yield with_password


def _leaks(project: Project, *texts: str) -> list[str]:
    """Where the password's searchable part shows: the texts given, and every file pgrunbook wrote."""
    found = [t[:200] for t in texts if ODD.lower() in t.lower()]
    for path in sorted(project.root.rglob("*")):
        if path.is_file() and ODD.lower().encode() in path.read_bytes().lower():
            found.append(str(path))
    return found


@pytest.mark.parametrize("delimiter", ["#", "?", "/"])
def test_a_password_cut_short_by_an_unencoded_delimiter_is_refused_and_shown_nowhere(
    seeded: Project, odd_role: Callable[[str], str], delimiter: str
) -> None:
    """Found by a breaker trial: `app:Zq9HUNTER#x@host` made libpq read the password as the host's
    port; every command printed it (`cannot connect to postgresql://app:Zq9HUNTER/postgres`) and the
    journal kept it. Now each command refuses the URL before connecting, names the character, and
    no text or file holds any part of the password."""
    assert seeded.cli("backup", "create").returncode == 0  # with the right URL: restore has a backup to read
    url = odd_role(f"{ODD}{delimiter}x")
    env = {"DATABASE_URL": url}
    for args in (("status",), ("restore", "latest", "--into", "wont_happen"), ("migrate", "deploy")):
        r = seeded.cli(*args, extra_env=env)
        assert_clean_error(r, 3, f"holds an unencoded '{delimiter}'")
        assert "%23" in r.stderr and not _leaks(seeded, r.stdout, r.stderr), (args, r.stderr)
    for args in (("doctor",), ("check",)):  # reports of many checks: the URL's is one failing line
        r = seeded.cli(*args, extra_env=env)
        assert r.returncode != 0 and f"holds an unencoded '{delimiter}'" in r.stdout + r.stderr, r.stdout
        assert not _leaks(seeded, r.stdout, r.stderr), (args, r.stdout)


def test_a_password_with_an_unencoded_at_or_space_is_read_as_prisma_reads_it(
    seeded: Project, odd_role: Callable[[str], str]
) -> None:
    """Prisma's URL parser ends the user:password part at the last @ and encodes spaces itself; libpq
    alone stopped at the first @. Both spellings now connect, and the password shows nowhere."""
    for password in (f"{ODD}@x", f"{ODD} x y", f"{ODD}@ @z"):
        r = seeded.cli("status", "--json", extra_env={"DATABASE_URL": odd_role(password)})
        assert r.returncode == 0, r.stderr
        assert not _leaks(seeded, r.stdout, r.stderr)
