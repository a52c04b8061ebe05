"""Derived database names (rollback, staging, replaced) always fit NAMEDATALEN and stay distinct."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pgrunbook.postgres.names import MAX_NAME_BYTES, derived_dbname, quote_ident, valid_dbname

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
