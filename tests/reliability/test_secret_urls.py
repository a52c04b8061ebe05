"""Kind 3 of issue 20: credentials in URLs pgrunbook echoes (health, S3 storage, webhook) never shown."""

from __future__ import annotations

import pytest

from pgrunbook.postgres.cluster import free_port
from tests import evidence
from tests.conftest import Project, assert_clean_error

pytestmark = pytest.mark.reliability

TOKEN = "tok-Zq9-s3cr3t-777"


def test_health_url_token_is_not_echoed(project: Project) -> None:
    url = f"http://user:{TOKEN}x@127.0.0.1:{free_port()}/health?token={TOKEN}&x=1"
    r = project.cli("health", "--url", url, "--deadline", "0.5")
    text = r.stdout + r.stderr
    evidence.output_checked(text, traceback="Traceback" in text, secret=TOKEN in text)
    assert r.returncode == 2 and "error:" in r.stderr
    assert TOKEN not in text and "127.0.0.1" in text


def test_s3_url_with_credentials_is_refused_without_echoing_them(seeded: Project) -> None:
    bid = seeded.cli("backup", "create").stdout.strip()
    r = seeded.cli("backup", "copy", bid, "--to", f"s3://AKIAEXAMPLE:{TOKEN}@bucket/prefix")
    assert_clean_error(r, 3, "carries credentials")
    assert TOKEN not in r.stdout + r.stderr


def test_webhook_url_from_the_environment_is_redacted_in_errors(project: Project) -> None:
    """A webhook URL is a secret as a whole (its path is the token): named by the configuration, its
    value is removed from any error text."""
    hook = f"https://hooks.example.invalid/services/T0/B0/{TOKEN}"
    project.write_config(
        '[backup]\nstorage = "backups"\n[monitor]\nwebhook_url_env = "SLACK_URL"\n'
        "[environments.default]\n[environments.default.hooks]\n"
        'maintenance_on = "echo posting to $SLACK_URL failed; exit 1"\n'
    )
    bid = project.cli("backup", "create").stdout.strip()
    assert bid
    r = project.cli(
        "restore", bid, "--in-place", "--confirm", project.url.rsplit("/", 1)[1], extra_env={"SLACK_URL": hook}
    )
    text = r.stdout + r.stderr
    evidence.output_checked(text, traceback="Traceback" in text, secret=TOKEN in text)
    assert "hook maintenance_on failed" in r.stderr, r.stderr
    assert TOKEN not in text
