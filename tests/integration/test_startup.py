"""Start-up time (SPEC "Performance") for the commands that read the configuration and connect: each
loads what it uses and not the rest (the lazy command table in pgrunbook.cli.app, the lazy storage and
repository in pgrunbook.environment, the progress bars in pgrunbook.cli.bars). Not a timing test: it
lists the modules the real command line loads against a real server (tests/startup_probe.py)."""

from __future__ import annotations

import pytest

from tests.conftest import Project
from tests.startup_probe import SERVICE_CLIENTS, loaded, modules_after

pytestmark = pytest.mark.integration

# Neither backups, the journal, procedures, monitoring, bars nor storage clients.
NOT_FOR_STATUS = (
    "pgrunbook.backup.repository",
    "pgrunbook.backup.manifest",
    "pgrunbook.backup.privileges",
    "pgrunbook.backup.storage",
    "pgrunbook.journal",
    "pgrunbook.procedures",
    "pgrunbook.monitor",
    "rich.progress",
    "rich.table",
    *SERVICE_CLIENTS,
)
# Local storage and no backups yet: no S3 client, procedures, monitoring, bars or journal.
NOT_FOR_BACKUP_LIST = (
    "pgrunbook.journal",
    "pgrunbook.procedures",
    "pgrunbook.monitor",
    "pgrunbook.prisma.engine",
    "rich.progress",
    *SERVICE_CLIENTS,
)
MUST_NOT_LOAD = {
    ("status",): NOT_FOR_STATUS,
    ("--json", "status"): NOT_FOR_STATUS,
    ("backup", "list"): NOT_FOR_BACKUP_LIST,
    ("--json", "backup", "list"): (*NOT_FOR_BACKUP_LIST, "rich.table"),
}


@pytest.mark.parametrize("args", sorted(MUST_NOT_LOAD), ids=" ".join)
def test_a_command_loads_only_what_it_uses(project: Project, args: tuple[str, ...]) -> None:
    folder = project.root / "prisma" / "migrations" / "20240101000000_init"
    folder.mkdir(parents=True)
    (folder / "migration.sql").write_text("CREATE TABLE startup_probe (id int);\n")
    modules, code = modules_after(list(args), project.root, project.environ)
    assert code == (1 if "status" in args else 0)  # status: one migration pending
    assert "pgrunbook.config" in modules and "psycopg" in modules  # it did read the config and connect
    assert loaded(modules, MUST_NOT_LOAD[args]) == []


# What a backup loads only once pg_dump runs (it reads the catalog for a while before its first byte):
# the manifest's validation models and the privileges' (backup/naming.py keeps the id and label apart),
# and, piped, rich (its consoles are made at the dump's first progress report, cli.render.preparing).
AFTER_PG_DUMP_STARTS = ("pgrunbook.backup.manifest", "pgrunbook.backup.privileges", "rich")

# Runs the real command line; records sys.modules when the runner starts pg_dump (pg_dump still runs).
PG_DUMP_PROBE = """
import json, os, sys
import pgrunbook.postgres.runner as runner
real_start = runner.start
def start(binary, *args, **kwargs):
    if binary.name.startswith("pg_dump"):
        with open(os.environ["PGRUNBOOK_TEST_MODULES_OUT"], "w") as out:
            out.write(json.dumps(sorted(sys.modules)))
    return real_start(binary, *args, **kwargs)
runner.start = start
sys.argv[0] = "pgrunbook"
from pgrunbook.cli.main import main
main()
"""


def test_a_backup_starts_pg_dump_before_loading_the_manifests_models(project: Project) -> None:
    # a backup already there: piped, nothing reads its manifest for a bar's estimate (progress.draws)
    _, first = modules_after(["backup", "create"], project.root, project.environ)
    assert first == 0
    modules, code = modules_after(["backup", "create"], project.root, project.environ, probe=PG_DUMP_PROBE)
    assert code == 0
    assert "psycopg" in modules and "pgrunbook.backup.create" in modules  # it was about to dump
    assert loaded(modules, AFTER_PG_DUMP_STARTS) == []
