"""Reading a Prisma project's configuration without Node (pgrunbook/prisma/config_file.py, version.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgrunbook.errors import ConfigError
from pgrunbook.prisma.config_file import load_project_config, parse_config_source, read_dotenv, read_prisma_project
from pgrunbook.prisma.version import detect_prisma_version

PRISMA7 = """\
import "dotenv/config";
import path from "node:path";
import { defineConfig, env } from "prisma/config";

// migrations live outside prisma/
export default defineConfig({
  schema: path.join("prisma", "schema.prisma"),
  migrations: {
    path: "db/migrations",
    seed: `tsx db/seed.ts`,
  },
  datasource: {
    url: env("APP_DB_URL"),
    shadowDatabaseUrl: env("SHADOW_URL"),
  },
});
"""

CONFIGS = {
    "prisma 7 defineConfig with env()": (PRISMA7, "db/migrations", "APP_DB_URL", True),
    "process.env and satisfies": (
        'import type { PrismaConfig } from "prisma";\n'
        "export default {\n  schema: 'prisma/schema.prisma',\n  migrations: { path: 'prisma/migrations' },\n"
        "  datasource: { url: process.env.DATABASE_URL! },\n} satisfies PrismaConfig;\n",
        "prisma/migrations",
        "DATABASE_URL",
        False,
    ),
    "a const exported by name, process.env['X']": (
        'import { defineConfig } from "prisma/config";\nimport * as dotenv from "dotenv";\ndotenv.config();\n'
        "const config = defineConfig({\n  migrations: { path: 'sql/migrations' },\n"
        "  datasource: { url: process.env['PRIMARY_URL'] },\n});\nexport default config;\n",
        "sql/migrations",
        "PRIMARY_URL",
        True,
    ),
    "commonjs module.exports and a fallback": (
        'const { defineConfig, env } = require("prisma/config");\n'
        'module.exports = defineConfig({ migrations: { path: process.env.MIGRATIONS_DIR ?? "m" },\n'
        '  datasource: { url: env("DB") } });\n',
        "m",
        "DB",
        False,
    ),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_prisma_config_subset_is_read(tmp_path: Path, name: str) -> None:
    source, migrations, url_env, dotenv = CONFIGS[name]
    (tmp_path / "prisma.config.ts").write_text(source)
    project = read_prisma_project(tmp_path, {})
    assert project.unreadable == []
    assert project.migrations and project.migrations.value == migrations
    assert project.migrations.source == "prisma.config.ts: migrations.path"
    assert project.url_env and project.url_env.value == url_env
    assert (project.dotenv_files == [tmp_path / ".env"]) is dotenv


def test_shadow_url_and_schema_path_come_from_the_config(tmp_path: Path) -> None:
    (tmp_path / "prisma.config.ts").write_text(PRISMA7)
    project = read_prisma_project(tmp_path, {})
    assert project.shadow_url_env and project.shadow_url_env.value == "SHADOW_URL"
    assert project.schema_file and project.schema_file.value == "prisma/schema.prisma"


@pytest.mark.parametrize(
    ("source", "named", "key"),
    [
        (
            'export default defineConfig({ migrations: { path: getDir() }, datasource: { url: env("A") } });',
            "migrations.path",
            "[project] migrations",
        ),
        (
            "export default defineConfig({ datasource: { url: `postgres://${host}/db` } });",
            "datasource.url",
            "database_url_env",
        ),
        ("export default defineConfig({ datasource: { url: secrets.url } });", "datasource.url", "database_url_env"),
        ("const x = 1;\n", "cannot be read statically", "[project] migrations"),
        (
            "export default defineConfig({ migrations: { path: 'a' }, datasource: { url: env('A') }",
            "cannot be read statically",
            "",
        ),
        ("export default makeConfig();", "cannot be read statically", "database_url_env"),
        ("export default { schema: 'x' ♥ };", "cannot be read statically", ""),
    ],
)
def test_computed_values_name_what_could_not_be_read_and_the_toml_key(
    tmp_path: Path, source: str, named: str, key: str
) -> None:
    (tmp_path / "prisma.config.ts").write_text(source)
    project = read_prisma_project(tmp_path, {})
    assert len(project.unreadable) == 1, project.unreadable
    assert named in project.unreadable[0] and key in project.unreadable[0]
    with pytest.raises(ConfigError) as err:
        load_project_config(cwd=tmp_path, environ={})
    assert "prisma.config.ts" in err.value.message and (err.value.hint or "").startswith("set ")


def test_toml_settings_make_an_unreadable_config_harmless(tmp_path: Path) -> None:
    (tmp_path / "prisma.config.ts").write_text("export default makeConfig();")
    (tmp_path / "pgrunbook.toml").write_text(
        '[project]\nmigrations = "m"\n[environments.prod]\ndatabase_url_env = "PROD_URL"\n'
    )
    cfg = load_project_config(cwd=tmp_path, environ={})
    assert cfg.project.migrations == "m" and cfg.environments["prod"].database_url_env == "PROD_URL"
    assert "prisma.config.ts: cannot be read statically" in cfg.origins["unreadable"]  # doctor warns


def test_prisma6_package_json_and_schema_datasource(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text(json.dumps({"prisma": {"schema": "db/schema.prisma"}}))
    (tmp_path / "db" / "migrations").mkdir(parents=True)
    (tmp_path / "db" / "schema.prisma").write_text(
        'generator client { provider = "prisma-client-js" }\n'
        'datasource db {\n  provider  = "postgresql"\n  // url = env("OLD")\n'
        '  url       = env("POOLED_URL")\n  directUrl = env("DIRECT_URL")\n  schemas   = ["base", "Billing-Prod"]\n}\n'
    )
    project = read_prisma_project(tmp_path, {})
    assert project.schema_file and project.schema_file.source == "package.json: prisma.schema"
    assert project.migrations and project.migrations.value == "db/migrations"
    assert project.url_env and project.url_env.value == "POOLED_URL"
    assert project.direct_url_env and project.direct_url_env.value == "DIRECT_URL"
    assert project.schemas == ["base", "Billing-Prod"]
    # Prisma 6 loads .env itself: the root's and the schema folder's
    assert project.dotenv_files == [tmp_path / ".env", tmp_path / "db" / ".env"]
    cfg = load_project_config(cwd=tmp_path, environ={})
    env = cfg.environments["default"]
    assert (env.database_url_env, env.direct_url_env) == ("POOLED_URL", "DIRECT_URL")
    assert cfg.project.migrations == "db/migrations"
    assert cfg.origins["environments.default.direct_url_env"] == 'db/schema.prisma: directUrl = env("DIRECT_URL")'
    # trial7 finding 25: DIRECT_URL unset is an error naming where it was named, as Prisma stops too
    from pgrunbook.config import database_target

    with pytest.raises(ConfigError) as exc:
        database_target("default", env, direct=True, environ={"POOLED_URL": "postgresql://h/db?pgbouncer=true"})
    assert exc.value.message.startswith("DIRECT_URL is not set")
    assert 'db/schema.prisma: directUrl = env("DIRECT_URL") names it' in exc.value.message


def test_dotenv_is_read_as_dotenv_reads_it(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        '# comment\nexport A=1\nB = "two words" # trailing\nC=\'single $x\'\nD=plain value\nE="line\\nbreak"\n'
        "URL=postgresql://u:p%40ss@h:5432/db?schema=Billing-Prod\n"
    )
    assert read_dotenv(tmp_path / ".env") == {
        "A": "1",
        "B": "two words",
        "C": "single $x",
        "D": "plain value",
        "E": "line\nbreak",
        "URL": "postgresql://u:p%40ss@h:5432/db?schema=Billing-Prod",
    }


def _write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    ("files", "version", "source"),
    [
        (
            {
                "node_modules/prisma/package.json": '{"version": "7.4.2"}',
                "package.json": '{"devDependencies": {"prisma": "^7.0.0"}}',
            },
            "7.4.2",
            "node_modules/prisma/package.json",
        ),
        (
            {"package-lock.json": json.dumps({"packages": {"node_modules/prisma": {"version": "7.10.1"}}})},
            "7.10.1",
            "package-lock.json",
        ),
        (
            {
                "pnpm-lock.yaml": "importers:\n  .:\n    devDependencies:\n      prisma:\n        specifier: ^7.3.0\n"
                "        version: 7.3.0(typescript@5.6.3)\n"
            },
            "7.3.0",
            "pnpm-lock.yaml",
        ),
        (
            {"pnpm-lock.yaml": "packages:\n\n  /@prisma/client@6.19.3:\n    resolution: {}\n"},
            "6.19.3",
            "pnpm-lock.yaml",
        ),
        ({"yarn.lock": '"prisma@^7.4.0":\n  version "7.4.1"\n  resolved "x"\n'}, "7.4.1", "yarn.lock"),
        (
            {"yarn.lock": '"prisma@npm:^7.5.0":\n  version: 7.5.0\n  resolution: "prisma@npm:7.5.0"\n'},
            "7.5.0",
            "yarn.lock",
        ),
        ({"package.json": '{"dependencies": {"@prisma/client": "~6.19"}}'}, "6.19.0", "package.json"),
        ({"package.json": '{"devDependencies": {"prisma": "latest"}}'}, None, None),
    ],
)
def test_prisma_version_is_found_where_node_would_find_it(
    tmp_path: Path, files: dict[str, str], version: str | None, source: str | None
) -> None:
    (tmp_path / ".git").mkdir()  # stop the walk up at the repository's root
    app = tmp_path / "apps" / "api"
    app.mkdir(parents=True)
    for name, text in files.items():
        _write(tmp_path, name, text)  # a monorepo: lock file and node_modules at the root
    found = detect_prisma_version(app)
    assert (found.value if found else None) == version
    if found and source:
        assert found.source.startswith(str(tmp_path / source)) or found.source.startswith(source)


def test_toml_prisma_version_wins_and_is_reported(tmp_path: Path) -> None:
    _write(tmp_path, "package.json", '{"devDependencies": {"prisma": "7.4.0"}}')
    (tmp_path / "pgrunbook.toml").write_text('[migrate]\nprisma_version = "6.19.3"\n')
    cfg = load_project_config(cwd=tmp_path, environ={})
    assert cfg.migrate.prisma_version == "6.19.3"
    assert "pgrunbook.toml" in cfg.origins["migrate.prisma_version"]
    (tmp_path / "pgrunbook.toml").write_text("")
    cfg = load_project_config(cwd=tmp_path, environ={})
    assert cfg.migrate.prisma_version == "7.4.0" and cfg.origins["migrate.prisma_version"].startswith("package.json")


@pytest.mark.parametrize(
    "package, name",
    [
        ({"name": "shop", "devDependencies": {"prisma": "^7.4.0"}}, "shop"),
        ({"name": "@acme/billing api", "devDependencies": {"prisma": "^7.4.0"}}, "billing-api"),
        ({"devDependencies": {"prisma": "^7.4.0"}}, None),  # no name: the folder's
    ],
)
def test_init_takes_the_package_name_and_pins_no_version(tmp_path: Path, package: dict, name: str | None) -> None:
    """trial7 #18: init named the project after the folder, not package.json's "name", and pinned
    prisma_version = "7.4.0" from the range ^7.4.0, so a later Prisma upgrade was hidden by the pin."""
    from pgrunbook.init import write_config

    root = tmp_path / "trial7-p6"
    root.mkdir()
    _write(root, "package.json", json.dumps(package))
    text = write_config(root).read_text()
    assert f'name = "{name or "trial7-p6"}"' in text and f'id = "{name or "trial7-p6"}-' in text, text
    assert '\nprisma_version = "' not in text and '# prisma_version = "7.4.0"' in text, text
    assert load_project_config(cwd=root, environ={}).migrate.prisma_version == "7.4.0"
    _write(root, "package.json", json.dumps({**package, "devDependencies": {"prisma": "^7.5.1"}}))
    assert load_project_config(cwd=root, environ={}).migrate.prisma_version == "7.5.1"  # the upgrade is seen


def test_config_object_shapes() -> None:
    obj, dotenv = parse_config_source(PRISMA7)
    assert dotenv
    assert set(obj) == {"schema", "migrations", "datasource"}


_js = st.lists(
    st.sampled_from(
        [
            *"{}()[]:,;.=?'\"`$ \nabc",
            "env(",
            "export default ",
            "defineConfig(",
            "process.env.",
            "??",
            "path.join(",
            "X",
        ]
    ),
    max_size=40,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(_js)
def test_any_config_text_is_read_or_named_unreadable_never_crashes(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    root = tmp_path_factory.mktemp("cfg")
    (root / "prisma.config.ts").write_text(text)
    project = read_prisma_project(root, {})
    assert all("prisma.config.ts" in u for u in project.unreadable)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("prisma7.config.mts", "../db/migrations"),
        (".config/prisma.ts", "db/migrations"),
        (".config/prisma/index.js", ".config/db/migrations"),
    ],
)
def test_config_is_found_where_prisma7_looks_and_paths_are_taken_from_its_folder(
    tmp_path: Path, where: str, expected: str
) -> None:
    path = tmp_path / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('export default { migrations: { path: "../db/migrations" }, datasource: { url: env("U") } };')
    project = read_prisma_project(tmp_path, {})
    assert project.migrations and project.migrations.value == expected
    assert project.config_file == path and project.url_env and project.url_env.value == "U"


DEFAULT_URL = "postgresql://fallback@localhost:5432/x"


@pytest.mark.parametrize(
    ("expr", "environ", "url", "shown"),
    [
        # Node: `a ?? b` takes b when a is undefined (unset), not when it is ""
        ('process.env.DB_URL ?? "{d}"', {}, DEFAULT_URL, 'process.env.DB_URL ?? "…"'),
        ('process.env.DB_URL ?? "{d}"', {"DB_URL": "postgresql://h/set"}, "postgresql://h/set", None),
        ('process.env.DB_URL ?? "{d}"', {"DB_URL": ""}, "error: DB_URL is empty", None),
        # `a || b` takes b also when a is ""
        ('process.env.DB_URL || "{d}"', {"DB_URL": ""}, DEFAULT_URL, 'process.env.DB_URL || "…"'),
        ("process.env.DB_URL || '{d}'", {}, DEFAULT_URL, None),
        ('process.env["DB_URL"] ?? `{d}`', {}, DEFAULT_URL, None),
        ("process.env.DB_URL!", {}, "error: DB_URL is not set", "process.env.DB_URL"),
        # prisma/config's env() throws when the variable is missing: its fallback is never reached
        ('env("DB_URL") ?? "{d}"', {}, "error: DB_URL is not set", 'env("DB_URL") ?? "…"'),
        ('env("DB_URL")', {"DB_URL": "postgresql://h/set"}, "postgresql://h/set", 'env("DB_URL")'),
    ],
)
def test_a_url_fallback_in_the_config_is_used_as_node_would(
    tmp_path: Path, expr: str, environ: dict[str, str], url: str, shown: str | None
) -> None:
    """trial7 finding 20: `process.env.X ?? "default"` is documented; the default must be used."""
    from pgrunbook.config import database_target

    (tmp_path / "prisma.config.ts").write_text(
        'import { defineConfig, env } from "prisma/config";\n'
        f"export default defineConfig({{ datasource: {{ url: {expr.format(d=DEFAULT_URL)} }} }});\n"
    )
    cfg = load_project_config(cwd=tmp_path, environ=environ)
    if shown is not None:
        assert cfg.origins["environments.default.database_url_env"] == f"prisma.config.ts: datasource.url = {shown}"
    env = cfg.environments["default"]
    if url.startswith("error: "):
        with pytest.raises(ConfigError) as exc:
            database_target("default", env, environ=environ)
        assert exc.value.message.startswith(url.removeprefix("error: "))
    else:
        target = database_target("default", env, environ=environ)
        assert target.full_url() == url and target.variable == "DB_URL"


@pytest.mark.parametrize("dotenv", [False, True], ids=["no .env", ".env not loaded"])
def test_a_failing_default_url_is_named_as_the_configs_default(tmp_path: Path, dotenv: bool) -> None:
    """trial7b N5: with DB_URL unset, `process.env.DB_URL ?? "postgresql://…"` failed to connect with
    "check host and port in DB_URL" (DB_URL was unset: the URL was prisma.config.ts's default), and a
    .env holding DB_URL that Prisma 7 does not load (no dotenv import) was not mentioned. A real
    connection to a closed port, so the hint is the one an operator sees."""
    import socket

    from pgrunbook.config import database_target
    from pgrunbook.errors import DatabaseError
    from pgrunbook.postgres.connect import connect

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "prisma.config.ts").write_text(
        'import { defineConfig } from "prisma/config";\n'
        f'export default defineConfig({{ datasource: {{ url: process.env.DB_URL ?? "postgresql://u@127.0.0.1:{port}/x" '
        "} });\n"
    )
    if dotenv:
        (tmp_path / ".env").write_text("DB_URL=postgresql://u@db.internal:5432/shop\n")
    cfg = load_project_config(cwd=tmp_path, environ={})
    target = database_target("default", cfg.environments["default"], environ={})
    with pytest.raises(DatabaseError) as exc:
        connect(target, connect_timeout=5)
    hint = exc.value.hint or ""
    assert "connection refused" in exc.value.message, exc.value.message
    assert "check host and port in DB_URL's default in prisma.config.ts (DB_URL is not set)" in hint, hint
    assert ('.env holds DB_URL, but prisma.config.ts does not import "dotenv/config"' in hint) == dotenv, hint
    set_target = database_target("default", cfg.environments["default"], environ={"DB_URL": "postgresql://h/x"})
    assert set_target.origin == "" and set_target.note == ""  # the variable itself: named as such
