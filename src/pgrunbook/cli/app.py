"""The ``pgrunbook`` group, its global options, shared options and the error handling every command
uses: one ``error:`` line, one ``hint:`` line, the exit code they carry."""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from pgrunbook import __version__
from pgrunbook.cli.render import Output, step_line
from pgrunbook.errors import EXIT_FAILURE, EXIT_USAGE, MissingDatabase, PgRunbookError, Stopped, printable
from pgrunbook.postgres.redaction import redact

if TYPE_CHECKING:
    from pgrunbook.config import Config
    from pgrunbook.environment import Environment
    from pgrunbook.journal import Journal
    from pgrunbook.progress import ProgressFn


F = TypeVar("F", bound=Callable[..., Any])


class State:
    def __init__(self, config_path: str | None, json_mode: bool, debug: bool):
        self.config_path = config_path
        self.json_mode = json_mode
        self.debug = debug
        self.output = Output(json_mode)
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            from pgrunbook.prisma.config_file import load_project_config  # start-up time: see COMMANDS

            self._config = load_project_config(self.config_path)
        return self._config

    def env(self, name: str | None) -> Environment:
        from pgrunbook.environment import Environment  # start-up time: see COMMANDS

        env = Environment.resolve(self.config, name)
        env.notice = lambda kind, message, fields: self.output.notice(kind, message, fields)  # --json may come later
        return env


def known_secrets() -> list[str]:
    """Every secret the process can see, scrubbed from any error text whatever its origin: passwords of
    the URLs in the environment, variables named like secrets, and the variables the configuration
    names (webhook URL, SMTP password, serve token), when it loads."""
    from pgrunbook.postgres.redaction import environment_secrets
    from pgrunbook.postgres.url import parse_database_url

    found = environment_secrets(os.environ)
    for key, value in os.environ.items():
        if value.startswith(("postgres://", "postgresql://")):
            try:
                found.extend(parse_database_url(value, source=key).secrets())
            except PgRunbookError:
                continue
    with contextlib.suppress(Exception):  # a broken config must not hide the error being reported
        ctx = click.get_current_context(silent=True)
        state = ctx.find_object(State) if ctx else None
        config = state._config if state else None
        if config is not None:
            names = [config.monitor.webhook_url_env, config.serve.token_env]
            if config.monitor.smtp is not None:
                names.append(config.monitor.smtp.password_env)
            found.extend(os.environ[n].strip() for n in names if n and os.environ.get(n, "").strip())
    return found


def _recovery_hint(state: State | None, exc: MissingDatabase, env_name: object) -> str:
    """When the missing database is an environment's own (its URL variable): the command that
    recreates it (procedures/restore.py, recreate). Empty when it is another URL's (a drill server,
    the app's own URL) or the configuration cannot be read."""
    try:
        config = state.config if state else None
    except PgRunbookError:
        return ""
    if config is None or not exc.dbname:
        return ""
    names = [
        name
        for name, env in (config.environments or {}).items()
        if exc.variable in (env.database_url_env, env.direct_url_env)
    ] or (["default"] if not config.environments and exc.variable == "DATABASE_URL" else [])
    if isinstance(env_name, str) and env_name in names:
        names = [env_name]
    if len(names) != 1:
        return ""
    from pgrunbook.environment import Environment
    from pgrunbook.monitor.moved import lost_database_note

    try:
        return f"; {lost_database_note(Environment.resolve(config, names[0]), exc.dbname)}"
    except PgRunbookError:
        return (
            f"; if it was lost, pgrunbook restore latest --into {shlex.quote(exc.dbname)} --env {names[0]} recreates it"
        )


def _report_stop(exc: Stopped) -> NoReturn:
    secrets = known_secrets()
    left = exc.state or "nothing half-done is listed or kept"
    click.echo(f"error: {exc}; {printable(redact(left, secrets))}", err=True)
    if exc.hint:
        click.echo(f"hint: {printable(redact(exc.hint, secrets))}", err=True)
    sys.exit(exc.exit_code)


def handle_errors(fn: F) -> F:
    """Expected failures: one ``error:`` line and a ``hint:`` line, the exit code they carry. No traceback
    unless --debug, and never a password."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        state: State | None = ctx.find_object(State)
        debug = state.debug if state else False
        try:
            return fn(*args, **kwargs)
        except PgRunbookError as exc:
            if debug:
                raise
            secrets = known_secrets()
            if isinstance(exc, MissingDatabase):
                exc.hint = (exc.hint or "") + _recovery_hint(state, exc, kwargs.get("env_name"))
            click.echo(f"error: {printable(redact(exc.message, secrets))}", err=True)
            for line in exc.details:
                click.echo(f"  - {printable(redact(line, secrets))}", err=True)
            if exc.hint:
                click.echo(f"hint: {printable(redact(exc.hint, secrets))}", err=True)
            sys.exit(exc.exit_code)
        except Stopped as exc:
            _report_stop(exc)
        except KeyboardInterrupt:
            click.echo("error: interrupted; nothing half-done is listed or kept", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:
            if debug:
                raise
            if Stopped.requested is not None:  # the stop's exception was swallowed and replaced on its way
                _report_stop(Stopped.requested)
            click.echo(
                f"error: internal error: {type(exc).__name__}: {redact(str(exc), known_secrets())}".splitlines()[0],
                err=True,
            )
            click.echo("hint: rerun with --debug for the traceback and report it", err=True)
            sys.exit(EXIT_FAILURE)

    return wrapper  # type: ignore[return-value]


def restore_options(fn: F) -> F:
    """--owner / --skip-missing-roles / --skip-superuser-objects, for every command that restores."""
    fn = click.option(
        "--skip-superuser-objects",
        is_flag=True,
        help="leave out what only a superuser may create (event triggers, some extensions); listed in the report",
    )(fn)
    fn = click.option(
        "--skip-missing-roles",
        is_flag=True,
        help="leave out grants and policies naming roles the target lacks; listed in the report",
    )(fn)
    return click.option(
        "--owner",
        metavar="ROLE",
        help="give every object and the database to ROLE (another server, a managed service); "
        "default: the owners and privileges of the backup",
    )(fn)


def make_restore_options(owner: str | None, skip_missing_roles: bool, skip_superuser_objects: bool) -> Any:
    from pgrunbook.backup.preflight import RestoreOptions

    return RestoreOptions(owner, skip_missing_roles, skip_superuser_objects)


def env_option(fn: F) -> F:
    return click.option(
        "--env",
        "env_name",
        metavar="NAME",
        help="environment from pgrunbook.toml (may be left out when only one is defined)",
    )(fn)


def json_option(fn: F) -> F:
    """--json is accepted before or after the sub-command, as users type it both ways."""

    def set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            state = ctx.find_object(State)
            if state:
                state.json_mode = True
                state.output = Output(True)
        return value

    return click.option(
        "--json", "json_flag", is_flag=True, expose_value=False, callback=set_json, help="one JSON document on stdout"
    )(fn)


# The module that defines each top-level command. A command's module, and the library it calls, load
# only when that command is looked up: `pgrunbook status` does not pay for the backup storage clients,
# manifests and progress bars, and `pgrunbook --help` loads no library at all (start-up time, SPEC
# "Performance"). tests/unit/test_startup.py checks this table against the commands the modules define.
COMMANDS: dict[str, str] = {
    "backup": "pgrunbook.cli.backup",
    "check": "pgrunbook.cli.monitor",
    "demo": "pgrunbook.cli.misc",
    "deploy": "pgrunbook.cli.procedures",
    "doctor": "pgrunbook.cli.misc",
    "drift": "pgrunbook.cli.misc",
    "health": "pgrunbook.cli.misc",
    "init": "pgrunbook.cli.misc",
    "migrate": "pgrunbook.cli.migrate",
    "restore": "pgrunbook.cli.restore",
    "rollback": "pgrunbook.cli.procedures",
    "runs": "pgrunbook.cli.procedures",
    "schedule": "pgrunbook.cli.monitor",
    "serve": "pgrunbook.cli.monitor",
    "status": "pgrunbook.cli.migrate",
}


#: commands an example in a hint prefers: they read and change nothing
_EXAMPLE_COMMANDS = ("status", "list", "check", "doctor", "health", "runs", "lint", "verify")


class CommandMissing(click.UsageError):
    """A group given options but no command (``pgrunbook --json``, ``pgrunbook backup --json``): shown
    as the group named alone is, with its usage, and ``hint`` (where the options go)."""

    def __init__(self, ctx: click.Context, hint: str):
        super().__init__(f"{ctx.command_path} needs a command", ctx)
        self.hint = hint


class MisplacedOption(click.UsageError):
    """A command's option given before the command (``pgrunbook backup --json list``)."""

    def __init__(self, message: str, ctx: click.Context, hint: str):
        super().__init__(message, ctx)
        self.hint = hint


def _leaves(
    ctx: click.Context, group: click.Group, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command below ``group`` with the words that name it from there (``("backup", "list")``)."""
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        if isinstance(command, click.Group):
            yield from _leaves(ctx, command, (*path, name))
        else:
            yield (*path, name), command


def _takes(ctx: click.Context, command: click.Command, option: str) -> bool:
    return any(option in (*p.opts, *p.secondary_opts) for p in command.get_params(ctx) if isinstance(p, click.Option))


def _example(ctx: click.Context, group: click.Group, options: list[str]) -> tuple[str, ...] | None:
    """The command below ``group`` to show in a hint: one taking every option of ``options`` if there
    is one, else the first; a read-only one first (``_EXAMPLE_COMMANDS``); None when none takes it."""
    found = [(words, command) for words, command in _leaves(ctx, group) if _takes(ctx, command, options[0])]
    if not found:
        return None
    found.sort(
        key=lambda w: (
            not all(_takes(ctx, w[1], o) for o in options),
            _EXAMPLE_COMMANDS.index(w[0][-1]) if w[0][-1] in _EXAMPLE_COMMANDS else len(_EXAMPLE_COMMANDS),
            w[0],
        )
    )
    return found[0][0]


def _example_line(ctx: click.Context, words: tuple[str, ...], before: list[str], after: list[str]) -> str:
    """``pgrunbook [before] backup verify BACKUP_ID [after]``: the command's required arguments named."""
    command: click.Command | None = ctx.command
    for word in words:
        command = command.get_command(ctx, word) if isinstance(command, click.Group) else None
    required = [
        p.human_readable_name
        for p in (command.get_params(ctx) if command else [])
        if isinstance(p, click.Argument) and p.required
    ]
    return " ".join([ctx.command_path, *before, *words, *required, *after])


def _option_of(token: str) -> str | None:
    return token.split("=", 1)[0] if token.startswith("-") and token != "-" else None


def _misplaced(group: click.Group, ctx: click.Context, args: list[str], exc: click.NoSuchOption) -> click.UsageError:
    """``exc`` (an option this group does not take) as the error a user needs when a command below the
    group takes it: it goes after the command. Any other unknown option stays click's error."""
    at = next((i for i, a in enumerate(args) if _option_of(a) == exc.option_name), None)
    if at is None:
        return exc
    before, moved = args[:at], args[at:]
    # the command the user named after the option, and the sub-commands named after that
    words: list[str] = []
    current: click.Command = group
    for token in moved[1:]:
        if not isinstance(current, click.Group) or token.startswith("-"):
            if words:
                break
            continue
        command = current.get_command(ctx, token)
        if command is None:
            if words:
                break
            continue
        words.append(token)
        current = command
    options = [o for o in map(_option_of, moved) if o]
    if words and not isinstance(current, click.Group):
        rest = list(moved)
        for word in words:
            rest.remove(word)
        named = " ".join([ctx.command_path, *words])
        if _takes(ctx, current, exc.option_name):
            return MisplacedOption(
                f"{exc.option_name} is an option of {named}, not of {ctx.command_path}: it goes after the command",
                ctx,
                hint=" ".join([ctx.command_path, *before, *words, *rest]),
            )
        other = _example(ctx, group, options)
        if other is None:
            return exc
        return MisplacedOption(
            f"{exc.option_name} is not an option of {ctx.command_path} nor of {named}",
            ctx,
            hint=f"{' '.join([ctx.command_path, *other])} takes it: {_example_line(ctx, other, before, rest)}",
        )
    example = _example(ctx, group, options)
    if example is None:
        return exc
    line = _example_line(ctx, example, before, moved)
    return CommandMissing(ctx, hint=f"{exc.option_name} is an option of the command and goes after it: {line}")


def _echoed(hint: str) -> str:
    """A hint that repeats the user's own arguments: one line, no URL's password (``--to s3://…``)."""
    return printable(redact(hint, known_secrets()), one_line=True)


class CommandGroup(click.Group):
    """A group of commands (``pgrunbook backup``, ``pgrunbook migrate``, ``pgrunbook`` itself): given
    options but no command, or a command's option before the command, it says so (``CommandMissing``,
    ``MisplacedOption``) instead of click's "No such option" or "Missing command."."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = list(args)
        try:
            rest = super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            if ctx.resilient_parsing:
                raise
            raise _misplaced(self, ctx, given, exc) from None
        # click keeps the command's name aside (``_protected_args`` from 8.2, ``protected_args`` before)
        named = ctx.__dict__.get("_protected_args", ctx.__dict__.get("protected_args"))
        if not named and not rest and not ctx.resilient_parsing:
            example = _example(ctx, self, ["--help"])
            line = (
                _example_line(ctx, example, given, []) if example else f"{ctx.command_path} {' '.join(given)} COMMAND"
            )
            raise CommandMissing(
                ctx,
                hint=f"name the command after the options, e.g. {line}; {ctx.command_path} COMMAND --help "
                "shows a command's options",
            )
        return rest


class Group(CommandGroup):
    """The root group: loads a command's module when the command is first looked up (``COMMANDS``),
    and turns click's usage errors into the ``error:``/``hint:`` lines every command uses."""

    group_class = CommandGroup

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(COMMANDS[cmd_name])  # its decorators register it on this group
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in self.commands and name not in COMMANDS:
            # a typo: click suggests "Did you mean …" from the commands loaded so far, so load them all
            # (only on this error path; a known command still loads its own module alone)
            for module in sorted(set(COMMANDS.values())):
                importlib.import_module(module)
        return super().resolve_command(ctx, args)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        except (click.exceptions.NoArgsIsHelpError, CommandMissing) as exc:  # a group without its command
            group = exc.ctx.command if exc.ctx else self
            names = ", ".join(group.list_commands(exc.ctx)) if isinstance(group, click.Group) and exc.ctx else ""
            path = exc.ctx.command_path if exc.ctx else "pgrunbook"
            click.echo(f"error: {path} needs a command" + (f": one of {names}" if names else ""), err=True)
            click.echo(exc.ctx.get_help() if exc.ctx else "", err=True)  # the group's usage and commands
            hint = exc.hint if isinstance(exc, CommandMissing) else f"{path} COMMAND --help shows a command's options"
            click.echo(f"hint: {_echoed(hint)}", err=True)
            sys.exit(EXIT_USAGE)
        except MisplacedOption as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            click.echo(f"hint: {_echoed(exc.hint)}", err=True)
            sys.exit(EXIT_USAGE)
        except click.UsageError as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            if exc.ctx:
                click.echo(f"hint: {exc.ctx.command_path} --help", err=True)
            sys.exit(EXIT_USAGE)
        except click.exceptions.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(130)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(EXIT_USAGE)


@click.group(cls=Group)
@click.version_option(__version__, prog_name="pgrunbook")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="PGRUNBOOK_CONFIG",
    help="pgrunbook.toml to use (default: found by walking up from here)",
)
@click.option("--json", "json_mode", is_flag=True, help="one JSON document on stdout, nothing else there")
@click.option("--debug", is_flag=True, help="show tracebacks")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, json_mode: bool, debug: bool) -> None:
    """The database runbook of a Prisma + PostgreSQL application, safe to execute."""
    ctx.obj = State(config_path, json_mode, debug)


def state() -> State:
    return click.get_current_context().find_object(State)  # type: ignore[return-value]


def open_journal(env: Environment) -> Journal:
    from pgrunbook.journal import Journal, journal_path

    secrets: list[str] = known_secrets()
    with contextlib.suppress(PgRunbookError):
        secrets += env.target().secrets()
    return Journal(journal_path(env.config), secrets)


def print_steps(st: State, steps: list[dict[str, Any]]) -> None:
    if st.output.live_steps and sys.stdout.isatty():
        return  # the terminal showed each step as it ran
    for step in steps:
        st.output.out.print(step_line(step), highlight=False)


@contextlib.contextmanager
def live_steps(st: State, journal: Journal, description: str) -> Iterator[ProgressFn]:
    """On a terminal, a procedure shows each step as it starts and ends, and bars for its long steps
    (backup, restore): at 2 a.m. a silent minute reads as a hang. Quiet with --json or without one."""
    with st.output.progress(description) as progress:
        if st.output.interactive:
            journal.on_step = st.output.show_step
            st.output.live_steps = True
        try:
            yield progress
        finally:
            journal.on_step = None
