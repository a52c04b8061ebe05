"""Which role is the app's, and the statements that give it back its objects (pure, no server)."""

from __future__ import annotations

import pytest

from pgrunbook.postgres.ownership import SchemaObject, SchemaOwnership

T, S, F = "TABLE", "SEQUENCE", "FUNCTION"


def owned(*objects: tuple[str, str, str] | tuple[str, str, str, str], db: str = "app", supers=("postgres",)):
    return SchemaOwnership("public", tuple(SchemaObject(*o) for o in objects), db, frozenset(supers))


@pytest.mark.parametrize(
    "ownership, role",
    [
        (owned(), "app"),  # empty schema: the database's owner
        (owned(db="postgres"), None),  # empty, owned by a superuser: nothing says
        (owned((T, "a", "postgres"), (T, "b", "postgres")), "postgres"),  # only a superuser owns things
        (owned((T, "a", "app"), (T, "b", "postgres"), (T, "c", "postgres")), "app"),  # non-superusers first
        (owned((T, "a", "app"), (T, "b", "ops"), (T, "c", "ops")), "ops"),  # the most objects
        (owned((T, "a", "app"), (T, "b", "ops")), "app"),  # a tie: the database's owner
        (owned((T, "a", "zed"), (T, "b", "ops"), db="postgres"), "zed"),  # a tie, neither owns the db: by name
    ],
)
def test_the_apps_role(ownership: SchemaOwnership, role: str | None) -> None:
    assert ownership.app_role == role


def test_fix_statements_move_foreign_objects_and_leave_owned_sequences_to_their_table() -> None:
    o = owned(
        (T, 'public."User"', "app"),
        (T, 'public."Invoice"', "postgres"),
        (S, 'public."Invoice_id_seq"', "postgres", 'public."Invoice"'),  # follows its table
        (S, "public.loose", "postgres"),
        (F, "public.total(i bigint)", "postgres"),
        (T, "public.x", 'we"ird'),
    )
    assert [x.name for x in o.foreign()] == [
        'public."Invoice"',
        'public."Invoice_id_seq"',
        "public.loose",
        "public.total(i bigint)",
        "public.x",
    ]
    assert o.fix_statements() == [
        'ALTER TABLE public."Invoice" OWNER TO "app";',
        'ALTER SEQUENCE public.loose OWNER TO "app";',
        'ALTER FUNCTION public.total(i bigint) OWNER TO "app";',
        'ALTER TABLE public.x OWNER TO "app";',
    ]
    # PostgreSQL refuses ALTER SEQUENCE … OWNER on a sequence linked to a table: never emitted
    linked = owned((T, "public.t", "app"), (S, "public.t_id_seq", "postgres", "public.t"))
    assert linked.fix_statements() == []


def test_role_names_are_quoted_for_sql() -> None:
    o = owned((T, "public.a", 'Weird "Role"'), (T, "public.b", 'Weird "Role"'), (T, "public.c", "postgres"))
    assert o.fix_statements() == ['ALTER TABLE public.c OWNER TO "Weird ""Role""";']
