"""Pure parts of restores that give the app its database back: the cause of a failed pg_dump /
pg_restore run, the archive's table of contents, the pre-flight plan, owner/privilege comparison,
and the database-level settings a swap carries over.

The stderr samples are verbatim output of pg_dump / pg_restore 15 against a real server (captured
while writing this; the integration tests in test_causes.py produce each of them again for real).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgrunbook.backup.preflight import RestoreOptions, TargetFacts, plan, remedy
from pgrunbook.backup.privileges import Mapping, Privileges, acl_items, compare
from pgrunbook.backup.toc import parse_listing, roles_named, split_script
from pgrunbook.postgres.database_swap import DatabaseState, Grant, carry_over, setting_clause, split_list_value
from pgrunbook.postgres.tool_errors import cause_of, read_failure

RLS_DUMP = """\
pg_dump: error: query failed: ERROR:  query would be affected by row-level security policy for table "secret"
HINT:  To disable the policy for the table's owner, use ALTER TABLE NO FORCE ROW LEVEL SECURITY.
pg_dump: detail: Query was: COPY public.secret (id, owner) TO stdout;"""

SEARCH_PATH_INDEX = """\
pg_restore: entering main parallel loop
pg_restore: while PROCESSING TOC:
pg_restore: from TOC entry 3206; 1259 16406 INDEX cust_norm app
pg_restore: error: could not execute query: ERROR:  function norm(text) does not exist
LINE 1:  SELECT norm(t)
                ^
HINT:  No function matches the given name and argument types. You might need to add explicit type casts.
QUERY:   SELECT norm(t)
CONTEXT:  SQL function "helper" during inlining
Command was: CREATE INDEX cust_norm ON public."Customer" USING btree (public.helper(name));


pg_restore: error: a worker process died unexpectedly"""

SEARCH_PATH_DEFAULT = """\
pg_restore: while PROCESSING TOC:
pg_restore: from TOC entry 3363; 0 16554 TABLE DATA d postgres
pg_restore: error: COPY failed for table "d": ERROR:  function mk() does not exist
LINE 1:  SELECT mk()
                ^
HINT:  No function matches the given name and argument types. You might need to add explicit type casts.
QUERY:   SELECT mk()
CONTEXT:  SQL function "dflt" during inlining
COPY d, line 1: "1	1"
pg_restore: error: a worker process died unexpectedly"""

EXTENSION = """\
pg_restore: while PROCESSING TOC:
pg_restore: from TOC entry 2; 3079 16516 EXTENSION pg_stat_statements (no owner)
pg_restore: error: could not execute query: ERROR:  permission denied to create extension "pg_stat_statements"
HINT:  Must be superuser to create this extension.
Command was: CREATE EXTENSION IF NOT EXISTS pg_stat_statements WITH SCHEMA public;"""

NOT_MEMBER = """\
pg_restore: while PROCESSING TOC:
pg_restore: from TOC entry 219; 1255 16553 FUNCTION dflt() postgres
pg_restore: error: could not execute query: ERROR:  must be member of role "postgres"
Command was: ALTER FUNCTION public.dflt() OWNER TO postgres;"""

NOT_SET_ROLE_16 = """\
pg_restore: from TOC entry 215; 1259 16390 TABLE Customer app
pg_restore: error: could not execute query: ERROR:  must be able to SET ROLE "app"
Command was: ALTER TABLE public."Customer" OWNER TO app;"""

MISSING_ROLE = """\
pg_restore: while PROCESSING TOC:
pg_restore: from TOC entry 3360; 0 0 ACL TABLE "Customer" app
pg_restore: error: could not execute query: ERROR:  role "reader" does not exist
Command was: GRANT SELECT ON TABLE public."Customer" TO reader;"""

EVENT_TRIGGER = """\
pg_restore: from TOC entry 3215; 3466 16548 EVENT TRIGGER etr postgres
pg_restore: error: could not execute query: ERROR:  permission denied to create event trigger "etr"
HINT:  Must be superuser to create an event trigger.
Command was: CREATE EVENT TRIGGER etr ON ddl_command_end
   EXECUTE FUNCTION public.et();"""

DISK_FULL = (
    "pg_restore: from TOC entry 3352; 0 16390 TABLE DATA Customer app\n"
    'pg_restore: error: COPY failed for table "Customer": ERROR:  could not extend file "base/16384/16390": '
    "No space left on device\nHINT:  Check free disk space."
)

LOST_SERVER = """\
pg_restore: error: connection to server at "127.0.0.1", port 5432 failed: Connection refused
	Is the server running on that host and accepting TCP/IP connections?"""

NO_CREATE = """\
pg_restore: from TOC entry 215; 1259 16390 TABLE Customer app
pg_restore: error: could not execute query: ERROR:  permission denied for schema public
LINE 1: CREATE TABLE public."Customer" (
                     ^
Command was: CREATE TABLE public."Customer" (id integer NOT NULL);"""

DUMP_DENIED = """\
pg_dump: error: query failed: ERROR:  permission denied for table payroll
pg_dump: detail: Query was: LOCK TABLE public.payroll IN ACCESS SHARE MODE"""

NEWER_TOOL = """\
pg_restore: error: could not execute query: ERROR:  unrecognized configuration parameter "transaction_timeout"
Command was: SET transaction_timeout = 0;"""

OLD_DUMP = """\
pg_dump: error: aborting because of server version mismatch
pg_dump: detail: server version: 16.4; pg_dump version: 15.18"""

TRUNCATED = """\
pg_restore: error: could not read input file: end of file"""

CASES = [
    # (tool, stderr, kind, where, words in the message, words in the hint)
    ("pg_dump", RLS_DUMP, "rls", "definition", ["secret", "FORCE ROW LEVEL SECURITY", "role 'app'"], ["BYPASSRLS"]),
    ("pg_restore", SEARCH_PATH_INDEX, "search_path", "definition",
     ["INDEX public.cust_norm", "function helper uses function norm(text)", "search_path"], ["SET search_path"]),
    ("pg_restore", SEARCH_PATH_DEFAULT, "search_path", "definition",
     ["TABLE DATA public.d", "function dflt uses function mk()"], ["schema-qualify"]),
    ("pg_restore", EXTENSION, "superuser", "target", ["EXTENSION pg_stat_statements", "superuser"],
     ["--skip-superuser-objects"]),
    ("pg_restore", NOT_MEMBER, "owner_rights", "target", ["FUNCTION public.dflt()", "role 'postgres'"],
     ['GRANT "postgres" TO app', "--owner"]),
    ("pg_restore", NOT_SET_ROLE_16, "owner_rights", "target", ["role 'app'"], ["--owner"]),
    ("pg_restore", MISSING_ROLE, "missing_role", "target", ["ACL on TABLE public.Customer", "'reader'"],
     ['CREATE ROLE "reader"', "--skip-missing-roles"]),
    ("pg_restore", EVENT_TRIGGER, "superuser", "target", ["EVENT TRIGGER etr"], ["--skip-superuser-objects"]),
    ("pg_restore", DISK_FULL, "target", "target", ["No space left on device"], ["not at fault"]),
    ("pg_restore", LOST_SERVER, "target", "target", ["Connection refused"], ["not at fault"]),
    ("pg_restore", NO_CREATE, "permission", "target", ["TABLE public.Customer", "permission denied for schema public"],
     ["CREATE on the database"]),
    ("pg_dump", DUMP_DENIED, "permission", "target", ["permission denied for table payroll", "role 'app'"],
     ["SELECT", "back up as"]),
    ("pg_restore", NEWER_TOOL, "tool", "tool", ["transaction_timeout"], ["server's major version"]),
    ("pg_dump", OLD_DUMP, "tool", "tool", ["older than the server"], ["server's major version"]),
    ("pg_restore", TRUNCATED, "archive", "archive", ["could not read input file"], ["backup verify"]),
]  # fmt: skip

TOC = parse_listing(
    """\
;
; Archive created at 2026-11-30 22:21:46 UTC
2; 3079 16516 EXTENSION - pg_stat_statements $
3370; 0 0 COMMENT - EXTENSION pg_stat_statements $
219; 1255 16553 FUNCTION public dflt() postgres
215; 1259 16390 TABLE public Customer app
3360; 0 0 ACL public TABLE "Customer" app
3363; 0 16554 TABLE DATA public d postgres
3206; 1259 16406 INDEX public cust_norm app
3350; 3256 16403 POLICY public secret p app
3215; 3466 16548 EVENT TRIGGER - etr postgres
3371; 0 0 DEFAULT ACL - DEFAULT PRIVILEGES FOR TABLES app
""".replace(" $\n", " \n")  # an entry without an owner ends in a space
)


@pytest.mark.parametrize(("tool", "stderr", "kind", "where", "message", "hint"), CASES)
def test_each_failure_is_explained_by_its_real_cause(
    tool: str, stderr: str, kind: str, where: str, message: list[str], hint: list[str]
) -> None:
    from pgrunbook.backup.toc import by_id

    cause = cause_of(tool, stderr.splitlines(), rc=1, role="app", toc=by_id(TOC))
    assert (cause.kind, cause.where) == (kind, where), cause
    for word in message:
        assert word in cause.message, (word, cause.message)
    for word in hint:
        assert word in cause.hint, (word, cause.hint)
    for never in ("worker process died", "Command was", "Query was", "damaged"):
        assert never not in cause.message and never not in cause.hint


@given(st.lists(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=60), max_size=8))
def test_what_follows_the_first_error_never_changes_the_cause(tail: list[str]) -> None:
    """Whatever a parallel pg_restore prints after its first error (other workers, "a worker process
    died unexpectedly", the failing command), the first server ERROR stays the cause."""
    first = read_failure("pg_restore", SEARCH_PATH_INDEX.splitlines())
    assert first is not None
    again = read_failure(
        "pg_restore", [*SEARCH_PATH_INDEX.splitlines(), "pg_restore: error: a worker process died unexpectedly", *tail]
    )
    assert again is not None and again.error == first.error == "function norm(text) does not exist"
    assert again.context == 'SQL function "helper" during inlining'


def test_without_any_message_the_exit_code_is_reported() -> None:
    cause = cause_of("pg_restore", [], rc=137)
    assert cause.kind == "unknown" and "code 137" in cause.message


def test_listing_is_parsed_with_types_schemas_names_and_owners() -> None:
    described = [(e.dump_id, e.describe(), e.owner) for e in TOC]
    assert described == [
        (2, "EXTENSION pg_stat_statements", ""),
        (3370, "COMMENT on EXTENSION pg_stat_statements", ""),
        (219, "FUNCTION public.dflt()", "postgres"),
        (215, "TABLE public.Customer", "app"),
        (3360, "ACL on TABLE public.Customer", "app"),  # as its table's own entry reads (trial7 #18)
        (3363, "TABLE DATA public.d", "postgres"),
        (3206, "INDEX public.cust_norm", "app"),
        (3350, "POLICY p ON public.secret", "app"),
        (3215, "EVENT TRIGGER etr", "postgres"),
        (3371, "DEFAULT ACL DEFAULT PRIVILEGES FOR TABLES", "app"),
    ]


@pytest.mark.parametrize(
    ("statement", "roles"),
    [
        ('GRANT SELECT ON TABLE public."Customer" TO reader;', {"reader"}),
        ('GRANT ALL ON TABLE public.t TO "Odd ""Role""";', {'Odd "Role"'}),
        ("REVOKE ALL ON FUNCTION public.f() FROM PUBLIC;", set()),
        ("REVOKE ALL ON SCHEMA s FROM app;", {"app"}),
        ("GRANT SELECT(total) ON TABLE public.o TO reader WITH GRANT OPTION;", {"reader"}),
        ("ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA public GRANT SELECT ON TABLES TO reader;", {"app", "reader"}),
        ("ALTER DEFAULT PRIVILEGES FOR ROLE app REVOKE ALL ON FUNCTIONS FROM PUBLIC;", {"app"}),
        ("CREATE POLICY p ON public.secret TO reader, writer USING (true);", {"reader", "writer"}),
        ("CREATE POLICY p ON public.secret USING (true);", set()),
        ("GRANT app TO Mixed;", {"mixed"}),
    ],
)
def test_roles_named_by_grants_and_policies(statement: str, roles: set[str]) -> None:
    assert roles_named(statement) == roles


def test_script_is_split_by_entry() -> None:
    script = (
        "SET row_security = off;\n\n--\n-- TOC entry 3350 (class 3256 OID 16403)\n-- Dependencies: 216\n"
        "-- Name: secret p; Type: POLICY; Schema: public; Owner: app\n--\n\n"
        "CREATE POLICY p ON public.secret TO reader USING (true);\n\n\n"
        '--\n-- TOC entry 3360 (class 0 OID 0)\n--\n\nGRANT SELECT ON TABLE public."Customer" TO reader;\n'
        "\\unrestrict abc\n"
    )
    assert split_script(script) == {
        3350: "CREATE POLICY p ON public.secret TO reader USING (true);",
        3360: 'GRANT SELECT ON TABLE public."Customer" TO reader;',
    }


def facts(superuser: bool = True, roles: set[str] | None = None, member_of: set[str] | None = None) -> TargetFacts:
    roles = roles if roles is not None else {"postgres", "app", "reader"}
    return TargetFacts(
        "admin",
        superuser,
        frozenset(roles | {"admin"}),
        frozenset((member_of or set()) | {"admin"}),
        {"pg_stat_statements": True, "pgcrypto": False},
    )


DEFS = {
    3360: 'GRANT SELECT ON TABLE public."Customer" TO reader;\nGRANT SELECT ON TABLE public."Customer" TO ghost;',
    3350: "CREATE POLICY p ON public.secret TO reader USING (true);",
    3371: "ALTER DEFAULT PRIVILEGES FOR ROLE app GRANT SELECT ON TABLES TO reader;",
}


def test_preflight_passes_a_superuser_with_every_role() -> None:
    pre = plan(TOC, {k: v for k, v in DEFS.items() if k != 3360}, facts(), RestoreOptions(), "app")
    assert pre.ok and not pre.skip_ids


def test_preflight_names_missing_roles_and_skips_only_when_asked() -> None:
    pre = plan(TOC, DEFS, facts(roles={"postgres", "app"}), RestoreOptions(), "app")
    lines = [f.line() for f in pre.findings]
    assert len(lines) == 2 and lines[0].startswith("role ghost (ACL on TABLE") and "role reader" in lines[1]
    assert "POLICY p ON public.secret" in lines[1] and "--skip-missing-roles" in lines[1]
    skipping = plan(TOC, DEFS, facts(roles={"postgres", "app", "reader"}), RestoreOptions(skip_missing_roles=True))
    assert skipping.ok and skipping.skip_ids == {3360} and skipping.skipped_roles == {"ghost"}
    assert skipping.deferred == ['GRANT SELECT ON TABLE public."Customer" TO reader;']
    listed = skipping.use_list(TOC)
    assert ';3360; 0 0 ACL public TABLE "Customer" app\n' in listed and "\n3350; " in listed


def test_preflight_for_a_non_superuser() -> None:
    defs = {k: v for k, v in DEFS.items() if k != 3360}
    pre = plan(TOC, defs, facts(superuser=False), RestoreOptions(), "app")
    kinds = [(f.kind, f.subject) for f in pre.findings]
    assert ("owner_rights", "role app") in kinds and ("owner_rights", "role postgres") in kinds
    assert ("superuser", "role admin is not a superuser") in kinds
    su = next(f for f in pre.findings if f.kind == "superuser")
    assert su.what == ("EXTENSION pg_stat_statements", "EVENT TRIGGER etr")
    mapped = plan(TOC, defs, facts(superuser=False), RestoreOptions(owner="admin", skip_superuser_objects=True))
    assert mapped.ok, [f.line() for f in mapped.findings]
    assert {2, 3370, 3215, 3371} <= mapped.skip_ids  # the extension, its comment, the trigger; default ACL mapped
    assert mapped.deferred == ['ALTER DEFAULT PRIVILEGES FOR ROLE "admin" GRANT SELECT ON TABLES TO reader;']
    stranger = plan(TOC, defs, facts(superuser=False), RestoreOptions(owner="reader"))
    assert any(f.kind == "owner_rights" and f.subject == "role reader" for f in stranger.findings)


def test_a_table_reads_the_same_and_once_in_a_preflight_report() -> None:
    """trial7 #18: one report named `TABLE shopschema.Customer` and `TABLE shopschema."Customer"` (the
    table's entry and its grant's, as pg_dump spells each), and its data entry beside the table."""
    toc = parse_listing(
        "215; 1259 16390 TABLE shopschema Customer ghost\n"
        "3352; 0 16390 TABLE DATA shopschema Customer ghost\n"
        '3360; 0 0 ACL shopschema TABLE "Customer" ghost\n'
    )
    defs = {3360: 'GRANT SELECT ON TABLE shopschema."Customer" TO ghost;'}
    pre = plan(toc, defs, facts(roles={"postgres"}), RestoreOptions())
    lines = [f.line() for f in pre.findings]
    assert lines[0].startswith("role ghost (TABLE shopschema.Customer): owns objects"), lines
    assert lines[1].startswith("role ghost (ACL on TABLE shopschema.Customer): is named by grants"), lines
    assert not any('"Customer"' in ln or "TABLE DATA" in ln for ln in lines), lines


def test_the_preflight_hint_names_only_the_problems_found() -> None:
    """trial7 #18: a refused pre-flight whose one problem was CREATEDB got the generic hint (create the
    role, --owner, --skip-…). The hint is the remedy of what was found, nothing else."""
    createdb_only = TargetFacts("app7", False, frozenset({"app7"}), frozenset({"app7"}), {}, createdb=False)
    pre = plan([], {}, createdb_only, RestoreOptions(), creates=True)
    assert [f.kind for f in pre.findings] == ["createdb"]
    hint = remedy(pre)
    assert hint.startswith('role app7: may not create databases: ALTER ROLE "app7" CREATEDB'), hint
    assert "--owner" not in hint and "--skip" not in hint and "CREATE ROLE" not in hint, hint

    roles_only = plan(TOC, DEFS, facts(roles={"postgres", "app"}), RestoreOptions(), "app")
    hint = remedy(roles_only)  # two missing roles: the one remedy of that kind, once
    assert hint.count("create the missing role") == 1 and "superuser" not in hint and "CREATEDB" not in hint, hint

    mixed = plan(TOC, {k: v for k, v in DEFS.items() if k != 3360}, facts(superuser=False), RestoreOptions(), "app")
    hint = remedy(mixed)
    assert "--skip-superuser-objects" in hint and "--owner ROLE" in hint and "--skip-missing-roles" not in hint, hint


def test_acl_items() -> None:
    assert acl_items('{app=arwdDxt/app,=r/app,"odd role"=r/app}') == [
        ("app", "arwdDxt", "app"),
        ("", "r", "app"),
        ("odd role", "r", "app"),
    ]
    assert acl_items("") == []


SOURCE = Privileges.of(
    "app",
    "",
    [
        ("table", 'public."Customer"', "app", "{app=arwdDxt/app,reader=r/app}"),
        ("sequence", "public.s", "app", ""),
        ("schema", "public", "pg_database_owner", "{pg_database_owner=UC/pg_database_owner,=U/pg_database_owner}"),
        ("default privileges", "app on tables", "app", "{reader=r/app}"),
    ],
)


def test_privileges_compare_exactly_or_mapped() -> None:
    assert compare(SOURCE, SOURCE, Mapping()) == []
    admin_owned = Privileges.of(
        "app", "", [(k, n, "postgres" if o == "app" else o, a) for k, n, o, a in SOURCE.objects]
    )
    diffs = compare(SOURCE, admin_owned, Mapping())
    assert 'table public."Customer": owned by postgres, expected app' in diffs
    mapped = Privileges.of(
        "svc",
        "",
        [
            ("table", 'public."Customer"', "svc", "{svc=arwdDxt/svc,reader=r/svc}"),
            ("sequence", "public.s", "svc", ""),
            ("schema", "public", "pg_database_owner", "{pg_database_owner=UC/pg_database_owner,=U/pg_database_owner}"),
        ],
    )
    assert compare(SOURCE, mapped, Mapping(owner="svc")) == []
    no_grant = Privileges.of("app", "", [o if o[0] != "table" else (*o[:3], "") for o in SOURCE.objects])
    assert compare(SOURCE, no_grant, Mapping()) == [
        'table public."Customer": privileges {}, expected {app=arwdDxt,reader=r}'
    ]


def test_manifest_record_round_trips_compactly() -> None:
    again = Privileges.model_validate_json(SOURCE.model_dump_json())
    assert again.objects == SOURCE.objects
    assert sorted(SOURCE.owners) == ["app", "pg_database_owner"]


@pytest.mark.parametrize(
    ("value", "items"),
    [
        ('"$user", public', ["$user", "public"]),
        ("public", ["public"]),
        ('"a,b", "c""d"', ["a,b", 'c"d']),
        ("", []),
    ],
)
def test_list_settings_split_as_postgresql_does(value: str, items: list[str]) -> None:
    assert split_list_value(value) == items


def test_carry_over_statements() -> None:
    state = DatabaseState(
        "shop",
        "app",
        50,
        "the shop",
        False,
        [Grant(None, "CONNECT", False), Grant("reader", "CONNECT", True)],
        [(None, "statement_timeout=5min"), ("app", 'search_path="$user", public')],
    )
    text = [s.as_string(None) for s in carry_over(state, "shop")]
    assert text == [
        'ALTER DATABASE "shop" OWNER TO "app"',
        'REVOKE ALL ON DATABASE "shop" FROM PUBLIC',
        'REVOKE ALL ON DATABASE "shop" FROM "app"',
        'GRANT CONNECT ON DATABASE "shop" TO PUBLIC',
        'GRANT CONNECT ON DATABASE "shop" TO "reader" WITH GRANT OPTION',
        'ALTER DATABASE "shop" CONNECTION LIMIT 50',
        'ALTER DATABASE "shop" SET "statement_timeout" TO \'5min\'',
        'ALTER ROLE "app" IN DATABASE "shop" SET "search_path" TO \'$user\', \'public\'',
        "COMMENT ON DATABASE \"shop\" IS 'the shop'",
    ]
    assert setting_clause("work_mem=8MB").as_string(None) == "\"work_mem\" TO '8MB'"


def test_a_drill_that_could_not_run_is_a_warning_not_a_critical() -> None:
    """check / the status page: the drill server's problem never makes the backup critical."""
    from datetime import UTC, datetime, timedelta

    from pgrunbook.monitor.evaluate import Limits, Observed, evaluate, overall

    now = datetime(2026, 11, 30, tzinfo=UTC)
    seen = Observed(
        (now - timedelta(hours=1),),  # every backup's and drill's time (future-dated ones are not fresh)
        (now - timedelta(days=2),),
        3,
        0,
        drill_problem="pre-flight: role reader is named by grants … but does not exist on the target",
    )
    findings = evaluate(now, seen, Limits())
    drill = next(f for f in findings if f.name == "restore drill")
    assert drill.status == "warning" and "not of the backup" in drill.detail and "role reader" in drill.detail
    assert overall(findings) == "warning"


SKIPPED_SOURCE = Privileges.of(
    "app",
    "",
    [
        ("schema", "shop", "app", "{app=UC/app,reader=U/app}"),
        ("table", "shop.t", "app", "{app=arwdDxt/app,reader=r/app}"),
        ("function", "shop.f()", "app", "{=X/app,app=X/app,reader=X/app}"),
    ],
)


@pytest.mark.parametrize(
    ("restored_acls", "diffs"),
    [
        # --owner postgres --skip-missing-roles: the owner's own grant is all that is left; the object
        # keeps its NULL ACL, which grants the owner exactly that (trial 7 #22)
        ({"schema": "", "table": "", "function": ""}, []),
        # written out as acldefault() writes it; 17+ tables carry MAINTAIN (m)
        (
            {
                "schema": "{postgres=UC/postgres}",
                "table": "{postgres=arwdDxtm/postgres}",
                "function": "{=X/postgres,postgres=X/postgres}",
            },
            [],
        ),
        # less than the defaults is a difference
        ({"schema": "", "table": "{postgres=r/postgres}", "function": ""}, ["table shop.t: privileges"]),
        # PUBLIC's EXECUTE revoked is a difference
        ({"schema": "", "table": "", "function": "{postgres=X/postgres}"}, ["function shop.f(): privileges"]),
    ],
)
def test_a_null_acl_is_the_owners_defaults(restored_acls: dict[str, str], diffs: list[str]) -> None:
    names = {"schema": "shop", "table": "shop.t", "function": "shop.f()"}
    restored = Privileges.of("postgres", "", [(k, names[k], "postgres", a) for k, a in restored_acls.items()])
    found = compare(SKIPPED_SOURCE, restored, Mapping(owner="postgres", skipped_roles=frozenset({"reader"})))
    assert len(found) == len(diffs) and all(f.startswith(d) for f, d in zip(found, diffs, strict=True)), found


def test_public_keeps_the_servers_own_owner_under_owner_on_13_and_14() -> None:
    """pg_restore --no-owner leaves public as the server made it: the bootstrap superuser on 13/14."""
    source = Privileges.of("app", "", [("schema", "public", "postgres", "{postgres=UC/postgres,=UC/postgres}")])
    restored = Privileges.of("main", "", [("schema", "public", "postgres", "{postgres=UC/postgres,=UC/postgres}")])
    assert compare(source, restored, Mapping(owner="main", public_owner="postgres")) == []
    assert compare(source, restored, Mapping(owner="main")) != []  # without the fact, it was a false failure


PUBLIC_TOC = parse_listing(
    "4; 2615 2200 SCHEMA - public postgres\n"
    "2938; 0 0 ACL - SCHEMA public postgres\n"
    "201; 1259 16388 TABLE public account main\n"
)


def test_public_owned_by_the_servers_bootstrap_superuser_needs_no_right() -> None:
    on13 = TargetFacts(
        "main", False, frozenset({"main", "postgres"}), frozenset({"main"}), {}, True,
        frozenset({"postgres"}), "postgres",
    )  # fmt: skip
    assert plan(PUBLIC_TOC, {}, on13, RestoreOptions(), "main").ok
    on15 = TargetFacts(
        "main", False, frozenset({"main", "postgres"}), frozenset({"main"}), {}, True,
        frozenset({"postgres"}), "pg_database_owner",
    )  # fmt: skip
    pre = plan(PUBLIC_TOC, {}, on15, RestoreOptions(), "main")  # a 13 archive on 15: public was altered
    (finding,) = pre.findings
    assert finding.subject == "role postgres" and "a superuser" in finding.action
    assert "GRANT" not in finding.action  # never hand out a superuser role
    owner_su = plan(PUBLIC_TOC, {}, on13, RestoreOptions(owner="postgres"), "main")
    assert [f.kind for f in owner_su.findings] == ["owner_rights"]
    assert "GRANT" not in owner_su.findings[0].action
