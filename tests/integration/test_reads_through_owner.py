"""Every command that reads works while `telemetry run` owns the embedded store.

stats and sql are covered in test_run.py; here: export (through the control
socket, byte for byte the owner's figures), migrate (checks, changes nothing),
and the one-line answers of the commands that would have to write.
The sink's side is docs/deploy.md step 2 (test_deploy_step2.py).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from pipeline_util import expected_counts, synthetic_events, wait_for
from run_util import RunProcess, cli

pytestmark = pytest.mark.integration


def test_export_and_migrate_read_through_run(tmp_path: Path) -> None:
    docs = synthetic_events(3_000, seed=41)
    want = {
        model: n for (model, provider), n in expected_counts(docs).requests.items() if not provider
    }
    run = RunProcess(tmp_path)
    run.start()
    try:
        for i in range(0, len(docs), 1000):
            assert run.post(docs[i : i + 1000])["accepted"] == 1000

        def counted() -> bool:
            out = cli(tmp_path, "stats", "--json")
            rows = orjson.loads(out.stdout) if out.returncode == 0 else []
            return {r["model"]: r["requests"] for r in rows if not r["provider"]} == want

        wait_for(counted, timeout=60, what="the running process to count every event")

        out = tmp_path / "export"
        exported = cli(tmp_path, "export", "--once", "--out", str(out))
        assert exported.returncode == 0, exported.stderr
        assert f"pid {run.proc.pid}" in exported.stdout  # type: ignore[union-attr]
        index = orjson.loads((out / "index.json").read_bytes())
        assert {m["model"]: m["requests"] for m in index["models"]} == want
        for m in index["models"]:
            assert (out / m["path"]).is_file() and (out / m["page"]).is_file()

        refresh = cli(tmp_path, "export", "--once", "--refresh", "--out", str(out))
        assert refresh.returncode == 2 and "drop --refresh" in refresh.stderr
        assert "Traceback" not in refresh.stderr

        migrated = cli(tmp_path, "migrate")
        assert migrated.returncode == 0, migrated.stderr
        assert "up to date (checked through the running process" in migrated.stdout

        week = tmp_path / "more.ndjson"
        week.write_bytes(b"\n".join(orjson.dumps(d) for d in synthetic_events(10, seed=42)))
        ingest = cli(tmp_path, "ingest", str(week))
        assert ingest.returncode == 1
        assert "send the events to its HTTP ingest" in ingest.stderr
        assert len(ingest.stderr.strip().splitlines()) == 1  # one line, no traceback
        assert run.proc is not None and run.proc.poll() is None
    finally:
        run.stop()
    assert run.proc is not None and run.proc.returncode == 0
