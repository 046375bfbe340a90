"""`telemetry worker` checks its changelogs' partition counts on the broker before Faust starts.

The app then trusts them (Faust's own check reads a metadata cache that can
show a just-created changelog with 0 partitions and crash the agent), so a
real mismatch must stop the worker at once, in one line that names it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from pipeline_util import settings_env, settings_for
from run_util import run_env

from collector.topics import ensure_topics, partition_counts
from processors.worker.tables import changelog_topics


def test_a_changelog_with_other_partitions_stops_the_worker_in_one_line(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(topic_prefix)
    seen_changelog = changelog_topics(settings.worker_id)[-1]
    asyncio.run(ensure_topics(kafka_bootstrap, [settings.topic], partitions=4))
    asyncio.run(ensure_topics(kafka_bootstrap, [seen_changelog], partitions=2))
    assert asyncio.run(partition_counts(kafka_bootstrap, [settings.topic, seen_changelog])) == {
        settings.topic: 4,
        seen_changelog: 2,
    }
    env = settings_env(settings, kafka_bootstrap, tmp_path / "data")
    done = subprocess.run(
        [sys.executable, "-m", "telemetry.cli", "worker", "--state-dir", str(tmp_path / "s")],
        env=run_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"{seen_changelog} has 2" in done.stderr
    assert "want 4" in done.stderr
    assert "Traceback" not in done.stderr
