"""The commands check, serve, schedule:
each parses its options, calls one library function and renders."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pgrunbook.cli.app import cli, handle_errors, json_option, known_secrets, state
from pgrunbook.cli.render import escape
from pgrunbook.errors import EXIT_USAGE, PgRunbookError
from pgrunbook.postgres.redaction import redact


@cli.command()
@click.option("--env", "env_names", multiple=True, metavar="NAME", help="only these environments (default: all)")
@click.option(
    "--prometheus",
    "prom_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="write the metrics to this textfile (node_exporter's textfile collector)",
)
@json_option
@handle_errors
def check(env_names: tuple[str, ...], prom_file: Path | None) -> None:
    """Backup freshness, last drill, retention, failed migrations, storage. Exit 0 ok, 1 warning, 2 critical."""
    from pgrunbook.monitor.check import check as check_and_notify

    st = state()
    report = check_and_notify(st.config, list(env_names) or None, prometheus=prom_file)
    if st.json_mode:
        st.output.emit_json(report.to_dict())
    else:
        colour = {"ok": "green", "warning": "yellow", "critical": "red"}
        for e in report.environments:
            for f in e.findings:
                st.output.out.print(
                    f"[{colour[f.status]}]{f.status:>8}[/]  {e.environment}: {f.name}: {escape(f.detail)}",
                    highlight=False,
                )
        st.output.out.print(f"check: {report.status}", highlight=False)
    if report.prometheus_error is not None:
        raise report.prometheus_error
    sys.exit({"ok": 0, "warning": 1, "critical": 2}[report.status])


@cli.command()
@click.option("--host", default=None, help="address to bind (default [serve] host, 127.0.0.1); others need the token")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=None, help="port (default [serve] port, 8765; 0 picks a free one)"
)
@json_option
@handle_errors
def serve(host: str | None, port: int | None) -> None:
    """Run the schedule, checks and notifications; serve /metrics, /healthz and the status page."""
    import json as jsonlib
    import signal
    import threading

    from pgrunbook.monitor.serve import Service

    st = state()
    secrets = known_secrets()
    quiet = st.json_mode or not sys.stderr.isatty()

    def log(event: dict[str, object]) -> None:
        if quiet:
            click.echo(redact(jsonlib.dumps(event, default=str), secrets), err=True)
            return
        what = event.get("event")
        if what == "job":
            text = f"{event['environment']}/{event['job']}: {event['what']} {event.get('detail', '')}"
        elif what == "check":
            sent = event.get("notified") or []
            text = f"check: {event['status']}" + (f" (notified {', '.join(sent)})" if sent else "")  # type: ignore[arg-type]
        elif what == "listening":
            text = f"pgrunbook serve: listening on {event['url']} ({len(event['jobs'])} scheduled jobs)"  # type: ignore[arg-type]
        else:
            text = " ".join(f"{k}={v}" for k, v in event.items())
        click.echo(redact(text, secrets), err=True)

    service = Service(st.config, log=log, secrets=secrets, host=host, port=port)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    service.start()
    done.wait()
    log({"event": "stopping", "running_jobs": service.scheduler.running()})
    service.stop()


@cli.command()
@click.option(
    "--print",
    "kind",
    required=True,
    type=click.Choice(["cron", "systemd", "kubernetes"]),
    help="the platform to print a schedule for",
)
@click.option("--env", "env_name", metavar="NAME", help="only this environment's jobs (default: every environment)")
@json_option
@handle_errors
def schedule(kind: str, env_name: str | None) -> None:
    """Print ready-to-use backup, prune and drill schedules ([schedule] in pgrunbook.toml)."""
    import shutil

    from pgrunbook.monitor.schedule import command, config_jobs, render

    st = state()
    cfg = st.config
    if env_name is not None:
        st.env(env_name)  # an unknown name is refused here, with the names there are
    exe = shutil.which("pgrunbook") or "pgrunbook"
    config_path = str(cfg.source or (cfg.root / "pgrunbook.toml"))
    jobs = config_jobs(cfg, env_name)
    try:
        text = render(kind, jobs, exe, config_path)
    except ValueError as exc:
        raise PgRunbookError(
            str(exc), hint="use 5-field cron expressions in [schedule]", exit_code=EXIT_USAGE
        ) from None
    if st.json_mode:
        st.output.emit_json(
            {
                "platform": kind,
                "jobs": [
                    {
                        "environment": j.environment,
                        "job": j.name,
                        "cron": j.cron,
                        "command": command(kind, j, exe, config_path),
                        "url_variables": list(j.url_vars),
                    }
                    for j in jobs
                ],
                "text": text,
            }
        )
        return
    click.echo(text, nl=False)
