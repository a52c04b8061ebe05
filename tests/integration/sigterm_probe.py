"""Run only by test_suite_hygiene.py, in a pytest of its own: holds the session cluster until stopped."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pgrunbook.postgres.cluster import LocalCluster


def test_hold_the_cluster(cluster: LocalCluster) -> None:
    assert cluster.base is not None
    pid = (cluster.data / "postmaster.pid").read_text().splitlines()[0]
    Path(os.environ["PGRUNBOOK_PROBE_OUT"]).write_text(f"{cluster.base}\n{pid}\n")
    time.sleep(300)
