"""``pgrunbook demo``: the runbook on a throwaway cluster, so a newcomer sees every step work.

Everything it creates (cluster, project folder, backups) lives in temp folders that are removed at the
end, on Ctrl-C and on SIGTERM too.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from pgrunbook.backup.create import create_backup
from pgrunbook.backup.prune import prune
from pgrunbook.backup.verify import verify_backup
from pgrunbook.config import load_config
from pgrunbook.doctor import run_doctor
from pgrunbook.environment import Environment
from pgrunbook.postgres.cluster import LocalCluster

if TYPE_CHECKING:
    from pgrunbook.cli.render import Output

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
CREATE TABLE _prisma_migrations (
    id VARCHAR(36) PRIMARY KEY NOT NULL, checksum VARCHAR(64) NOT NULL, finished_at TIMESTAMPTZ,
    migration_name VARCHAR(255) NOT NULL, logs TEXT, rolled_back_at TIMESTAMPTZ,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(), applied_steps_count INTEGER NOT NULL DEFAULT 0);
INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, applied_steps_count)
VALUES (gen_random_uuid()::text, repeat('0', 64), now(), '20260101000000_init', 1),
       (gen_random_uuid()::text, repeat('1', 64), now(), '20260201000000_add_orders', 1);
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
    """Throwaway cluster -> sample app -> doctor -> backup -> list -> verify --drill -> prune --dry-run."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    project = Path(tempfile.mkdtemp(prefix="pgrunbook-demo-"))
    saved_url = os.environ.get("DATABASE_URL")
    summary: dict[str, Any] = {"steps": []}
    try:
        out.info("[bold]1. A throwaway PostgreSQL cluster[/] (initdb + pg_ctl on a free port)")
        with LocalCluster(name="pgrunbook-demo") as cluster:
            out.info(f"   listening on 127.0.0.1:{cluster.port}, data in {cluster.base}")
            _sample_app(cluster, rows)
            out.info(
                f"[bold]2. A sample app database[/] 'shop': customers, products, {rows} orders, an enum, "
                "and Prisma's history table"
            )
            (project / "pgrunbook.toml").write_text(
                '[backup]\nstorage = "backups"\nretention = { daily = 7, weekly = 4, monthly = 6 }\n'
            )
            os.environ["DATABASE_URL"] = cluster.url("shop")
            env = Environment.resolve(load_config(cwd=project))
            summary["steps"].append(_step(out, "3. pgrunbook doctor", lambda: _doctor(out, env)))
            first = _step(out, "4. pgrunbook backup create --label pre-deploy", lambda: _backup(out, env, "pre-deploy"))
            with psycopg.connect(cluster.url("shop"), autocommit=True) as conn:
                conn.execute("INSERT INTO customer (email, name) VALUES ('late@example.com', 'Late Arrival')")
            second = _step(
                out, "5. a write, then pgrunbook backup create (label manual)", lambda: _backup(out, env, "manual")
            )
            summary["steps"].append(first)
            summary["steps"].append(second)
            summary["steps"].append(_step(out, "6. pgrunbook backup list", lambda: _list(out, env)))
            summary["steps"].append(
                _step(
                    out, f"7. pgrunbook backup verify {second['id']} --drill", lambda: _verify(out, env, second["id"])
                )
            )
            summary["steps"].append(_step(out, "8. pgrunbook backup prune --dry-run", lambda: _prune(out, env)))
        out.info(
            "[bold green]demo complete[/]: cluster stopped, temp folders removed. Next: "
            "`pgrunbook init` in your project, then `pgrunbook doctor` with DATABASE_URL set."
        )
        summary["ok"] = all(s.get("ok", True) for s in summary["steps"])
        return summary
    finally:
        signal.signal(signal.SIGTERM, previous)
        if saved_url is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = saved_url
        shutil.rmtree(project, ignore_errors=True)


def _sample_app(cluster: LocalCluster, rows: int) -> None:
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE shop")
    with psycopg.connect(cluster.url("shop"), autocommit=True) as conn:
        conn.execute(SAMPLE_SCHEMA)  # type: ignore[arg-type]
        conn.execute(SAMPLE_DATA.format(customers=max(int(rows) // 10, 1), orders=int(rows)))  # type: ignore[arg-type]


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
    for m in backups:
        out.info(f"   {m.id}  {m.label:<11} {m.size / 1e6:8.2f} MB  verified={m.verified}")
    return {"ok": len(backups) == 2, "count": len(backups)}


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
