"""``pgrunbook demo``: the runbook on a throwaway cluster, so a newcomer sees every step work.

Everything it creates (cluster, project folder, backups) lives in temp folders that are removed at the
end, on Ctrl-C and on SIGTERM too.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from pgrunbook import sampleapp
from pgrunbook.backup.create import create_backup
from pgrunbook.backup.prune import prune
from pgrunbook.backup.verify import verify_backup
from pgrunbook.cli.render import Output
from pgrunbook.config import load_config
from pgrunbook.doctor import run_doctor
from pgrunbook.environment import Environment
from pgrunbook.journal import Journal, journal_path
from pgrunbook.postgres.cluster import LocalCluster
from pgrunbook.prisma.engine import migration_status
from pgrunbook.procedures.deploy import DeployFailed, DeployOptions, deploy
from pgrunbook.procedures.migrate import migrate

SAMPLE_SCHEMA = """
CREATE TYPE order_status AS ENUM ('pending', 'paid', 'shipped', 'cancelled');
CREATE TABLE customer (
    id bigserial PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE product (
    id serial PRIMARY KEY, sku text NOT NULL UNIQUE, title text NOT NULL, price_cents int NOT NULL,
    attributes jsonb NOT NULL DEFAULT '{}');
CREATE TABLE "order" (
    id bigserial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customer(id),
    status order_status NOT NULL DEFAULT 'pending', total_cents int NOT NULL, note text,
    placed_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX order_customer_idx ON "order"(customer_id);
"""

SAMPLE_DATA = """
INSERT INTO customer (email, name)
SELECT 'user' || g || '@example.com', 'Customer ' || md5(g::text) FROM generate_series(1, {customers}) g;
INSERT INTO product (sku, title, price_cents, attributes)
SELECT 'SKU-' || g, 'Product ' || substr(md5(random()::text), 1, 12), (random() * 10000)::int,
       jsonb_build_object('colour', (ARRAY['red','green','blue'])[1 + g % 3], 'weight_g', g * 7)
FROM generate_series(1, 500) g;
INSERT INTO "order" (customer_id, status, total_cents, note)
SELECT 1 + (g % {customers}), (ARRAY['pending','paid','shipped','cancelled']::order_status[])[1 + g % 4],
       (random() * 50000)::int, CASE WHEN g % 5 = 0 THEN md5(random()::text) END
FROM generate_series(1, {orders}) g;
"""


def _terminate(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def run_demo(out: Output, rows: int = 20000) -> dict[str, Any]:
    """Throwaway cluster -> migrations -> doctor -> backups -> verify --drill -> prune -> deploy (a good one,
    then a failing one that rolls back) -> the journal -> check -> serve."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    project = Path(tempfile.mkdtemp(prefix="pgrunbook-demo-"))
    saved_url = os.environ.get("DATABASE_URL")
    summary: dict[str, Any] = {"steps": []}
    app: subprocess.Popen[bytes] | None = None
    steps = summary["steps"]
    try:
        out.info("[bold]1. A throwaway PostgreSQL cluster[/] (initdb + pg_ctl on a free port)")
        with LocalCluster(name="pgrunbook-demo") as cluster:
            out.info(f"   listening on 127.0.0.1:{cluster.port}, data in {cluster.base}")
            with psycopg.connect(cluster.url(), autocommit=True) as conn:
                conn.execute("CREATE DATABASE shop")
            url = cluster.url("shop")
            os.environ["DATABASE_URL"] = url
            app, health_url = _start_app(project, url)
            _write_project(project, health_url)
            env = Environment.resolve(load_config(cwd=project))
            steps.append(
                _step(out, "2. pgrunbook migrate deploy: the sample app's schema, natively", lambda: _migrate(out, env))
            )
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(SAMPLE_DATA.format(customers=max(int(rows) // 10, 1), orders=int(rows)))  # type: ignore[arg-type]
            out.info(f"   sample data: {rows} orders, {max(rows // 10, 1)} customers, 500 products")
            steps.append(_step(out, "3. pgrunbook doctor", lambda: _doctor(out, env)))
            steps.append(
                _step(out, "4. pgrunbook backup create --label scheduled", lambda: _backup(out, env, "scheduled"))
            )
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("INSERT INTO customer (email, name) VALUES ('late@example.com', 'Late Arrival')")
            second = _step(out, "5. a write, then pgrunbook backup create", lambda: _backup(out, env, "manual"))
            steps.append(second)
            steps.append(_step(out, "6. pgrunbook backup list", lambda: _list(out, env)))
            steps.append(
                _step(
                    out, f"7. pgrunbook backup verify {second['id']} --drill", lambda: _verify(out, env, second["id"])
                )
            )
            steps.append(_step(out, "8. pgrunbook backup prune --dry-run", lambda: _prune(out, env)))
            _add_migration(project, "20260301000000_add_note", "ALTER TABLE customer ADD COLUMN note text;")
            steps.append(_step(out, "9. pgrunbook deploy: a good migration", lambda: _deploy(out, env, ok=True)))
            _add_migration(
                project,
                "20260401000000_broken",
                "ALTER TABLE customer ADD COLUMN tier int;\nUPDATE customer SET tier = 1 / 0;",
            )
            steps.append(
                _step(
                    out,
                    "10. pgrunbook deploy --auto-rollback: a migration that fails",
                    lambda: _deploy(out, env, ok=False),
                )
            )
            steps.append(_step(out, "11. pgrunbook runs", lambda: _runs(out, env)))
            # after the rollback the app runs on the restored copy: the operator's next move is to make
            # DATABASE_URL name it too (the failed database stays, for forensics)
            os.environ["DATABASE_URL"] = (project / "app.url").read_text()
            env = Environment.resolve(load_config(cwd=project))
            steps.append(
                _step(out, "12. pgrunbook check (DATABASE_URL now names the restored copy)", lambda: _check(out, env))
            )
            steps.append(_step(out, "13. pgrunbook serve: status page, /metrics, /healthz", lambda: _serve(out, env)))
        out.info(
            "[bold green]demo complete[/]: cluster stopped, temp folders removed. Next: "
            "`pgrunbook init` in your project, then `pgrunbook doctor` with DATABASE_URL set."
        )
        summary["ok"] = all(s.get("ok", True) for s in steps)
        return summary
    finally:
        if app is not None:
            app.terminate()
            app.wait()
        signal.signal(signal.SIGTERM, previous)
        if saved_url is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = saved_url
        shutil.rmtree(project, ignore_errors=True)


def _start_app(project: Path, url: str) -> tuple[subprocess.Popen[bytes], str]:
    """The sample app, reading its database URL from a file the point_app hook rewrites."""
    (project / "app.url").write_text(url)
    return sampleapp.start(project / "app.url", "SELECT count(*) FROM customer")


def _write_project(project: Path, health_url: str) -> None:
    log = project / "hooks.log"
    (project / "pgrunbook.toml").write_text(
        '[backup]\nstorage = "backups"\nretention = { daily = 7, weekly = 4, monthly = 6 }\n'
        "[environments.default]\n"
        'app_url_env = "DATABASE_URL"\n'  # the demo's app connects as the throwaway cluster's superuser
        f'health_url = "{health_url}"\nhealth_deadline_s = 5\nhealth_interval_s = 0.3\n'
        'read_query = "SELECT count(*) FROM customer"\n'
        "[environments.default.hooks]\n"
        f"maintenance_on = 'echo maintenance on >> {log}'\n"
        f"maintenance_off = 'echo maintenance off >> {log}'\n"
        f"point_app = 'printf %s \"$PGRUNBOOK_DATABASE_URL\" > {project / 'app.url'}'\n"
        f"app_rollback = 'echo app rolled back >> {log}'\n"
    )
    _add_migration(project, "20260101000000_init", SAMPLE_SCHEMA)


def _add_migration(project: Path, name: str, script: str) -> None:
    folder = project / "prisma" / "migrations" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder.parent / "migration_lock.toml").write_text('provider = "postgresql"\n')
    (folder / "migration.sql").write_text(script)


def _migrate(out: Output, env: Environment) -> dict[str, Any]:
    before = migration_status(env)
    out.info(f"   status: {len(before.pending)} pending ({', '.join(before.pending)})")
    report = migrate(env)
    after = migration_status(env)
    out.info(
        f"   applied {', '.join(a.name for a in report.applied)}; status now: "
        f"{'up to date' if after.exit_code == 0 else after.to_dict()}"
    )
    return {"ok": after.exit_code == 0}


def _deploy(out: Output, env: Environment, *, ok: bool) -> dict[str, Any]:
    journal = Journal(journal_path(env.config))
    try:
        report = deploy(env, journal, DeployOptions(auto_rollback=True))
    except DeployFailed as exc:
        report = exc.report
    for s in report.steps:
        out.info(f"   {s['status']:>9}  {s['name']} ({s.get('duration_s') or 0:.2f}s) {s.get('detail') or ''}")
    window = f"{report.maintenance_window_s:.1f}s" if report.maintenance_window_s is not None else "-"
    out.info(f"   outcome: {report.outcome}; maintenance window {window}")
    if report.database:
        out.info(
            f"   the app now runs on {report.database}, a verified copy of the pre-deploy backup; "
            f"{report.replaced_database} is kept for forensics"
        )
    expected = "succeeded" if ok else "rolled_back"
    return {"ok": report.outcome == expected, "outcome": report.outcome, "run_id": report.run_id}


def _runs(out: Output, env: Environment) -> dict[str, Any]:
    records = Journal(journal_path(env.config)).runs(limit=5)
    for r in records:
        out.info(f"   {r.id}  {r.kind:<7} {r.outcome:<12} {len(r.steps)} steps, by {r.user}@{r.host}")
    return {"ok": bool(records)}


def _check(out: Output, env: Environment) -> dict[str, Any]:
    from pgrunbook.monitor.check import STATUS_VALUE, run_check

    report = run_check(env.config)
    for e in report.environments:
        for f in e.findings:
            out.info(f"   {f.status:>8}  {f.name}: {f.detail}")
    out.info(f"   check: {report.status} (exit {STATUS_VALUE[report.status]}); --prometheus FILE feeds node_exporter")
    return {"ok": report.status != "critical", "status": report.status}


def _serve(out: Output, env: Environment) -> dict[str, Any]:
    """The long-running service, started on a free port, looked at over HTTP, stopped."""
    import httpx

    from pgrunbook.monitor.serve import Service

    service = Service(env.config, log=lambda event: None, secrets=[], port=0)
    url = service.start()
    try:
        deadline = time.monotonic() + 20
        while service.report is None and time.monotonic() < deadline:
            time.sleep(0.05)
        page = httpx.get(url, timeout=30).text
        metrics = httpx.get(url + "metrics", timeout=30).text
        healthy = httpx.get(url + "healthz", timeout=30).status_code == 200
    finally:
        service.stop()
    ids = [m.id for m in env.repository.list_backups()]
    named = sum(1 for i in ids if i in page)
    samples = sum(1 for ln in metrics.splitlines() if ln.startswith("pgrunbook_"))
    out.info(
        f"   {url}: status page names {named} of {len(ids)} backups, with the timeline plot and retention's "
        f"buckets; /metrics {samples} pgrunbook_ samples; /healthz {'ok' if healthy else 'FAILING'}"
    )
    return {"ok": healthy and named == len(ids) and "<svg" in page and samples > 0}


def _step(out: Output, title: str, fn: Any) -> dict[str, Any]:
    out.info(f"[bold]{title}[/]")
    t0 = time.monotonic()
    result: dict[str, Any] = fn()
    result["step"] = title
    result["duration_s"] = round(time.monotonic() - t0, 3)
    return result


def _doctor(out: Output, env: Environment) -> dict[str, Any]:
    checks = run_doctor(env)
    for c in checks:
        out.info(f"   {c.status:>7}  {c.name}: {c.detail}")
    return {"ok": not any(c.status == "failed" for c in checks)}


def _backup(out: Output, env: Environment, label: str) -> dict[str, Any]:
    with out.progress("backup") as progress:
        m = create_backup(env, label=label, progress=progress)
    rows = sum(t.rows for t in m.tables)
    out.info(
        f"   {m.id}: {m.size / 1e6:.2f} MB zstd, sha256 {m.sha256[:12]}…, {len(m.tables)} tables, "
        f"{rows} rows counted in the dump's own snapshot, migration head "
        f"{m.migration_head.name if m.migration_head else '-'}"
    )
    out.info(f"   restore by hand: {m.restore_command}")
    return {"ok": True, "id": m.id, "size": m.size}


def _list(out: Output, env: Environment) -> dict[str, Any]:
    backups = env.repository.list_backups()
    id_width = max((len(m.id) for m in backups), default=0)  # ids differ in length with their labels
    label_width = max((len(m.label) for m in backups), default=0)
    for m in backups:
        out.info(f"   {m.id:<{id_width}}  {m.label:<{label_width}}  {m.size / 1e6:8.2f} MB  verified={m.verified}")
    return {"ok": len(backups) >= 2, "count": len(backups)}


def _verify(out: Output, env: Environment, backup_id: str) -> dict[str, Any]:
    with out.progress("verify") as progress:
        result = verify_backup(env, backup_id, drill_restore=True, progress=progress)
    for c in result.checks:
        out.info(f"   {'ok' if c.ok else 'FAIL':>4}  {c.name}: {c.detail}")
    return {"ok": result.ok}


def _prune(out: Output, env: Environment) -> dict[str, Any]:
    report = prune(env, dry_run=True)
    for d in report.decisions:
        out.info(f"   {d.action:>6}  {d.id}: {'; '.join(d.reasons)}")
    return {"ok": all(d.action == "keep" for d in report.decisions)}
