"""Derived database names (rollback, staging, replaced) always fit NAMEDATALEN and stay distinct."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgrunbook.postgres.names import MAX_NAME_BYTES, derived_dbname, first_free_stamp, quote_ident, valid_dbname

NAMES = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), min_size=1).filter(valid_dbname)
SUFFIXES = st.sampled_from(["_rollback_20261201013102", "_restore_20261201013102", "_replaced_20261201013102"])


@given(NAMES, SUFFIXES)
def test_a_derived_name_fits_and_keeps_its_suffix(base: str, suffix: str) -> None:
    name = derived_dbname(base, suffix)
    assert valid_dbname(name) and len(name.encode()) <= MAX_NAME_BYTES
    assert name.endswith(suffix)
    if len((base + suffix).encode()) <= MAX_NAME_BYTES:
        assert name == base + suffix
    else:
        assert base.startswith(name[: -len(suffix) - 7])  # a prefix of the base, cut at a character


@given(NAMES, NAMES, SUFFIXES)
def test_distinct_bases_give_distinct_names(a: str, b: str, suffix: str) -> None:
    if a != b:
        assert derived_dbname(a, suffix) != derived_dbname(b, suffix)


def test_the_trial_examples() -> None:
    long = "orders_service_production_eu_west_1_primary"  # 43 characters: was cut to 40 + 24 = 64 bytes
    assert len(derived_dbname(long, "_rollback_20261201015543").encode()) == 63
    assert derived_dbname("Shop-Prod é", "_restore_20261201015531") == "Shop-Prod é_restore_20261201015531"
    assert quote_ident('a "b" é') == '"a ""b"" é"'
    assert not valid_dbname("x" * 64) and not valid_dbname("é" * 32) and valid_dbname("é" * 31)


def test_long_names_that_differ_only_after_the_cut_stay_distinct() -> None:
    a, b = "x" * 60 + "_eu", "x" * 60 + "_us"
    assert derived_dbname(a, "_rollback_20261201015543") != derived_dbname(b, "_rollback_20261201015543")


# --- first_free_stamp: two runs within one second never share derived names (CI stop 26) -------------

T0 = datetime(2026, 12, 2, 6, 30, 59, 900000, tzinfo=UTC)


def _pair(stamp: str) -> tuple[str, str]:
    return (derived_dbname("app", f"_restore_{stamp}"), derived_dbname("app", f"_replaced_{stamp}"))


@pytest.mark.parametrize(
    ("taken", "expected"),
    [
        (set(), "20261202063059"),
        ({"app_replaced_20261202063059"}, "20261202063100"),  # one of the pair taken: the whole second is
        ({"app_restore_20261202063059", "app_replaced_20261202063100"}, "20261202063101"),
        ({"app", "app_replaced_20261202063058"}, "20261202063059"),  # other names do not matter
    ],
)
def test_first_free_stamp_skips_every_second_whose_names_are_taken(taken: set[str], expected: str) -> None:
    assert first_free_stamp(T0, _pair, taken) == expected


def test_first_free_stamp_gives_up_with_a_reason_when_every_second_is_taken() -> None:
    taken = {name for s in range(5) for name in _pair(f"{T0 + timedelta(seconds=s):%Y%m%d%H%M%S}")}
    with pytest.raises(ValueError, match="taken"):
        first_free_stamp(T0, _pair, taken, tries=5)


@given(st.sets(st.integers(min_value=0, max_value=40), max_size=30))
def test_first_free_stamp_is_the_earliest_free_second(busy: set[int]) -> None:
    taken = {_pair(f"{T0 + timedelta(seconds=s):%Y%m%d%H%M%S}")[s % 2] for s in busy}
    got = first_free_stamp(T0, _pair, taken)
    first = min(set(range(42)) - busy)
    assert got == f"{T0 + timedelta(seconds=first):%Y%m%d%H%M%S}"
    assert not set(_pair(got)) & taken
