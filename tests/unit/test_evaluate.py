from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pgrunbook.monitor.evaluate import Limits, Observed, evaluate, overall

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


def seen(age_h: float | None, drill_d: float | None = 1, **kw: Any) -> Observed:
    return Observed(
        NOW - timedelta(hours=age_h) if age_h is not None else None,
        NOW - timedelta(days=drill_d) if drill_d is not None else None,
        3,
        0,
        **kw,
    )


def test_no_backup_is_critical_fresh_is_ok_then_ages() -> None:
    limits = Limits()
    assert overall(evaluate(NOW, seen(None), limits)) == "critical"
    assert overall(evaluate(NOW, seen(1), limits)) == "ok"
    assert overall(evaluate(NOW, seen(30), limits)) == "warning"
    assert overall(evaluate(NOW, seen(50), limits)) == "critical"


def test_drill_retention_migrations_storage() -> None:
    assert overall(evaluate(NOW, seen(1, drill_d=None), Limits())) == "warning"
    assert overall(evaluate(NOW, seen(1, drill_d=9), Limits())) == "warning"
    assert overall(evaluate(NOW, Observed(NOW, NOW, 9, 2), Limits())) == "warning"
    assert overall(evaluate(NOW, seen(1, failed_migrations=["03_x"]), Limits())) == "critical"
    assert overall(evaluate(NOW, seen(1, storage_error="bucket gone"), Limits())) == "critical"


@given(st.floats(0, 1000), st.floats(0, 1000))
def test_older_is_never_better(a: float, b: float) -> None:
    order = {"ok": 0, "warning": 1, "critical": 2}
    younger, older = sorted((a, b))
    assert (
        order[overall(evaluate(NOW, seen(younger), Limits()))] <= order[overall(evaluate(NOW, seen(older), Limits()))]
    )
