"""Pure parts of Prisma compatibility: checksums, folder order, status rules."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgrunbook.errors import ConfigError
from pgrunbook.prisma.checksum import checksum_matches, script_checksum
from pgrunbook.prisma.history import HistoryRow
from pgrunbook.prisma.migrations_dir import read_migrations
from pgrunbook.prisma.status import LocalScript, compute_status, elsewhere_warning


def test_checksum_is_sha256_hex_and_tolerates_git_line_endings() -> None:
    # schema-engine/connectors/schema-connector/src/checksum.rs
    lf = b"CREATE TABLE a (id int);\nCREATE TABLE b (id int);\n"
    crlf = lf.replace(b"\n", b"\r\n")
    assert script_checksum(lf) == hashlib.sha256(lf).hexdigest()
    assert checksum_matches(crlf, script_checksum(lf))
    assert checksum_matches(lf, script_checksum(crlf))
    assert not checksum_matches(lf + b"-- edited\n", script_checksum(lf))


def test_legacy_checksum_rendering_without_zero_padding() -> None:
    script = b"SELECT 1;\n"
    legacy = "".join(f"{b:x}" for b in hashlib.sha256(script).digest())
    assert len(legacy) != 64
    assert checksum_matches(script, legacy)


def test_folders_in_byte_order_with_odd_names(tmp_path: Path) -> None:
    names = ["20240101_b", "20240101_a b", "2024_Zed", "2024_zed", "20240101_ä", "20240101_a'quote"]
    for n in names:
        (tmp_path / n).mkdir()
        (tmp_path / n / "migration.sql").write_text("SELECT 1;")
    (tmp_path / "migration_lock.toml").write_text('provider = "postgresql"\n')
    (tmp_path / "README.md").write_text("not a migration")
    got = [m.name for m in read_migrations(tmp_path)]
    assert got == sorted(names, key=lambda n: n.encode())
    assert got.index("2024_Zed") < got.index("2024_zed")


def test_lock_file_for_another_provider_is_refused(tmp_path: Path) -> None:
    (tmp_path / "migration_lock.toml").write_text('provider = "mysql"\n')
    with pytest.raises(ConfigError, match="P3019"):
        read_migrations(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        read_migrations(tmp_path / "nope")


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def row(name: str, script: bytes = b"x", *, finished: bool = True, rolled_back: bool = False, n: int = 0) -> HistoryRow:
    return HistoryRow(
        f"id{n}{name}",
        script_checksum(script),
        T0 if finished else None,
        name,
        None,
        T0 if rolled_back else None,
        T0 + timedelta(seconds=n),
        1 if finished else 0,
    )


def test_status_categories() -> None:
    local = [
        LocalScript("01", b"x"),
        LocalScript("02", b"edited"),
        LocalScript("03", b"x"),
        LocalScript("04", b"x"),
        LocalScript("05", None),
    ]
    rows = [
        row("01", n=1),
        row("02", b"original", n=2),
        row("03", finished=False, n=3),
        row("04", finished=False, rolled_back=True, n=4),
        row("00_gone", n=0),
    ]
    st_ = compute_status(local, rows)
    assert st_.applied == ["01", "02"]
    assert st_.modified == ["02"]
    assert st_.failed == ["03"]
    assert st_.pending == ["04"]  # rolled back: pending again
    assert st_.missing_locally == ["00_gone"]
    assert st_.without_script == ["05"]
    assert st_.exit_code == 2


def test_status_exit_codes() -> None:
    assert compute_status([LocalScript("01", b"x")], [row("01")]).exit_code == 0
    assert compute_status([LocalScript("01", b"x"), LocalScript("02", b"y")], [row("01")]).exit_code == 1
    assert compute_status([LocalScript("01", b"x")], [row("01", finished=False)]).exit_code == 2


@pytest.mark.parametrize(
    ("rows", "lock_held", "running", "failed", "exit_code"),
    [
        # the newest unfinished row without logs, while another session holds the lock: running
        ([row("01", n=1), row("02", finished=False, n=2)], True, ["02"], [], 1),
        # nobody holds the lock: the same row is failed (a killed run, a lost connection)
        ([row("01", n=1), row("02", finished=False, n=2)], False, [], ["02"], 2),
        # a row with logs has failed for good, lock or not
        ([row("01", n=1), dataclasses.replace(row("02", finished=False, n=2), logs="boom")], True, [], ["02"], 2),
        # the lock held by a resolve or a deploy that has not started a row yet: nothing is running
        ([row("01", n=1), row("02", n=2)], True, [], [], 1),
        # only the newest unfinished row can be the running one
        ([row("02", finished=False, n=1), row("03", finished=False, n=3)], True, ["03"], ["02"], 2),
    ],
)
def test_running_migration_is_not_failed(rows, lock_held, running, failed, exit_code) -> None:
    local = [LocalScript(n, b"x") for n in ("01", "02", "03")]
    st_ = compute_status(local, rows, lock_held=lock_held)
    assert (st_.running, st_.failed, st_.exit_code) == (running, failed, exit_code)
    assert not set(st_.running) & set(st_.pending)


@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.booleans(), st.booleans()), max_size=12),
    st.sets(st.sampled_from(["a", "b", "c", "d", "e"])),
)
def test_every_local_migration_is_pending_or_recorded(events, local_names) -> None:
    """A name can be both applied and failed (a failed row beside a finished one, as Prisma reports it),
    but pending means no live row at all."""
    rows = [row(n, finished=f, rolled_back=r, n=i) for i, (n, f, r) in enumerate(events)]
    local = [LocalScript(n, b"x") for n in sorted(local_names)]
    s = compute_status(local, rows)
    for name in local_names:
        assert (name in s.pending) != (name in s.applied or name in s.failed)
    assert not set(s.missing_locally) & local_names


@pytest.mark.parametrize(
    "logs, unknown",
    [(None, True), ("P3018 …\nDatabase error: ERROR: division by zero", False)],
)
def test_a_failed_row_without_logs_has_an_unknown_outcome_and_its_own_hint(logs: str | None, unknown: bool) -> None:
    """A failing statement writes its logs; a row without them was left by a run that was killed or
    lost its connection (the server may have finished the script): resolving it --rolled-back on the
    word "failed" records a history the schema contradicts (a re-trial's finding)."""
    from pgrunbook.prisma.status import resolve_hint

    failed = dataclasses.replace(row("02_x", finished=False, n=1), logs=logs)
    st_ = compute_status([LocalScript("01_a", b"x"), LocalScript("02_x", b"x")], [row("01_a"), failed])
    assert st_.failed == ["02_x"] and st_.outcome_unknown == (["02_x"] if unknown else [])
    assert st_.to_dict()["outcome_unknown"] == st_.outcome_unknown
    hint = resolve_hint("02_x", outcome_unknown=unknown)
    assert ("--applied 02_x if all of it is there" in hint) is unknown
    assert "--rolled-back 02_x" in hint


@pytest.mark.parametrize("committed", [0, 2])
def test_a_lost_connection_leads_with_comparing_not_with_rolled_back(committed: int) -> None:
    """trial7b N4: after a migration's connection was lost (its server-side statement may have
    committed), the hint led with `resolve --rolled-back`, straight into a history the schema
    contradicts. Now: compare the schema, --applied if all of it is there, only then --rolled-back."""
    import psycopg

    from pgrunbook.prisma.engine import connection_lost_error

    err = connection_lost_error("20260302000000_slow2", 9.5, psycopg.OperationalError("server closed the connection"))
    if committed:
        err = connection_lost_error(
            "20260302000000_slow2", 9.5, psycopg.OperationalError("server closed"), committed=committed
        )
    hint = err.hint or ""
    assert "lost the connection" in err.message and "server closed" in err.message
    drift, applied, rolled = hint.find("pgrunbook drift"), hint.find("--applied"), hint.find("--rolled-back")
    assert 0 <= drift < applied < rolled, hint
    assert (f"its first {committed} statement(s) were applied and stay" in hint) == bool(committed), hint


@pytest.mark.parametrize(
    ("others", "named"),
    [
        ([], None),
        (["shop"], "but shop in the same database has one"),
        (["a", "b"], "but a, b in the same database have one"),
        ([f"t{i}" for i in range(7)], "but t0, t1, t2, t3, t4 and 2 more in the same database have one"),
    ],
)
def test_a_history_elsewhere_is_named_with_the_variable_to_correct(others: list[str], named: str | None) -> None:
    said = elsewhere_warning("shopp", others, "APP_DB_URL")
    if named is None:
        assert said is None
        return
    assert said is not None and said.startswith("schema shopp has no migration history")
    assert named in said and "?schema= in APP_DB_URL" in said
