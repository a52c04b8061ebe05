"""The commands backup create, copy, list, verify, prune:
each parses its options, calls one library function and renders."""

from __future__ import annotations

import sys

import click

from pgrunbook.cli.app import (
    cli,
    env_option,
    handle_errors,
    json_option,
    known_secrets,
    make_restore_options,
    restore_options,
    state,
)
from pgrunbook.cli.render import escape, human_age, human_size, preparing
from pgrunbook.errors import EXIT_FAILURE, EXIT_NEGATIVE, printable
from pgrunbook.postgres.redaction import redact


@cli.group()
def backup() -> None:
    """Create, list, verify and prune backups."""


@backup.command("create")
@env_option
@click.option(
    "--label",
    default="manual",
    show_default=True,
    help="scheduled, pre-deploy, manual, pre-restore, or your own (a-z0-9._-)",
)
@json_option
@handle_errors
def backup_create(env_name: str | None, label: str) -> None:
    """Dump, compress, checksum, store; the manifest last. Prints the backup id."""
    from pgrunbook.backup.copy import backup_with_copies

    st = state()
    env = st.env(env_name)
    with st.output.progress(f"backup {env.name}") as progress:
        m, copies = backup_with_copies(env, label=label, progress=preparing(st.output, progress))
    location = f"{env.storage.display}/{env.repository.key(m.id, m.file)}"
    if st.json_mode:
        st.output.emit_json(
            {
                "id": m.id,
                "environment": m.environment,
                "location": location,
                "size": m.size,
                "sha256": m.sha256,
                "duration_s": m.duration_s,
                "label": m.label,
                "migration_head": m.migration_head.model_dump() if m.migration_head else None,
                "tables": len(m.tables),
                "rows": sum(t.rows for t in m.tables),
                "copies": copies,
            }
        )
    else:
        st.output.info(
            f"backup of {m.database} ({m.environment}): {human_size(m.size)} in {m.duration_s:.1f}s, "
            f"{len(m.tables)} tables, {sum(t.rows for t in m.tables)} rows -> {location}"
        )
        click.echo(m.id)


@backup.command("copy")
@click.argument("backup_id")
@env_option
@click.option(
    "--to", "destination", required=True, metavar="STORAGE", help="a folder, file:///path or s3://bucket/prefix"
)
@json_option
@handle_errors
def backup_copy(backup_id: str, env_name: str | None, destination: str) -> None:
    """Copy a backup to a second storage, verified there before its manifest is written."""
    from pgrunbook.backup.copy import copy_backup

    st = state()
    env = st.env(env_name)
    m = copy_backup(env, backup_id, destination)
    destination = redact(destination, known_secrets())
    if st.json_mode:
        st.output.emit_json(
            {
                "id": m.id,
                "from": env.storage.display,
                "to": destination,
                "size": m.size,
                "sha256": m.sha256,
                "verified": True,
            }
        )
    else:
        click.echo(f"copied {m.id} ({human_size(m.size)}) to {destination}; sha256 verified there")


@backup.command("list")
@env_option
@json_option
@handle_errors
def backup_list(env_name: str | None) -> None:
    """Backups of an environment: size, age, label, migration head, verified state."""
    st = state()
    env = st.env(env_name)
    scan = env.repository.scan()
    manifests = scan.ours
    note = scan.foreign_note()
    if note:
        click.echo(f"note: {note} in {env.storage.display}/{env.name}", err=True)
    doubt = env.repository.ownership_doubt() if manifests else None
    if doubt:
        click.echo(
            f"note: these backups are presumed this database's, not proven: {doubt}; prune removes none of "
            "them and restore latest --in-place is refused until a backup from this server or a [project] id "
            "settles it",
            err=True,
        )
    if scan.unreadable:
        click.echo(
            f"warning: {len(scan.unreadable)} backup(s) with an unreadable manifest not listed; "
            "pgrunbook doctor names them",
            err=True,
        )
    if st.json_mode:
        st.output.emit_json(
            [
                {
                    "id": m.id,
                    "label": m.label,
                    "created_at": m.created_at,
                    "size": m.size,
                    "verified": m.verified,
                    "drilled": m.drilled,
                    "compression": m.compression,
                    "migration_head": m.migration_head.model_dump() if m.migration_head else None,
                }
                for m in manifests
            ]
        )
        return
    if not manifests:
        st.output.info(escape(f"no backups of environment {env.name!r} in {env.storage.display}"))
        found = env.repository.elsewhere()  # an environment renamed in pgrunbook.toml (trial11 F1)
        if found is not None:
            st.output.info(escape(f"warning: {found.note()}"))
            st.output.info(escape(f"hint: {found.hint()}"))
        return
    from rich.table import Table  # start-up time: only the table view needs it (--json does not)

    table = Table(title=f"backups of {env.name} in {env.storage.display}", title_justify="left")
    for col in ("id", "label", "age", "size", "migration head", "verified"):
        table.add_column(col)
    for m in manifests:
        head = f"{m.migration_head.name} ({m.migration_head.count})" if m.migration_head else "-"
        verified = (
            "drill ok"
            if m.drilled and m.verified
            else ("ok" if m.verified else ("FAILED" if m.verifications else "no"))
        )
        if m.verified and m.drill_problem is not None:  # sound backup; the drill server had a problem
            verified += " (drill could not run)"
        table.add_row(m.id, m.label, human_age(m.created_at), human_size(m.size), head, verified)
    st.output.out.print(table)


@backup.command("verify")
@click.argument("backup_id")
@env_option
@click.option("--drill", is_flag=True, help="also restore into a scratch database and compare row counts")
@restore_options
@json_option
@handle_errors
def backup_verify(
    backup_id: str,
    env_name: str | None,
    drill: bool,
    owner: str | None,
    skip_missing_roles: bool,
    skip_superuser_objects: bool,
) -> None:
    """Checksum and table of contents; --drill restores into a scratch database too."""
    from pgrunbook.backup.verify import verify_backup

    st = state()
    env = st.env(env_name)
    options = make_restore_options(owner, skip_missing_roles, skip_superuser_objects)
    with st.output.progress(f"verify {backup_id}") as progress:
        result = verify_backup(env, backup_id, drill_restore=drill, progress=progress, options=options)
    if st.json_mode:
        st.output.emit_json(result.to_dict())
    else:
        for c in result.checks:
            mark = "[green]ok[/]" if c.ok else "[red]FAIL[/]"
            st.output.out.print(f"{mark:>14}  {escape(c.name)}: {escape(c.detail)}", highlight=False)
        # "latest" alone never said which backup it was (newuser14): the id it resolved to, beside it
        label = backup_id if backup_id == result.id else f"{backup_id} ({result.id})"
        st.output.out.print(escape(result.headline(label)), highlight=False)
    if not result.recorded:
        click.echo(
            f"warning: the result above was not recorded in the backup's manifest: {redact(result.not_recorded)}",
            err=True,
        )
        click.echo(
            "hint: the checks ran and stand as printed; make the storage writable and verify again to record "
            "them (backup list and check show the last recorded verification)",
            err=True,
        )
    if not result.ok:
        if not st.json_mode:
            if result.damaged or (result.cause or {}).get("where") == "archive":
                click.echo(f"error: backup {backup_id} failed verification; do not rely on it", err=True)
                click.echo(
                    "hint: take a new backup (pgrunbook backup create) and find out what damaged this one", err=True
                )
            else:  # the backup passed its own checks: the drill server or the definition is the problem
                cause = result.cause or {}
                own = cause.get("kind") in ("read query", "manifest")  # their messages say it all
                what = "" if own else f"the drill could not restore {backup_id}: "
                click.echo(f"error: {what}{printable(cause.get('message', ''))}", err=True)
                passed = "; the backup itself passed its checks (size, checksum, frames, table of contents)"
                hint = cause.get("hint") or "see the checks above"
                click.echo(f"hint: {hint}{'' if cause.get('kind') == 'manifest' else passed}", err=True)
        sys.exit(EXIT_FAILURE)
    if not result.recorded:
        sys.exit(EXIT_NEGATIVE)


@backup.command("prune")
@env_option
@click.option("--dry-run", is_flag=True, help="show the decisions, delete nothing")
@json_option
@handle_errors
def backup_prune(env_name: str | None, dry_run: bool) -> None:
    """Apply the retention policy; shows each backup kept or removed and why."""
    from pgrunbook.backup.prune import prune

    st = state()
    env = st.env(env_name)
    report = prune(env, dry_run=dry_run)
    rows = report.to_list()
    if report.foreign_note:
        click.echo(f"note: {report.foreign_note}; they were not considered and nothing of them was removed", err=True)
    if st.json_mode:
        st.output.emit_json(rows)
        return
    verb = {"keep": "keep", "remove": "would remove" if dry_run else "removed"}
    r = env.config.backup.retention
    st.output.info(
        f"retention: daily {r.daily}, weekly {r.weekly}, monthly {r.monthly} "
        f"({env.config.backup.timezone}){' — dry run, nothing deleted' if dry_run else ''}"
    )
    for row in rows:
        colour = "green" if row["action"] == "keep" else "red"
        reasons = "; ".join(row["reasons"])  # type: ignore[arg-type]
        st.output.out.print(f"[{colour}]{verb[str(row['action'])]:>12}[/]  {row['id']}  {reasons}", highlight=False)
    if not rows:
        st.output.info("no backups")
