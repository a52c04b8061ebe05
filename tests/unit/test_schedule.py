from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgrunbook.monitor.schedule import cron_to_oncalendar, jobs, kubernetes_name, kubernetes_names, render


def test_cron_to_systemd() -> None:
    assert cron_to_oncalendar("0 2 * * *") == "*-*-* 02:00:00"
    assert cron_to_oncalendar("30 3 * * 1-5") == "Mon..Fri *-*-* 03:30:00"
    assert cron_to_oncalendar("0 4 * * 0") == "Sun *-*-* 04:00:00"
    assert cron_to_oncalendar("*/15 * * * *") == "*-*-* *:0/15:00"
    for bad in ["0 2 * *", "0 2 L * *", "0 2 * * MON"]:
        with pytest.raises(ValueError):
            cron_to_oncalendar(bad)


def test_three_formats_cover_every_job_of_every_environment() -> None:
    js = jobs(["production", "staging"], "0 2 * * *", "30 3 * * *", "0 4 * * 0")
    assert [(j.name, j.environment) for j in js][:3] == [
        ("backup", "production"),
        ("prune", "production"),
        ("drill", "production"),
    ]
    cron = render("cron", js, "/usr/local/bin/pgrunbook", "/srv/app/pgrunbook.toml")
    assert (
        "0 2 * * * /usr/local/bin/pgrunbook --config /srv/app/pgrunbook.toml backup create --label scheduled "
        "--env production"
    ) in cron
    assert "backup verify latest --drill --env staging" in cron
    systemd = render("systemd", js, "/usr/local/bin/pgrunbook", "/srv/app/pgrunbook.toml")
    assert systemd.count("[Timer]") == 6 and "OnCalendar=Sun *-*-* 04:00:00" in systemd
    k8s = render("kubernetes", js, "pgrunbook", "/etc/pgrunbook.toml")
    assert k8s.count("kind: CronJob") == 6 and 'schedule: "30 3 * * *"' in k8s and "concurrencyPolicy: Forbid" in k8s
    with pytest.raises(ValueError):
        render("windows", js, "pgrunbook", "x")


def test_an_environment_schedule_wins_and_off_leaves_a_job_out() -> None:
    from pgrunbook.config import Config
    from pgrunbook.monitor.schedule import config_jobs

    cfg = Config.model_validate(
        {
            "schedule": {"backup": "0 2 * * *", "prune": "off", "drill": "0 4 * * 0"},
            "environments": {
                "production": {"schedule": {"backup": "15 1 * * *", "prune": "30 3 * * *", "drill": "off"}},
                "staging": {},
            },
        }
    )
    got = {(j.environment, j.name): j.cron for j in config_jobs(cfg)}
    assert got == {
        ("production", "backup"): "15 1 * * *",
        ("production", "prune"): "30 3 * * *",
        ("staging", "backup"): "0 2 * * *",
        ("staging", "drill"): "0 4 * * 0",
    }


def test_kubernetes_jobs_read_each_environments_own_variables_from_a_valid_secret_name() -> None:
    """breaker13 F12: every CronJob set DATABASE_URL, whatever variable the environment reads, from a
    Secret named after the environment as written (``pgrunbook-Prod_EU``: not a valid name)."""
    from pgrunbook.monitor.schedule import command

    js = jobs(["Prod_EU"], "0 2 * * *", "off", "off", ("STAGING_URL", "STAGING_DIRECT_URL"))
    k8s = render("kubernetes", js, "/usr/local/bin/pgrunbook", "/srv/app/pgrunbook.toml")
    assert "- name: STAGING_URL" in k8s and "key: STAGING_DIRECT_URL" in k8s and "DATABASE_URL\n" not in k8s
    assert f"name: {kubernetes_name('pgrunbook', 'Prod_EU')}\n" in k8s and "Prod_EU\n" not in k8s.split("args:")[0]
    assert command("kubernetes", js[0], "/usr/local/bin/pgrunbook", "/srv/x.toml")[:3] == [
        "pgrunbook",
        "backup",
        "create",
    ]
    assert command("cron", js[0], "/usr/local/bin/pgrunbook", "/srv/x.toml")[:3] == [
        "/usr/local/bin/pgrunbook",
        "--config",
        "/srv/x.toml",
    ]


RFC1123 = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


@pytest.mark.parametrize(
    ("parts", "name"),
    [
        (("pgrunbook", "backup", "prod"), "pgrunbook-backup-prod"),  # valid already: its own name
        (("pgrunbook", "prod-eu"), "pgrunbook-prod-eu"),
        (("pgrunbook", "Prod_EU"), None),  # another spelling: a digest keeps it apart
        (("pgrunbook", "x" * 80), None),  # too long
    ],
)
def test_kubernetes_names_are_valid_and_kept_when_valid(parts: tuple[str, ...], name: str | None) -> None:
    got = kubernetes_name(*parts)
    assert RFC1123.fullmatch(got) and len(got) <= 52, got
    if name is not None:
        assert got == name
    else:
        assert re.search(r"-[0-9a-f]{8}$", got), got


@given(st.lists(st.text(min_size=1, max_size=70), min_size=2, max_size=6, unique=True))
def test_environments_that_differ_only_in_case_or_punctuation_never_share_a_name(envs: list[str]) -> None:
    """breaker13 N7: "Prod" and "prod", "prod_eu" and "prod-eu" got the same CronJob and Secret names."""
    names = [kubernetes_name("pgrunbook", "backup", e) for e in envs]
    assert all(RFC1123.fullmatch(n) and len(n) <= 52 for n in names), names
    assert len(set(names)) == len(names), list(zip(envs, names, strict=True))


def test_the_example_pairs_get_two_names() -> None:
    for a, b in (("Prod", "prod"), ("prod_eu", "prod-eu"), ("prod.eu", "prod-eu")):
        assert kubernetes_name("pgrunbook", a) != kubernetes_name("pgrunbook", b)


def test_a_valid_name_equal_to_another_environments_digested_one_is_kept_apart() -> None:
    """breaker14 F6: an environment named exactly like the digested name of another ("prod-b35a16c8" beside
    "Prod") got the same CronJob, and another pair the same Secret."""
    envs = ["Prod", "prod-b35a16c8", "prod-51b8af37", "pgrunbook-backup-prod-b35a16c8"]
    kinds: list[list[tuple[str, ...]]] = [[("pgrunbook", "backup", e) for e in envs], [("pgrunbook", e) for e in envs]]
    for wanted in kinds:
        names = kubernetes_names(wanted)
        assert len(set(names.values())) == len(wanted), names
        assert all(RFC1123.fullmatch(n) and len(n) <= 52 for n in names.values())
    assert kubernetes_names([("pgrunbook", "prod")]) == {("pgrunbook", "prod"): "pgrunbook-prod"}  # unchanged alone
    text = render("kubernetes", jobs(envs, "0 2 * * *", "off", "off"), "/usr/bin/pgrunbook", "/srv/p.toml")
    cronjobs = re.findall(r"kind: CronJob\nmetadata:\n  name: (\S+)", text)
    assert len(cronjobs) == len(set(cronjobs)) == len(envs), cronjobs
    secrets = {m for m in re.findall(r"secretKeyRef:\n\s+name: (\S+)", text)}
    assert len(secrets) == len(envs), secrets


@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=5, unique=True))
def test_every_environments_names_are_distinct(envs: list[str]) -> None:
    kinds: list[list[tuple[str, ...]]] = [[("pgrunbook", "backup", e) for e in envs], [("pgrunbook", e) for e in envs]]
    for wanted in kinds:
        assert len(set(kubernetes_names(wanted).values())) == len(wanted)


def test_the_crontab_names_the_variables_cron_must_have() -> None:
    """newuser14 U5: the comment said "the URL variables" without naming them."""
    text = render("cron", jobs(["prod"], "0 2 * * *", "off", "off", ("APP_URL", "APP_DIRECT_URL")), "/p", "/c.toml")
    assert text.startswith("# pgrunbook schedule (crontab -e); APP_DIRECT_URL, APP_URL must be in cron's")
