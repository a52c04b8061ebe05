"""The import rules of ../shared/ARCHITECTURE.md, read from the source itself (ast, every import
including the ones inside functions): the engines never import procedures/, monitor/ or cli/; config
imports neither monitor/ nor procedures/; nothing outside cli/ imports cli/; no module imports another
module's `_private` name; and every function-local import of pgrunbook's own modules has a reason."""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

import pgrunbook

SRC = Path(pgrunbook.__file__).parent

ENGINES = ("pgrunbook.postgres", "pgrunbook.backup", "pgrunbook.prisma")
ABOVE_ENGINES = ("pgrunbook.procedures", "pgrunbook.monitor", "pgrunbook.cli")

# Function-local imports of pgrunbook's own modules, each with why it is not at the top. A new one
# needs a reason here: one that only dodges an import cycle means the code sits on the wrong floor.
LOCAL_IMPORTS_ALLOWED = {
    ("pgrunbook.cli.app", "*"): "the CLI loads each command's library only when that command runs",
    ("pgrunbook.cli.backup", "*"): "the CLI loads each command's library only when that command runs",
    ("pgrunbook.cli.migrate", "*"): "the CLI loads each command's library only when that command runs",
    ("pgrunbook.cli.misc", "*"): "the CLI loads each command's library only when that command runs",
    ("pgrunbook.cli.monitor", "*"): "the CLI loads each command's library only when that command runs",
    ("pgrunbook.cli.procedures", "*"): "the CLI loads each command's library only when that command runs",
    ("pgrunbook.cli.restore", "*"): "the CLI loads each command's library only when that command runs",
    ("pgrunbook.cli.render", "pgrunbook.cli.bars"): "the progress bars load only when a command draws one",
    ("pgrunbook.cli.render", "pgrunbook.cli.console"): "rich loads only when a command first prints through it",
    ("pgrunbook.environment", "pgrunbook.backup.storage"): "storage backends load for commands that use them",
    ("pgrunbook.environment", "pgrunbook.backup.repository"): "manifests load for commands that read backups",
    ("pgrunbook.cli.demo", "pgrunbook.monitor.check"): "the demo's monitor part, loaded when it runs",
    ("pgrunbook.cli.demo", "pgrunbook.monitor.serve"): "the demo's monitor part, loaded when it runs",
    ("pgrunbook.sampleapp", "pgrunbook.postgres.cluster"): "the sample app's own throwaway cluster",
    ("pgrunbook.backup.create", "pgrunbook.backup.manifest"): "the manifest's models load once pg_dump runs",
    ("pgrunbook.backup.create", "pgrunbook.backup.privileges"): "the manifest's models load once pg_dump runs",
    ("pgrunbook.backup.codec", "pgrunbook.backup.manifest"): "a backup's manifest models load once pg_dump runs",
    ("pgrunbook.backup.repository", "pgrunbook.backup.manifest"): "a backup's manifest models load once pg_dump runs",
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported module, dotted and absolute
    names: tuple[str, ...]  # names imported from it ("from x import a, b"); () for "import x"
    local: bool  # inside a function
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(path: Path) -> list[Import]:
    module = module_name(path)
    tree = ast.parse(path.read_text(), str(path))
    local_nodes = {
        id(n)
        for fn in ast.walk(tree)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
        for n in ast.walk(fn)
        if isinstance(n, (ast.Import, ast.ImportFrom))
    }
    found = []
    for node in ast.walk(tree):
        local = id(node) in local_nodes
        if isinstance(node, ast.Import):
            found += [Import(module, a.name, (), local, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, path.name == "__init__.py", node)
            names = tuple(a.name for a in node.names)
            found.append(Import(module, target, names, local, node.lineno))
    return found


@functools.cache
def all_imports() -> list[Import]:
    return [i for path in sorted(SRC.rglob("*.py")) for i in imports_of(path) if i.target.startswith("pgrunbook")]


def _within(name: str, prefixes: tuple[str, ...] | str) -> bool:
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _imported_modules(i: Import) -> list[str]:
    """``from pgrunbook import cli`` imports the module pgrunbook.cli: count submodules by their name."""
    folder = SRC.parent / i.target.replace(".", "/")
    return [i.target, *(f"{i.target}.{n}" for n in i.names if (folder / n).is_dir() or (folder / f"{n}.py").is_file())]


def _violations(importer: tuple[str, ...] | str, forbidden: tuple[str, ...] | str) -> list[str]:
    return [
        f"{i.module}:{i.line} imports {target}"
        for i in all_imports()
        if _within(i.module, importer)
        for target in _imported_modules(i)
        if _within(target, forbidden)
    ]


def test_the_reader_sees_every_import_including_function_local_ones(tmp_path: Path) -> None:
    """The checks below are only as good as this reader: it must find imports inside functions,
    relative imports and `from package import module`."""
    pkg = SRC / "backup"
    sample = pkg / "__sample_for_test.py"
    try:
        sample.write_text(
            "from __future__ import annotations\n"
            "from . import verify\n"
            "from .restore import _marker\n"
            "def f() -> None:\n"
            "    from pgrunbook.procedures.journal import Run\n"
            "    import pgrunbook.cli.render\n"
        )
        found = {(i.target, i.names, i.local) for i in imports_of(sample)}
    finally:
        sample.unlink()
    assert ("pgrunbook.backup", ("verify",), False) in found
    assert ("pgrunbook.backup.restore", ("_marker",), False) in found
    assert ("pgrunbook.procedures.journal", ("Run",), True) in found
    assert ("pgrunbook.cli.render", (), True) in found


def test_the_reader_finds_the_tree_it_checks() -> None:
    imports = all_imports()
    modules = {i.module for i in imports}
    assert {"pgrunbook.backup.restore", "pgrunbook.postgres.runner", "pgrunbook.procedures.deploy"} <= modules
    assert len(imports) > 200


@pytest.mark.parametrize("engine", ENGINES)
def test_engines_never_import_procedures_monitor_or_cli(engine: str) -> None:
    assert _violations(engine, ABOVE_ENGINES) == []


def test_monitoring_never_imports_procedures_or_cli() -> None:
    """monitor/ sits below procedures/: it reads the journal's runs (pgrunbook.journal, kernel floor)
    and backups through the method seam, and starts no procedure."""
    assert _violations("pgrunbook.monitor", ("pgrunbook.procedures", "pgrunbook.cli")) == []


KERNEL = (
    "pgrunbook.config",
    "pgrunbook.environment",
    "pgrunbook.errors",
    "pgrunbook.journal",
    "pgrunbook.progress",
    "pgrunbook.timespec",
)


def test_the_kernel_imports_nothing_above_it() -> None:
    """config, environment, errors, the journal, progress and timespec: only postgres/ and the engines'
    storage below them (environment opens backup storage and its repository)."""
    kernel = KERNEL
    assert _violations(kernel, ("pgrunbook.procedures", "pgrunbook.monitor", "pgrunbook.cli")) == []


def test_config_imports_neither_monitor_nor_procedures() -> None:
    assert _violations("pgrunbook.config", ("pgrunbook.monitor", "pgrunbook.procedures")) == []


@pytest.mark.parametrize("pure", ["pgrunbook.timespec", "pgrunbook.progress"])
def test_kernel_time_specifications_and_progress_are_pure(pure: str) -> None:
    """timespec (cron, quiet windows) and progress (the callback every long step reports to, its
    helpers) import nothing of pgrunbook's: config and monitor use the one, every engine the other."""
    found = [f"{i.module} imports {i.target}" for i in all_imports() if _within(i.module, pure)]
    assert found == []


def test_progress_comes_from_the_kernels_progress_module_only() -> None:
    """``ProgressFn``, ``NoticeFn`` and their helpers live in pgrunbook/progress.py (they were in
    environment.py and prisma/engine.py): every module imports them from there, none defines another."""
    names = {
        *("ProgressFn", "no_progress", "NoticeFn", "no_notice", "MigrationProgress", "no_migration_progress"),
        *("Throttle", "with_estimate", "counted"),
    }
    elsewhere = [
        f"{i.module}:{i.line} imports {n} from {i.target}"
        for i in all_imports()
        for n in i.names
        if n in names and i.target != "pgrunbook.progress"
    ]
    defined = [
        f"{module_name(path)}:{node.lineno} defines {node.name}"
        for path in sorted(SRC.rglob("*.py"))
        if module_name(path) != "pgrunbook.progress"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef | ast.FunctionDef) and node.name in names
    ]
    assert elsewhere == [] and defined == []
    assert any(i.target == "pgrunbook.progress" for i in all_imports() if i.module == "pgrunbook.cli.render")


# Where a manifest's or the configuration's codec fields may be read. Everywhere else asks the stack
# (backup/codec.py: file name, writing, reading back, checks, what a key needs, the by-hand command).
CODEC_FIELDS_READ = {
    "pgrunbook.backup.codec": "the codec types themselves",
    "pgrunbook.backup.identity": "the layout's file names, spelt out for start-up (test_codec.py keeps them equal)",
    "pgrunbook.cli.backup": "`backup list --json` reports the manifest's compression field (SPEC.md)",
}


SUFFIXES = {".zst", ".age", "db.dump.zst", "db.dump.age", "db.dump.zst.age"}


def test_only_the_codec_types_decide_on_compression_or_encryption() -> None:
    """Compression was a string compared in eight places and encryption a flag tested in four (issue
    #15): no module but the codec types reads ``.compression``, ``.encryption``, ``.recipients`` or
    ``.identity_file``, nor spells a stack's file name or suffix, or a by-hand command's stage."""
    attrs = {"compression", "encryption", "recipients", "identity_file"}
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        module = module_name(path)
        if module in CODEC_FIELDS_READ or module == "pgrunbook.config":  # config declares the settings
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in attrs:
                bad.append(f"{module}:{node.lineno} reads .{node.attr}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if text in SUFFIXES or text.startswith(("age -d", "zstd -d")):
                    bad.append(f"{module}:{node.lineno} names {text[:40]!r}")
    assert bad == []


# The pure decisions (ARCHITECTURE.md: "pure decisions, impure execution") and the only pgrunbook
# modules each may import: plain data in, plain data out, no database, storage or environment.
PURE_MODULES = {
    "pgrunbook.prisma.lint": {"pgrunbook.prisma.splitter"},
    "pgrunbook.prisma.status": {"pgrunbook.prisma.checksum", "pgrunbook.prisma.history"},  # HistoryRow: a record
    "pgrunbook.postgres.tool_errors": {"pgrunbook.postgres.redaction"},
    "pgrunbook.backup.retention": set(),
    "pgrunbook.monitor.evaluate": set(),
}


@pytest.mark.parametrize("pure", sorted(PURE_MODULES))
def test_pure_decisions_import_no_io(pure: str) -> None:
    """``migrate lint``'s choice of files from the database lives in prisma/lint_scope.py, not in the
    pure linter (it used to be there, behind function-local imports)."""
    found = {
        m
        for i in all_imports()
        if i.module == pure
        for m in _imported_modules(i)
        if _within(m, "pgrunbook") and m != "pgrunbook"
    }
    assert found <= PURE_MODULES[pure], found - PURE_MODULES[pure]


def test_nothing_outside_cli_imports_cli() -> None:
    """Only ``python -m pgrunbook`` (__main__) starts the CLI."""
    bad = [
        f"{i.module}:{i.line} imports {target}"
        for i in all_imports()
        if not _within(i.module, "pgrunbook.cli") and i.module != "pgrunbook.__main__"
        for target in _imported_modules(i)
        if _within(target, "pgrunbook.cli")
    ]
    assert bad == []


def test_no_module_imports_another_modules_private_name() -> None:
    bad = [
        f"{i.module}:{i.line} imports {n} from {i.target}"
        for i in all_imports()
        for n in i.names
        if n.startswith("_") and not n.startswith("__") and i.target != i.module
    ]
    assert bad == []


def test_no_module_reaches_into_another_modules_private_attributes() -> None:
    """``import pgrunbook.x as m; m._private`` is the same as importing the private name."""
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        aliases = {
            (a.asname or a.name.split(".")[0])
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for a in node.names
            if a.name.startswith("pgrunbook")
        } | {
            (a.asname or a.name)
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pgrunbook")
            for a in node.names
            if (SRC.parent / (node.module or "").replace(".", "/") / a.name).with_suffix(".py").exists()
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                bad.append(f"{module_name(path)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert bad == []


def test_every_function_local_import_of_our_own_modules_has_a_reason() -> None:
    unexplained = [
        f"{i.module}:{i.line} imports {i.target} inside a function"
        for i in all_imports()
        if i.local
        and (i.module, i.target) not in LOCAL_IMPORTS_ALLOWED
        and (i.module, "*") not in LOCAL_IMPORTS_ALLOWED
    ]
    assert unexplained == []
    # and none of the reasons is stale: each names an import that still exists
    local = [i for i in all_imports() if i.local]
    used = {(i.module, i.target) for i in local} | {(i.module, "*") for i in local}
    assert set(LOCAL_IMPORTS_ALLOWED) <= used


# The logical dump's own modules: behind the backup-method seam (backup/method.py).
LOGICAL_DUMP = tuple(
    f"pgrunbook.backup.{m}"
    for m in ("create", "verify", "restore", "restore_counts", "archive", "codec", "frames", "encryption", "copy")
)


@pytest.mark.parametrize("caller", ["pgrunbook.procedures", "pgrunbook.monitor"])
def test_procedures_and_monitoring_reach_backups_through_the_method_seam(caller: str) -> None:
    """Deploy, rollback, restore in place and monitoring call `BackupMethod`, so that another method
    (physical, with point-in-time recovery) plugs in without touching them."""
    assert _violations(caller, LOGICAL_DUMP) == []


# What composing a procedure looks like in code: journal runs and steps, hooks, maintenance, the shared
# steps, backups chained with other work. The CLI calls a procedure that does these; it never does them.
COMPOSING_CALLS = {"finish", "step", "skip", "set_recovery", "reopen"}  # a journal run's methods
COMPOSING_FUNCTIONS = {
    "env_hook",
    "maintenance_on",
    "maintenance_off",
    "verified_backup",
    "point_app",
    "restore_in_place",
    "restore_into_and_point",
    "create_backup",
    "make_copies",
    "run_check",
    "notify_changes",
    "write_prometheus",
}


def test_cli_commands_compose_no_procedure() -> None:
    """Every cli/ module except demo.py (the demo drives the runbook end to end on purpose): no journal
    run or step is opened or finished there, no hook or shared step is called; each command calls one
    library function (a procedure, an engine call, a monitor function) and renders what it returns."""
    bad = []
    for path in sorted((SRC / "cli").glob("*.py")):
        if path.name == "demo.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            called = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            starts_run = called == "start" and "journal" in ast.unparse(f)  # Journal.start opens a run
            if (
                (isinstance(f, ast.Attribute) and called in COMPOSING_CALLS)
                or called in COMPOSING_FUNCTIONS
                or starts_run
            ):
                bad.append(f"cli/{path.name}:{node.lineno} calls {called}")
    assert bad == []


def test_the_cli_is_split_by_command_group() -> None:
    """One module per group of commands; main.py only gathers them (no command defined there)."""
    main = ast.parse((SRC / "cli" / "main.py").read_text())
    assert not [n for n in main.body if isinstance(n, ast.FunctionDef) and n.decorator_list]
    groups = {"backup", "migrate", "restore", "procedures", "monitor", "misc"}
    assert groups <= {p.stem for p in (SRC / "cli").glob("*.py")}


# What only pg_dump/pg_restore print; a module that matches them in its own string constants reads the
# tools' stderr beside the one reader (postgres/tool_errors.py).
TOOL_MESSAGE_TEXTS = ("from TOC entry", "Command was", "Query was", "errors ignored on restore", "ERROR:", "error: ")


def test_only_tool_errors_reads_the_client_tools_messages() -> None:
    """One module owns parsing pg_dump's and pg_restore's stderr: no other module's code holds their
    message texts (docstrings, comments and the CLI's own ``error:`` lines it prints do not count)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        module = module_name(path)
        if module == "pgrunbook.postgres.tool_errors" or _within(module, "pgrunbook.cli"):
            continue
        tree = ast.parse(path.read_text(), str(path))
        docstrings = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and n.body
            and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                hits = [t for t in TOOL_MESSAGE_TEXTS if t in node.value]
                if hits and not node.value.startswith(("error: ", "storage error: ")):
                    found.append(f"{module}:{node.lineno}: {hits} in {node.value[:60]!r}")
    assert found == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_modules_import_each_other_in_one_direction_only() -> None:
    """No import cycle among pgrunbook's modules (top-level imports; function-local ones have their
    reasons above). The storage registry used to be one (the package imported its backends on its last
    line, the backends imported the package); the interface now lives in backup/storage/base.py."""
    graph: dict[str, set[str]] = {}
    for i in all_imports():
        if not i.local:
            graph.setdefault(i.module, set()).update(
                t for t in _imported_modules(i) if _within(t, "pgrunbook") and t not in (i.module, "pgrunbook")
            )
    assert _cycles(graph) == []


# Modules that start child processes, each with what it starts. pg_dump and pg_restore start only
# through postgres/runner.py (argv without secrets, stderr read by postgres/tool_errors.py).
STARTS_PROCESSES = {
    "pgrunbook.postgres.runner": "pg_dump and pg_restore, for everyone",
    "pgrunbook.postgres.tools": "a client tool's --version (no connection, no secret)",
    "pgrunbook.postgres.cluster": "initdb and pg_ctl of throwaway clusters",
    "pgrunbook.prisma.engine": "Prisma's own CLI",
    "pgrunbook.procedures.hooks": "the operator's hooks",
    "pgrunbook.monitor.scheduler": "pgrunbook itself, for scheduled jobs",
    "pgrunbook.sampleapp": "the sample app",
    "pgrunbook.cli.demo": "the sample app, for the demo",
}


def test_only_the_runner_starts_client_tools() -> None:
    """backup/preflight.py started pg_restore itself (its own argv and environment, POSIX-only
    pass_fds); every client tool now starts through the runner."""
    starters = set()
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "subprocess"
                and node.func.attr in ("Popen", "run", "call", "check_call", "check_output")
            ):
                starters.add(module_name(path))
    assert starters <= set(STARTS_PROCESSES), starters - set(STARTS_PROCESSES)
    assert not any(_within(m, "pgrunbook.backup") for m in starters)
