"""A Prisma schema's ``directUrl`` named but unset, and Prisma's own ``?pgbouncer=true`` (trial7 finding 25):
never migrate or back up through the pooled URL in silence."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Project, assert_clean_error
from tests.integration.test_migrate import make_migrations

pytestmark = pytest.mark.integration


def _prisma6_schema(project: Project) -> None:
    (project.root / "prisma").mkdir(exist_ok=True)
    (project.root / "prisma" / "schema.prisma").write_text(
        'datasource db {\n  provider  = "postgresql"\n  url       = env("POOLED_URL")\n'
        '  directUrl = env("DIRECT_URL")\n}\n'
    )
    (project.root / "pgrunbook.toml").unlink(missing_ok=True)


def test_a_named_direct_url_that_is_unset_stops_everything_that_migrates_or_backs_up(project: Project) -> None:
    make_migrations(project, {"01": "CREATE TABLE t (id int);"})
    _prisma6_schema(project)
    pooled = {"POOLED_URL": project.url + "?pgbouncer=true", "DATABASE_URL": ""}
    for args in (("migrate", "deploy", "--dry-run"), ("status",), ("backup", "create")):
        r = project.cli(*args, extra_env=pooled)
        assert_clean_error(r, 3, "DIRECT_URL is not set", 'prisma/schema.prisma: directUrl = env("DIRECT_URL")')
        assert "POOLED_URL is not used in its place" in r.stderr
    doctor = project.cli("--json", "doctor", extra_env=pooled)
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert doctor.returncode == 2 and checks["connection"]["status"] == "failed"
    assert checks["connection"]["detail"].startswith("DIRECT_URL is not set")
    # set, it is used; a direct URL through the pooler is warned about too
    both = {**pooled, "DIRECT_URL": project.url}
    assert project.cli("migrate", "deploy", extra_env=both).returncode == 0
    r = project.cli("--json", "doctor", extra_env={**pooled, "DIRECT_URL": project.url + "?pgbouncer=true"})
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["pooler"]["status"] == "warning" and "DIRECT_URL, the direct URL" in checks["pooler"]["detail"]


def test_prismas_pgbouncer_flag_on_any_port_is_a_pooler_warning(project: Project) -> None:
    r = project.cli("--json", "doctor", extra_env={"DATABASE_URL": project.url + "?pgbouncer=true"})
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["pooler"]["status"] == "warning"
    assert checks["pooler"]["detail"].startswith("DATABASE_URL looks like a transaction-mode pooler")
    assert "direct_url_env" in checks["pooler"]["hint"]
    plain = project.cli("--json", "doctor")
    assert "pooler" not in {c["name"] for c in json.loads(plain.stdout)["checks"]}
