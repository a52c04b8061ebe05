"""``pgrunbook schedule --print cron|systemd|kubernetes``: ready-to-use schedules for teams that run
backups, prune and drills on their own platform. Pure text generation from the configuration."""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass

from pgrunbook.config import Config

DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]


@dataclass(frozen=True)
class Job:
    name: str  # backup, prune, drill
    environment: str
    cron: str
    args: list[str]
    #: the variables the environment reads its database URLs from (database_url_env, direct_url_env)
    url_vars: tuple[str, ...] = ("DATABASE_URL",)


def jobs(
    environments: list[str], backup: str, prune: str, drill: str, url_vars: tuple[str, ...] = ("DATABASE_URL",)
) -> list[Job]:
    """The three jobs per environment; a schedule of "off" leaves that job out."""
    out = []
    for env in environments:
        for name, cron, args in (
            ("backup", backup, ["backup", "create", "--label", "scheduled", "--env", env]),
            ("prune", prune, ["backup", "prune", "--env", env]),
            ("drill", drill, ["backup", "verify", "latest", "--drill", "--env", env]),
        ):
            if cron != "off":
                out.append(Job(name, env, cron, args, url_vars))
    return out


#: a CronJob's name leaves 11 characters of the 63 for the Jobs it creates (Kubernetes documentation,
#: "CronJob": "The name must be no longer than 52 characters")
K8S_NAME_MAX = 52


def kubernetes_name(*parts: str) -> str:
    """A Kubernetes object name (RFC 1123 label: lowercase alphanumerics and '-', starting and ending
    alphanumeric; at most K8S_NAME_MAX) made of ``parts``. Parts that are valid already give their own
    name; any other spelling (upper case, '_', '.', too long) also gets 8 hex digits of its SHA-256, so
    two environments that differ only there ("Prod" and "prod", "prod_eu" and "prod-eu") never share a
    CronJob or Secret (breaker13 N7)."""
    raw = "-".join(parts)
    name = re.sub(r"[^a-z0-9-]", "-", raw.lower()).strip("-")
    if name == raw and len(name) <= K8S_NAME_MAX:
        return name or "pgrunbook"
    return _digested(parts)


def kubernetes_names(wanted: list[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    """``kubernetes_name`` of each parts tuple, all distinct: where a name valid as written equals
    another's digested one (an environment named ``prod-b35a16c8`` beside ``Prod``: breaker14 F6), each
    of the names involved gets its own digest."""
    names = {parts: kubernetes_name(*parts) for parts in wanted}
    taken: dict[str, list[tuple[str, ...]]] = {}
    for parts, name in names.items():
        taken.setdefault(name, []).append(parts)
    for same in (group for group in taken.values() if len(group) > 1):
        for parts in same:
            names[parts] = _digested(parts)
    if len(set(names.values())) < len(names):  # crafted further still: every name digested
        names = {parts: _digested(parts) for parts in wanted}
    return names


def _digested(parts: tuple[str, ...]) -> str:
    raw = "-".join(parts)
    name = re.sub(r"[^a-z0-9-]", "-", raw.lower()).strip("-")
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"{name[: K8S_NAME_MAX - 9].strip('-')}-{digest}".lstrip("-")


def command(kind: str, job: Job, executable: str, config_path: str) -> list[str]:
    """The command ``render`` schedules for ``job`` on platform ``kind``: this host's executable and
    configuration for cron and systemd; the image's ``pgrunbook`` (its own configuration) for
    Kubernetes."""
    if kind == "kubernetes":
        return ["pgrunbook", *job.args]
    return [executable, "--config", config_path, *job.args]


def config_jobs(config: Config, only: str | None = None) -> list[Job]:
    """Every environment's jobs (``only``: that environment's alone); an environment's own
    [environments.X.schedule] wins over [schedule]."""
    out = []
    for name in config.environment_names():
        if only is not None and name != only:
            continue
        env_cfg = config.environments.get(name)
        sched = (env_cfg.schedule if env_cfg else None) or config.schedule
        url_vars = (env_cfg.database_url_env, env_cfg.direct_url_env) if env_cfg else ("DATABASE_URL", None)
        out += jobs([name], sched.backup, sched.prune, sched.drill, tuple(v for v in url_vars if v))
    return out


def cron_to_oncalendar(expr: str) -> str:
    """Five-field cron to systemd's OnCalendar, for the forms schedules use (numbers, *, lists, ranges)."""
    fields = expr.split()
    if expr.startswith("@every"):
        raise ValueError(f"schedule {expr!r} runs under pgrunbook serve only; platforms need a cron expression")
    if len(fields) != 5:
        raise ValueError(f"cron expression {expr!r} must have 5 fields")
    minute, hour, dom, month, dow = fields
    for f in (minute, hour, dom, month):
        if not re.fullmatch(r"\*|\d+(,\d+)*|\d+-\d+|\*/\d+", f):
            raise ValueError(f"cron field {f!r} in {expr!r} has no systemd equivalent here")

    def conv(f: str) -> str:
        if f.startswith("*/"):
            return f"0/{f[2:]}"
        return f.replace("-", "..")

    days = ""
    if dow != "*":
        if not re.fullmatch(r"\d(,\d)*|\d-\d", dow):
            raise ValueError(f"day-of-week {dow!r} in {expr!r} has no systemd equivalent here")
        if "-" in dow:
            a, b = (int(x) % 7 for x in dow.split("-"))
            days = f"{DAYS[a]}..{DAYS[b]} "
        else:
            days = ",".join(DAYS[int(x) % 7] for x in dow.split(",")) + " "
    date = f"*-{conv(month) if month != '*' else '*'}-{conv(dom) if dom != '*' else '*'}"
    return (
        f"{days}{date} {conv(hour).zfill(2) if hour.isdigit() else conv(hour)}:"
        f"{conv(minute).zfill(2) if minute.isdigit() else conv(minute)}:00"
    )


def render(kind: str, all_jobs: list[Job], executable: str, config_path: str) -> str:
    for j in all_jobs:
        if j.cron.startswith("@every"):
            raise ValueError(
                f"the {j.name} schedule of {j.environment} ({j.cron!r}) runs under pgrunbook serve only; "
                "platforms need a cron expression"
            )
    if kind == "cron":
        needed = sorted({v for j in all_jobs for v in j.url_vars})
        lines = [
            f"# pgrunbook schedule (crontab -e); {', '.join(needed) or 'the URL variables'} must be in cron's",
            "# environment (a wrapper that loads them, or the crontab's own NAME=value lines); output goes to",
            "# syslog through logger, so a failed job shows there and in pgrunbook check, not in cron's mail",
        ]
        for j in all_jobs:
            cmd = shlex.join(command(kind, j, executable, config_path))
            lines.append(f"{j.cron} {cmd} 2>&1 | logger -t pgrunbook-{j.name}-{j.environment}")
        return "\n".join(lines) + "\n"
    if kind == "systemd":
        parts = []
        for j in all_jobs:
            unit = f"pgrunbook-{j.name}-{j.environment}"
            parts.append(
                f"# /etc/systemd/system/{unit}.service\n[Unit]\nDescription=pgrunbook {j.name} "
                f"({j.environment})\n\n[Service]\nType=oneshot\nEnvironmentFile=/etc/pgrunbook/"
                f"{j.environment}.env\nExecStart={shlex.join(command(kind, j, executable, config_path))}\n"
            )
            parts.append(
                f"# /etc/systemd/system/{unit}.timer\n[Unit]\nDescription=pgrunbook {j.name} "
                f"({j.environment}) schedule\n\n[Timer]\nOnCalendar={cron_to_oncalendar(j.cron)}\n"
                "Persistent=true\n\n[Install]\nWantedBy=timers.target\n"
            )
        return "\n".join(parts)
    if kind == "kubernetes":
        # distinct per kind of object: a CronJob and a Secret may share a name
        names = kubernetes_names([("pgrunbook", j.name, j.environment) for j in all_jobs])
        names.update(kubernetes_names([("pgrunbook", j.environment) for j in all_jobs]))
        docs = []
        for j in all_jobs:
            name = names[("pgrunbook", j.name, j.environment)]
            secret = names[("pgrunbook", j.environment)]
            args = "".join(f'\n                - "{a}"' for a in command(kind, j, executable, config_path))
            env = "".join(
                f"""
                - name: {var}
                  valueFrom:
                    secretKeyRef:
                      name: {secret}
                      key: {var}"""
                for var in j.url_vars
            )
            docs.append(f"""apiVersion: batch/v1
kind: CronJob
metadata:
  name: {name}
spec:
  schedule: "{j.cron}"
  concurrencyPolicy: Forbid
  startingDeadlineSeconds: 3600
  jobTemplate:
    spec:
      backoffLimit: 0
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: pgrunbook
              image: your-registry/pgrunbook:latest
              args:{args}
              env:{env}
""")
        return "---\n".join(docs)
    raise ValueError(f"unknown schedule format {kind!r}: cron, systemd or kubernetes")
