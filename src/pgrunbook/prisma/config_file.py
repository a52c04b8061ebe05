"""Reading a Prisma project's own configuration without Node: the defaults pgrunbook starts from.

Sources, as Prisma reads them (prisma/prisma ``packages/config`` and ``packages/internals``):

- ``prisma.config.ts`` (or ``.mts``/``.cts``/``.js``/``.mjs``/``.cjs``) at the project root (Prisma 6.x
  optional, Prisma 7 the place for ``schema``, ``migrations.path`` and ``datasource.url``). It is a program;
  we read the subset people write — an object literal passed to ``defineConfig`` or exported as default,
  with string literals, ``env("X")``, ``process.env.X``, ``X ?? "default"`` and ``path.join(...)`` of those.
  Anything computed is reported with the ``pgrunbook.toml`` key that replaces it, never guessed.
- Prisma 6's ``package.json`` ``"prisma": {"schema": ...}``, and the schema's datasource block
  (``url``/``directUrl``/``shadowDatabaseUrl = env("X")``, ``schemas = [...]``).
- ``.env``: Prisma 7 does not load it (the 7.0 upgrade guide); a ``prisma.config.ts`` that imports
  ``dotenv/config`` loads ``.env`` from the current folder, without overriding variables already set.
  Prisma 6 without a config file loads ``.env`` from the project root and from the schema's folder. We do
  what the project's Prisma would do, and say where each value came from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgrunbook.config import Config, load_config
from pgrunbook.errors import ConfigError
from pgrunbook.prisma.version import Found, detect_prisma_version, json_object

_EXTENSIONS = (".js", ".ts", ".mjs", ".cjs", ".mts", ".cts")
# Where Prisma 7 looks, in its order (@prisma/config, findPrismaConfigFile): prisma7.config.* and
# .config/prisma7.*, then prisma.config.*, .config/prisma.*, .config/prisma.config.* and their index files.
CONFIG_NAMES = (
    *(f"prisma7.config{e}" for e in _EXTENSIONS),
    *(f".config/prisma7{e}" for e in _EXTENSIONS),
    *(
        name
        for base in ("prisma.config", ".config/prisma", ".config/prisma.config")
        for name in (*(f"{base}{e}" for e in _EXTENSIONS), *(f"{base}/index{e}" for e in _EXTENSIONS))
    ),
)
DEFAULT_SCHEMAS = ("prisma/schema.prisma", "schema.prisma")


class Problem(str):
    """One line about a value that could not be read; ``needs`` names what pgrunbook.toml must then set:
    "migrations" ([project] migrations) and/or "url" (an environment's database_url_env)."""

    needs: tuple[str, ...]

    def __new__(cls, text: str, needs: tuple[str, ...]) -> Problem:
        obj = super().__new__(cls, text)
        obj.needs = needs
        return obj


@dataclass
class PrismaProject:
    """What the project's Prisma configuration says; every field None when it says nothing."""

    root: Path
    config_file: Path | None = None
    schema_file: Found | None = None
    migrations: Found | None = None
    url_env: Found | None = None
    direct_url_env: Found | None = None
    shadow_url_env: Found | None = None
    schemas: list[str] = field(default_factory=list)
    dotenv_files: list[Path] = field(default_factory=list)
    dotenv_reason: str = ""
    #: variable -> (``??`` or ``||``, the literal after it): the config's own fallback for an unset URL
    env_fallbacks: dict[str, tuple[str, str]] = field(default_factory=dict)
    unreadable: list[Problem] = field(default_factory=list)


# --- a tokenizer for the JavaScript/TypeScript subset of a config file --------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>//[^\n]*|/\*.*?\*/)
  | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<tpl>`(?:[^`\\]|\\.)*`)
  | (?P<num>\d[\d_.]*)
  | (?P<name>[A-Za-z_$][\w$]*)
  | (?P<punct>\?\?|\|\||=>|\.\.\.|[{}()\[\],:;.=?!<>|&+*/%-])
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Tok:
    kind: str  # str, tpl, num, name, punct
    text: str


def tokenize(source: str) -> list[Tok]:
    """Tokens of a config file; raises ValueError at the first character outside the subset."""
    tokens: list[Tok] = []
    pos = 0
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if m is None:
            raise ValueError(f"unexpected {source[pos]!r} at offset {pos}")
        kind = m.lastgroup or ""
        if kind not in ("ws", "comment"):
            tokens.append(Tok(kind, m.group()))
        pos = m.end()
    return tokens


def _unquote(tok: Tok) -> str:
    body = tok.text[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


# Values of the config: a literal, a variable read, a fallback, a path join, an object, or something else.
@dataclass(frozen=True)
class Lit:
    value: str


@dataclass(frozen=True)
class EnvRef:
    """``process.env.X`` or prisma/config's ``env("X")`` (``strict``: it throws when X is unset or empty,
    so a fallback after it is never reached), with ``op`` (``??`` or ``||``) and the literal ``default``."""

    var: str
    default: str | None = None
    op: str | None = None
    strict: bool = False

    def value(self, environ: Mapping[str, str]) -> str | None:
        """What Node evaluates it to: ``??`` takes the default when X is undefined, ``||`` also when it is
        empty; None when the expression has no value (or throws, for a strict ``env()``)."""
        got = environ.get(self.var)
        if self.strict:
            return got or None
        if self.op == "??" and got is None:
            return self.default
        if self.op == "||" and not got:
            return self.default
        return got

    def describe(self) -> str:
        ref = f'env("{self.var}")' if self.strict else f"process.env.{self.var}"
        return f'{ref} {self.op} "…"' if self.op else ref


@dataclass(frozen=True)
class Join:
    parts: tuple[object, ...]


@dataclass(frozen=True)
class Computed:
    text: str


class _Parser:
    """Recursive descent over the tokens of one object literal and the expressions this module reads."""

    def __init__(self, tokens: list[Tok], consts: dict[str, int] | None = None):
        self.t = tokens
        self.consts = consts or {}

    def object_at(self, i: int) -> tuple[dict[str, object], int]:
        assert self.t[i].text == "{"
        out: dict[str, object] = {}
        i += 1
        while i < len(self.t) and self.t[i].text != "}":
            tok = self.t[i]
            if tok.text == "...":
                _, i = self.expr_at(i + 1)
            elif tok.kind in ("name", "str") and i + 1 < len(self.t):
                key = _unquote(tok) if tok.kind == "str" else tok.text
                nxt = self.t[i + 1].text
                if nxt == ":":
                    out[key], i = self.expr_at(i + 2)
                elif nxt == "(":  # a method: async adapter() { ... }
                    out[key] = Computed(key + "()")
                    i = self._skip_balanced(self._skip_balanced(i + 1))
                elif tok.kind == "name" and tok.text in ("async", "get") and self.t[i + 1].kind == "name":
                    out[self.t[i + 1].text] = Computed(tok.text)
                    i = self._skip_balanced(self._skip_balanced(i + 2))
                else:  # shorthand {schema}
                    out[key] = self._const(key)
                    i += 1
            elif tok.text == "[":  # computed key
                i = self._skip_balanced(i)
                if i < len(self.t) and self.t[i].text == ":":
                    _, i = self.expr_at(i + 1)
            else:
                raise ValueError(f"unexpected {tok.text!r} in an object")
            if i < len(self.t) and self.t[i].text == ",":
                i += 1
        if i >= len(self.t):
            raise ValueError("an object literal is not closed")
        return out, i + 1

    def _const(self, name: str) -> object:
        if name in self.consts:
            value, _ = self.expr_at(self.consts[name])
            return value
        return Computed(name)

    def _skip_balanced(self, i: int) -> int:
        """From an opening bracket, the index after its match; else i unchanged."""
        pairs = {"(": ")", "{": "}", "[": "]"}
        if i >= len(self.t) or self.t[i].text not in pairs:
            return i
        depth = 0
        while i < len(self.t):
            if self.t[i].text in pairs:
                depth += 1
            elif self.t[i].text in pairs.values():
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        raise ValueError("unbalanced brackets")

    def expr_at(self, i: int) -> tuple[object, int]:
        """One expression up to the next top-level ``,`` ``}`` ``)`` ``]`` or ``;``."""
        start = i
        value, i = self.primary_at(i)
        while i < len(self.t) and self.t[i].text in ("as", "satisfies", "!"):
            i = self._skip_type(i + 1) if self.t[i].text != "!" else i + 1
        if i < len(self.t) and self.t[i].text in ("??", "||"):
            op = self.t[i].text
            fallback, i = self.expr_at(i + 1)
            if isinstance(value, EnvRef) and isinstance(fallback, Lit):
                return EnvRef(value.var, fallback.value, op, value.strict), i
            value = Computed("")
        end = i
        while i < len(self.t) and self.t[i].text not in (",", "}", ")", "]", ";"):
            i = self._skip_balanced(i) if self.t[i].text in "({[" else i + 1
        if i != end or isinstance(value, Computed):
            return Computed(" ".join(t.text for t in self.t[start:i])), i
        return value, i

    def _skip_type(self, i: int) -> int:
        while i < len(self.t) and self.t[i].text not in (",", "}", ")", "]", ";"):
            i = self._skip_balanced(i) if self.t[i].text in "({[" else i + 1
        return i

    def primary_at(self, i: int) -> tuple[object, int]:
        tok = self.t[i]
        if tok.kind == "str":
            return Lit(_unquote(tok)), i + 1
        if tok.kind == "tpl":
            body = tok.text[1:-1]
            return (Computed(tok.text) if "${" in body else Lit(body)), i + 1
        if tok.text == "{":
            obj, j = self.object_at(i)
            return obj, j
        if tok.kind == "name":
            dotted, j = self._dotted(i)
            if j < len(self.t) and self.t[j].text == "(":
                args, k = self._args(j)
                return self._call(dotted, args), k
            return self._name(dotted), j
        return Computed(tok.text), i + 1

    def _dotted(self, i: int) -> tuple[str, int]:
        parts = [self.t[i].text]
        i += 1
        while i + 1 < len(self.t) and self.t[i].text == "." and self.t[i + 1].kind == "name":
            parts.append(self.t[i + 1].text)
            i += 2
        if i + 2 < len(self.t) and self.t[i].text == "[" and self.t[i + 1].kind == "str" and self.t[i + 2].text == "]":
            parts.append(_unquote(self.t[i + 1]))
            i += 3
        return ".".join(parts), i

    def _args(self, i: int) -> tuple[list[object], int]:
        args: list[object] = []
        i += 1
        while i < len(self.t) and self.t[i].text != ")":
            value, i = self.expr_at(i)
            args.append(value)
            if i < len(self.t) and self.t[i].text == ",":
                i += 1
        if i >= len(self.t):
            raise ValueError("a call is not closed")
        return args, i + 1

    def _name(self, dotted: str) -> object:
        if dotted.startswith("process.env.") and dotted.count(".") == 2:
            return EnvRef(dotted.split(".")[2])
        if dotted in ("__dirname", "import.meta.dirname", "process.cwd"):
            return Lit(".")
        if "." not in dotted:
            return self._const(dotted)
        return Computed(dotted)

    def _call(self, fn: str, args: list[object]) -> object:
        if fn == "env" and len(args) == 1 and isinstance(args[0], Lit):
            return EnvRef(args[0].value, strict=True)
        joins = ("path.join", "join", "path.resolve", "resolve", "path.posix.join")
        if fn in joins and all(isinstance(a, Lit | EnvRef) for a in args):
            return Join(tuple(args))
        if fn == "process.cwd" and not args:
            return Lit(".")
        if fn in ("defineConfig",) and len(args) == 1:
            return args[0]
        return Computed(fn + "(…)")


def parse_config_source(source: str) -> tuple[dict[str, object], bool]:
    """The exported configuration object of a ``prisma.config.*`` text, and whether it loads ``.env``.

    Raises ValueError when no object literal can be found (the whole file is then unreadable)."""
    tokens = tokenize(source)
    loads_dotenv = bool(
        re.search(r"""(?:import|require\()\s*["']dotenv/config["']""", source)
        or (
            re.search(r"""\b(?:dotenv\.)?config\s*\(\s*\)""", source)
            and re.search(r"""from\s+["']dotenv["']|require\(\s*["']dotenv["']\s*\)""", source)
        )
    )
    consts: dict[str, int] = {}
    for i, tok in enumerate(tokens[:-2]):
        if tok.text in ("const", "let", "var") and tokens[i + 1].kind == "name":
            j = i + 2
            if tokens[j].text == ":":  # a type annotation
                j = _Parser(tokens)._skip_type(j + 1)
                while j < len(tokens) and tokens[j].text != "=":
                    j += 1
            if j < len(tokens) and tokens[j].text == "=":
                consts[tokens[i + 1].text] = j + 1
    parser = _Parser(tokens, consts)
    for i, tok in enumerate(tokens):
        exported = tok.text == "default" and i > 0 and tokens[i - 1].text == "export"
        exported = exported or (
            tok.text == "exports"
            and i >= 2
            and tokens[i - 1].text == "."
            and tokens[i - 2].text == "module"
            and i + 1 < len(tokens)
            and tokens[i + 1].text == "="
        )
        if exported:
            j = i + 1 if tok.text == "default" else i + 2
            value, _ = parser.expr_at(j)
            if isinstance(value, dict):
                return value, loads_dotenv
            raise ValueError("its default export is not an object literal")
    raise ValueError("it has no `export default` (or module.exports) of the configuration")


# --- the project -------------------------------------------------------------------------------------


def _resolve(value: object, environ: dict[str, str] | None) -> str | None:
    """A path value with variables read from ``environ``; None when it cannot be known statically."""
    if isinstance(value, Lit):
        return value.value
    if isinstance(value, EnvRef):
        return value.value(environ or {})
    if isinstance(value, Join):
        parts = [_resolve(p, environ) for p in value.parts]
        if any(p is None for p in parts):
            return None
        out = Path()
        for p in parts:
            out = out / str(p)
        return out.as_posix()
    return None


def _from(base: Path, path: str) -> str:
    """A path written in the config file, relative to the project root (Prisma resolves it from the file)."""
    if Path(path).is_absolute() or base == Path():
        return path
    return os.path.normpath(base / path)


def _describe(value: object) -> str:
    if isinstance(value, EnvRef):
        return value.describe()
    if isinstance(value, Computed):
        return value.text or "a computed value"
    return repr(value)


def read_prisma_project(root: Path, environ: dict[str, str] | None = None) -> PrismaProject:
    """Everything the project's Prisma files say; problems go to ``unreadable``, never raise."""
    project = PrismaProject(root)
    config_path = next((root / n for n in CONFIG_NAMES if (root / n).is_file()), None)
    loads_dotenv = False
    schema_value: object | None = None
    if config_path is not None:
        project.config_file = config_path
        name = config_path.relative_to(root).as_posix()
        base = config_path.parent.relative_to(root)
        try:
            obj, loads_dotenv = parse_config_source(config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, IndexError, RecursionError) as exc:
            exc = exc if isinstance(exc, OSError | UnicodeDecodeError | ValueError) else ValueError("it ends early")
            project.unreadable.append(
                Problem(
                    f"{name}: cannot be read statically ({exc}); set [project] migrations and "
                    "[environments.<name>] database_url_env in pgrunbook.toml",
                    ("migrations", "url"),
                )
            )
            obj = {}
        schema_value = obj.get("schema")
        migrations = obj.get("migrations")
        if isinstance(migrations, dict) and "path" in migrations:
            path = _resolve(migrations["path"], environ)
            if path is None:
                project.unreadable.append(
                    Problem(
                        f"{name}: migrations.path is {_describe(migrations['path'])}, not readable statically; "
                        "set [project] migrations in pgrunbook.toml",
                        ("migrations",),
                    )
                )
            else:
                project.migrations = Found(_from(base, path), f"{name}: migrations.path")
        datasource = obj.get("datasource")
        if isinstance(datasource, dict):
            for key, attr, toml in (
                ("url", "url_env", "database_url_env"),
                ("directUrl", "direct_url_env", "direct_url_env"),
                ("shadowDatabaseUrl", "shadow_url_env", None),
            ):
                if key not in datasource:
                    continue
                value = datasource[key]
                if isinstance(value, EnvRef):
                    setattr(project, attr, Found(value.var, f"{name}: datasource.{key} = {value.describe()}"))
                    if value.op and value.default is not None and not value.strict:
                        project.env_fallbacks[value.var] = (value.op, value.default)
                elif toml is not None:
                    project.unreadable.append(
                        Problem(
                            f"{name}: datasource.{key} is {_describe(value)}, not an environment variable; "
                            f"set [environments.<name>] {toml} in pgrunbook.toml to the variable holding the URL",
                            ("url",) if key == "url" else (),
                        )
                    )
        if loads_dotenv:
            project.dotenv_files = [root / ".env"]
            project.dotenv_reason = f"{name} imports dotenv/config"
    else:
        schema_value = _package_json_schema(root)
    _read_schema(project, schema_value, environ)
    if config_path is None and project.schema_file is not None:
        # Prisma 6's CLI loads .env itself when there is no prisma.config.*: the root's, then the schema's folder's.
        folders = [root, (root / project.schema_file.value).parent]
        project.dotenv_files = list(dict.fromkeys(f / ".env" for f in folders))
        project.dotenv_reason = "Prisma 6 loads .env when there is no prisma.config.ts"
    if project.migrations is None and project.schema_file is not None:
        # Prisma's default: migrations/ beside the schema file (or inside a multi-file schema folder).
        schema = Path(project.schema_file.value)
        folder = schema if (root / schema).is_dir() else schema.parent
        if (root / folder / "migrations").is_dir() or project.config_file is not None:
            project.migrations = Found((folder / "migrations").as_posix(), "beside the Prisma schema")
    return project


def _package_json_schema(root: Path) -> object | None:
    data = json_object(root / "package.json")
    prisma = data.get("prisma") if data else None
    if isinstance(prisma, dict) and isinstance(prisma.get("schema"), str):
        return Lit(prisma["schema"])
    return None


def _read_schema(project: PrismaProject, schema_value: object | None, environ: dict[str, str] | None) -> None:
    root = project.root
    source = (
        f"{project.config_file.relative_to(root).as_posix()}: schema"
        if project.config_file
        else "package.json: prisma.schema"
    )
    if schema_value is not None:
        path = _resolve(schema_value, environ)
        if path is None:
            project.unreadable.append(
                Problem(
                    f"{source} is {_describe(schema_value)}, not readable statically; "
                    "set [project] migrations in pgrunbook.toml",
                    ("migrations",),
                )
            )
            return
        base = project.config_file.parent.relative_to(root) if project.config_file else Path()
        project.schema_file = Found(_from(base, path), source)
    else:
        found = next((p for p in DEFAULT_SCHEMAS if (root / p).is_file()), None)
        if found is None:
            return
        project.schema_file = Found(found, "Prisma's default schema location")
    schema_path = root / project.schema_file.value
    files = sorted(schema_path.glob("**/*.prisma")) if schema_path.is_dir() else [schema_path]
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        block = _datasource_block(text)
        if block is None:
            continue
        rel = f.relative_to(root).as_posix() if f.is_relative_to(root) else str(f)
        for key, attr in (("url", "url_env"), ("directUrl", "direct_url_env"), ("shadowDatabaseUrl", "shadow_url_env")):
            m = re.search(rf'^\s*{key}\s*=\s*env\(\s*"([^"]+)"\s*\)', block, re.MULTILINE)
            if m and getattr(project, attr) is None:
                setattr(project, attr, Found(m.group(1), f'{rel}: {key} = env("{m.group(1)}")'))
        m = re.search(r"^\s*schemas\s*=\s*\[([^\]]*)\]", block, re.MULTILINE)
        if m:
            project.schemas = re.findall(r'"([^"]+)"', m.group(1))


def _datasource_block(text: str) -> str | None:
    text = re.sub(r"//[^\n]*", "", text)
    m = re.search(r"\bdatasource\s+\w+\s*\{", text)
    if not m:
        return None
    end = text.find("}", m.end())
    return text[m.end() : end if end >= 0 else len(text)]


def read_dotenv(path: Path) -> dict[str, str]:
    """``KEY=value`` lines as dotenv reads them: ``#`` comments, ``export`` prefix, quotes; no expansion."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    out: dict[str, str] = {}
    pattern = re.compile(
        r"""^\s*(?:export\s+)?([\w.-]+)\s*[=:]\s*("(?:[^"\\]|\\.)*"|'[^']*'|`[^`]*`|[^\n#]*?)\s*(?:\#[^\n]*)?$""",
        re.MULTILINE,
    )
    for m in pattern.finditer(text.replace("\r\n", "\n")):
        key, raw = m.group(1), m.group(2)
        if raw[:1] in "\"'`" and raw[-1:] == raw[:1] and len(raw) >= 2:
            value = raw[1:-1]
            if raw[0] == '"':
                value = value.replace("\\n", "\n").replace('\\"', '"')
        else:
            value = raw.strip()
        out[key] = value
    return out


# --- defaults for pgrunbook's configuration ----------------------------------------------------------


def apply_prisma_defaults(data: dict[str, Any], root: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """Fill what ``pgrunbook.toml`` (``data``) leaves unset from the project's Prisma files; load ``.env``
    as the project's Prisma would (into ``os.environ`` when ``environ`` is it). Returns where each filled
    value came from. Raises ConfigError when a value it needs cannot be read statically and the toml
    does not set it either."""
    env_map = dict(environ) if environ is not None else dict(os.environ)  # type: ignore[call-overload]
    project = read_prisma_project(root, env_map)
    origins: dict[str, str] = {}
    project_section = data.setdefault("project", {})
    environments = data.get("environments") or {}
    for problem in project.unreadable:
        if ("migrations" in problem.needs and "migrations" not in project_section) or (
            "url" in problem.needs and not environments
        ):
            message, _, hint = str(problem).partition("; set ")
            raise ConfigError(message, hint=f"set {hint}" if hint else None)
    if project.unreadable:  # set by pgrunbook.toml or not needed: doctor still shows them
        origins["unreadable"] = " | ".join(project.unreadable)
    if "migrations" not in project_section and project.migrations is not None:
        project_section["migrations"] = project.migrations.value
        origins["project.migrations"] = project.migrations.source
    if not environments and project.url_env is not None:
        default: dict[str, str] = {"database_url_env": project.url_env.value}
        origins["environments.default.database_url_env"] = project.url_env.source
        if project.direct_url_env is not None:
            default["direct_url_env"] = project.direct_url_env.value
            origins["environments.default.direct_url_env"] = project.direct_url_env.source
        data["environments"] = {"default": {**default, "env_fallbacks": project.env_fallbacks}}
        note = _dotenv_not_loaded(project, root, project.url_env.value)
        if note:
            data["environments"]["default"]["url_note"] = note
    if project.schema_file is not None:
        origins["prisma schema"] = f"{project.schema_file.value} ({project.schema_file.source})"
    if project.schemas:
        origins["prisma schemas"] = ", ".join(project.schemas)
    migrate = data.setdefault("migrate", {})
    if not migrate.get("prisma_version"):
        version = detect_prisma_version(root)
        if version is not None:
            migrate["prisma_version"] = version.value
            origins["migrate.prisma_version"] = version.source
    elif "prisma_version" in migrate:
        origins["migrate.prisma_version"] = "pgrunbook.toml ([migrate] prisma_version)"
    for path in project.dotenv_files:
        if not path.is_file():
            continue
        shown = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        for key, value in read_dotenv(path).items():
            if key in env_map or f"env:{key}" in origins:
                continue  # dotenv never overrides a variable already set
            origins[f"env:{key}"] = f"{shown} ({project.dotenv_reason})"
            if environ is os.environ:
                os.environ[key] = value
    if project.config_file is not None:
        origins["prisma config"] = project.config_file.relative_to(root).as_posix()
    return origins


def _dotenv_not_loaded(project: PrismaProject, root: Path, var: str) -> str | None:
    """Prisma 7 loads no .env by itself: when .env holds the URL variable but prisma.config.* does not
    import dotenv/config, the "not set" error says so (the usual 2 a.m. guess)."""
    if project.config_file is None or project.dotenv_files or not (root / ".env").is_file():
        return None
    if var not in read_dotenv(root / ".env"):
        return None
    name = project.config_file.relative_to(root).as_posix()
    return (
        f'.env holds {var}, but {name} does not import "dotenv/config" and Prisma 7 does not load .env by '
        f'itself: add import "dotenv/config" to {name}, or export {var}'
    )


def load_project_config(
    path: Path | str | None = None, *, cwd: Path | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """``load_config`` with the project's Prisma files (and ``.env``) as the defaults: what the CLI uses."""
    return load_config(path, cwd=cwd, environ=environ, project_defaults=apply_prisma_defaults)
