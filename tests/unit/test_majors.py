"""The pure rules of PostgreSQL majors: which pg_restore reads which archive, which errors are tolerated
where, which tools are chosen among those installed, the install hint per system, drift's notes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgrunbook.backup.codec import stack
from pgrunbook.drift import canonical_view, extension_differences
from pgrunbook.errors import ToolError
from pgrunbook.postgres import tools
from pgrunbook.postgres.tool_errors import read_failure
from tests.unit.test_manifest_and_tools import _fake_tools

TIMEOUT_ERROR = (
    'pg_restore: error: could not execute query: ERROR:  unrecognized configuration parameter "transaction_timeout"'
)
OTHER_ERROR = 'pg_restore: error: could not execute query: ERROR:  role "app" does not exist'


@pytest.mark.parametrize(
    ("dump", "archive", "oldest"),
    [(12, "1.14", 12), (13, "1.14", 12), (15, "1.14", 12), (16, "1.15", 16), (17, "1.16", 17), (18, "1.16", 17)],
)
def test_archive_formats_and_the_pg_restore_that_reads_them(dump: int, archive: str, oldest: int) -> None:
    assert tools.archive_format(dump) == archive
    assert tools.min_restore_major(dump) == oldest
    assert tools.min_restore_major(19) == 19  # a major this table does not know: its own


@pytest.mark.parametrize("restore", [13, 14, 15, 16, 17, 18])
@pytest.mark.parametrize("server", [13, 14, 15, 16, 17, 18])
def test_the_transaction_timeout_error_is_tolerated_exactly_where_it_happens(restore: int, server: int) -> None:
    tolerated = restore >= 17 and server <= 16
    assert tools.needs_timeout_tolerance(restore, server) is tolerated
    assert ("--exit-on-error" in tools.restore_error_flags(restore, server)) is not tolerated
    lines = [f"pg_restore:pg_restore: {TIMEOUT_ERROR.removeprefix('pg_restore: ')}", "Command was: SET ..."]
    assert tools.unexpected_restore_errors(lines, restore, server) == ([] if tolerated else [lines[0][23:]])
    # anything else is never tolerated, wherever it appears among the tolerated ones
    found = tools.unexpected_restore_errors([TIMEOUT_ERROR, OTHER_ERROR, TIMEOUT_ERROR], restore, server)
    assert OTHER_ERROR.removeprefix("pg_restore: ") in found and len(found) == (1 if tolerated else 3)


def test_a_restore_is_trusted_only_when_its_errors_were_the_tolerated_one() -> None:
    chosen = tools.ClientTools(Path("/x/pg_dump"), Path("/x/pg_restore"), tools.ToolVersion(18, 1, "18.1"), 13)
    ignored = "pg_restore: warning: errors ignored on restore: 3"
    assert chosen.restore_flags() == []
    assert chosen.restore_failed(0, []) is None
    assert chosen.restore_failed(1, [TIMEOUT_ERROR, TIMEOUT_ERROR, ignored]) is None
    assert chosen.restore_failed(1, [TIMEOUT_ERROR, OTHER_ERROR, ignored]) == OTHER_ERROR.removeprefix("pg_restore: ")
    assert chosen.restore_failed(1, [TIMEOUT_ERROR]) == "exit code 1"  # no 'errors ignored': unexplained
    assert chosen.restore_failed(-9, [TIMEOUT_ERROR, ignored]) == "exit code -9"  # killed
    # parallel jobs interleave on one stderr: a context line can carry the "error:" prefix of a message
    # printed on the next line (a CI run's finding); pg_restore's own count says whether anything else failed
    context = "pg_restore: error: from TOC entry 3214; 2604 20554 DEFAULT account id postgres"
    bare = TIMEOUT_ERROR.removeprefix("pg_restore: error: ")
    two = "pg_restore: warning: errors ignored on restore: 2"
    assert chosen.restore_failed(1, [context, bare, TIMEOUT_ERROR, two]) is None
    assert chosen.restore_failed(1, [context, bare, OTHER_ERROR, ignored]) is not None  # 3 counted, 1 tolerated
    assert chosen.restore_failed(1, [context, bare, two]) is not None  # 2 counted, 1 tolerated
    same = tools.ClientTools(Path("/x/pg_dump"), Path("/x/pg_restore"), tools.ToolVersion(18, 1, "18.1"), 18)
    assert same.restore_failed(1, [context, bare, TIMEOUT_ERROR, two]) is not None  # nothing tolerated on 18
    assert same.restore_flags() == ["--exit-on-error"]
    assert same.restore_failed(1, [TIMEOUT_ERROR, ignored]) is not None  # not tolerated on 18


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Clients 15, 16 and 18 in versioned folders, nothing on PATH."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(tools, "_VERSIONED_DIRS", [str(tmp_path / "lib" / "*" / "bin")])
    for version in ("15.18", "16.2", "18.6"):
        _fake_tools(tmp_path / "lib" / version.split(".")[0] / "bin", version, tmp_path / "asked")
    return tmp_path


@pytest.mark.parametrize(
    ("dump", "server", "chosen", "tolerated"),
    [
        ("15.18", 15, 15, False),  # the server's own major
        ("15.18", 13, 16, False),  # none of 13: the newest that needs no tolerance
        ("15.18", 18, 18, False),
        ("16.2", 13, 16, False),  # 15 cannot read 16's archive
        ("18.6", 13, 18, True),  # only 17+ reads it: 18, with the one tolerated error
        ("18.6", 18, 18, False),
    ],
)
def test_the_pg_restore_that_fits_is_chosen(
    installed: Path, dump: str, server: int, chosen: int, tolerated: bool
) -> None:
    found = tools.restore_tools(dump, server, f"{server}.1")
    assert found.major == chosen and found.target_major == server
    assert ("--exit-on-error" not in found.restore_flags()) is tolerated


def test_no_pg_restore_reads_the_archive_names_what_is_needed(installed: Path) -> None:
    with pytest.raises(ToolError) as caught:
        tools.restore_tools("18.6", 15, "15.18", bin_dir=str(installed / "lib" / "15" / "bin"))
    message = caught.value.message
    assert message.startswith("pg_restore 15.18 (") and "cannot read this backup" in message
    assert "written by pg_dump 18.6 (archive format 1.16)" in message and "pg_restore 17 or newer" in message
    assert "target server is PostgreSQL 15.18" in message and "older than the server" not in message
    assert caught.value.hint == tools.install_hint(18)  # the archive's own major, not the oldest reader


@pytest.mark.parametrize(
    ("dump", "server", "advised"),
    [("18.4", None, 18), ("18.6", 15, 18), ("16.2", None, 16), ("16.2", 17, 17), ("17.10", 18, 18)],
)
def test_the_client_advised_is_the_archives_major_or_the_servers(
    installed: Path, dump: str, server: int | None, advised: int
) -> None:
    """trial7 finding 16: a backup of a server 18 read by pg_restore 15 advises client 18, not 17."""
    with pytest.raises(ToolError) as caught:
        tools.restore_tools(
            dump, server, f"{server}.1" if server else None, bin_dir=str(installed / "lib" / "15" / "bin")
        )
    assert caught.value.hint == tools.install_hint(advised)


def test_doctor_like_listing_of_every_installed_major(installed: Path) -> None:
    assert [t.major for t in tools.installed_tools()] == [18, 16, 15]
    assert [t.major for t in tools.installed_tools(str(installed / "lib" / "16" / "bin"))] == [16]


OS_RELEASES = {
    "debian": 'ID=debian\nVERSION_ID="12"\n',
    "ubuntu": "ID=ubuntu\nID_LIKE=debian\n",
    "rocky": 'ID="rocky"\nID_LIKE="rhel centos fedora"\n',
    "alpine": "ID=alpine\n",
    "arch": "ID=arch\n",
}


@pytest.mark.parametrize(
    ("system", "release", "needles"),
    [
        (
            "Linux",
            "debian",
            ["apt.postgresql.org.sh", "apt-get install postgresql-client-17", "/usr/lib/postgresql/17"],
        ),
        ("Linux", "ubuntu", ["apt.postgresql.org.sh", "postgresql-client-17"]),
        ("Linux", "rocky", ["PGDG", "dnf install postgresql17", "/usr/pgsql-17/bin"]),
        ("Linux", "alpine", ["apk add postgresql17-client"]),
        ("Linux", "arch", ["https://www.postgresql.org/download/", "postgres:17"]),
        ("Darwin", "arch", ["brew install postgresql@17", "libpq"]),
    ],
)
def test_install_hint_is_the_one_for_the_system(system: str, release: str, needles: list[str]) -> None:
    hint = tools.install_hint(17, system, OS_RELEASES[release])
    for needle in [*needles, "[postgres] bin_dir", "PGRUNBOOK_POSTGRES__BIN_DIR", "PATH"]:
        assert needle in hint, (needle, hint)
    assert "found in" not in hint and "or then" not in hint  # trial7 finding 16: it is not found yet
    assert "then point pgrunbook at that folder: set [postgres] bin_dir (or PGRUNBOOK_POSTGRES__BIN_DIR) to it" in hint


def test_by_hand_command_names_its_pg_restore_and_the_major_needed() -> None:
    cmd = stack("zstd").restore_command(pg_restore="/opt/pg18/bin/pg_restore", needs=17)
    assert cmd == (
        'zstd -dc db.dump.zst | /opt/pg18/bin/pg_restore --exit-on-error --dbname "$TARGET_DATABASE_URL"'
        "  # needs pg_restore 17 or newer"
    )
    # pg_dump 18 of a server 16: the by-hand pg_restore (>= 17) must get past its one SET error there
    tolerant = stack("gzip").restore_command(needs=17, flags=tools.restore_error_flags(18, 16))
    assert tolerant.startswith('pg_restore --dbname "$TARGET_DATABASE_URL" db.dump  # needs pg_restore 17 or newer')
    # trial11 F8: and that it ends with exit 1 and one harmless error there, so nobody takes it for a failure
    assert tolerant.endswith(
        "; on servers <= 16 it ends with exit 1 and one harmless error, unrecognized configuration parameter "
        '"transaction_timeout" (docs/compatibility.md): the data is restored'
    )
    assert "exit 1" not in stack("gzip").restore_command(needs=17, flags=tools.restore_error_flags(18, 17))


@pytest.mark.parametrize(("restore", "server"), [(18, 16), (17, 13), (18, 18), (16, 16), (15, 13)])
def test_the_tolerated_error_is_never_a_failures_cause(restore: int, server: int) -> None:
    """Under the tolerance the cause is read from the first other error; without it nothing is hidden."""
    found = tools.ClientTools(Path("d"), Path("r"), tools.ToolVersion(restore, 0, f"{restore}.0"), server)
    lines = [
        "pg_restore: error: could not execute query: ERROR:  "
        'unrecognized configuration parameter "transaction_timeout"',
        "Command was: SET transaction_timeout = 0;",
        "pg_restore: from TOC entry 3; 1259 16390 INDEX customer_helper app",
        "pg_restore: error: could not execute query: ERROR:  function norm(text) does not exist",
    ]
    tolerated = tools.needs_timeout_tolerance(restore, server)
    failure = read_failure("pg_restore", lines, ignorable=found.tolerated_errors())
    assert ("norm(text)" in failure.error) is tolerated and len(failure.ignored) == int(tolerated)
    assert (failure.entry is not None and failure.entry.name == "customer_helper") is tolerated
    first = found.restore_failed(1, lines)
    assert first is not None
    assert ("norm(text)" in first) is tolerated and ("transaction_timeout" in first) is not tolerated


def test_extension_versions_that_come_with_the_majors_are_notes_not_drift() -> None:
    a = {"pgcrypto": "1.3 (default)", "citext": "1.6 (default)", "hstore": "1.7"}
    b = {"pgcrypto": "1.4 (default)", "citext": "1.6 (default)", "hstore": "1.8 (default)"}
    drift, notes = extension_differences(a, b, "staging", "production", (15, 18))
    assert drift == ["extension hstore: staging has '1.7', production has '1.8 (default)'"]
    assert notes == [
        "extension pgcrypto: staging has 1.3, production has 1.4: each is its server's default "
        "(PostgreSQL 15 and 18); not drift"
    ]
    drift, notes = extension_differences(a, b, "staging", "production", (18, 18))
    assert len(drift) == 2 and not notes  # on the same major a different version is someone's doing


def test_view_text_of_different_majors_compares_equal_and_real_changes_do_not() -> None:
    pg15 = " SELECT member.id,\n    member.email\n   FROM member\n  WHERE (member.tier = 'pro'::tier);"
    pg18 = " SELECT id,\n    email\n   FROM member\n  WHERE (tier = 'pro'::tier);"
    assert canonical_view(pg15) == canonical_view(pg18)
    assert canonical_view(pg18) != canonical_view(pg18.replace("'pro'", "'free'"))
    join = " SELECT a.id FROM a JOIN b ON (a.id = b.id);"
    assert canonical_view(join) != canonical_view(join.replace("SELECT a.id", "SELECT b.id"))
    assert canonical_view("not sql at all (") == "not sql at all ("
