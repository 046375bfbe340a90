"""`telemetry run`: HTTP ingest into the embedded store, reads from other shells, SIGKILL safety."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from pipeline_util import expected_counts, synthetic_events, wait_for
from run_util import RunProcess, cli, run_env

pytestmark = pytest.mark.integration


def test_run_survives_sigkill_and_answers_other_shells(tmp_path: Path) -> None:
    docs = synthetic_events(6_000, seed=31)
    batches = [docs[i : i + 500] for i in range(0, len(docs), 500)]
    run = RunProcess(tmp_path)
    run.start()
    acked: list[dict[str, object]] = []
    try:
        for batch in batches[:6]:
            answer = run.post(batch)
            assert answer["accepted"] == len(batch)
            acked.extend(batch)
        run.kill()  # nothing acknowledged may be lost
        run.start()
        for batch in batches[6:]:
            run.post(batch)
            acked.extend(batch)
        # A gateway that never got an answer resends: the resend counts once.
        run.post(batches[5])

        # Another shell: sql and stats go through the running process.
        def stored() -> bool:
            out = cli(tmp_path, "sql", "SELECT count() FROM telemetry.requests", "-f", "csv")
            return out.returncode == 0 and out.stdout.split()[-1] == str(len(docs))

        wait_for(stored, timeout=60, what="every acknowledged event in telemetry.requests")
        exp = expected_counts(docs)
        want = {k: exp.requests[k] for k in exp.requests}

        def stats_match() -> bool:
            out = cli(tmp_path, "stats", "--json")
            rows = orjson.loads(out.stdout) if out.returncode == 0 else []
            return {(r["model"], r["provider"]): r["requests"] for r in rows} == want

        wait_for(stats_match, timeout=60, what="stats from the running process to be exact")

        refused = cli(tmp_path, "sql", "DROP TABLE telemetry.requests")
        assert refused.returncode != 0 and "read-only" in refused.stderr.lower()
        second = subprocess.run(
            [sys.executable, "-m", "telemetry.cli", "run", "--port", "0"],
            cwd=tmp_path,
            env=run_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode != 0
        assert "in use by another process" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        run.stop()
    assert run.proc is not None and run.proc.returncode == 0


def test_run_rejects_bad_input_and_keeps_the_good(tmp_path: Path) -> None:
    run = RunProcess(tmp_path)
    run.start()
    try:
        good = synthetic_events(10, seed=41)
        body = b"\n".join([orjson.dumps(good[0]), b"{oops", orjson.dumps(good[1])])
        req = urllib.request.Request(
            run.url, data=body, headers={"Content-Type": "application/x-ndjson"}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = orjson.loads(resp.read())
        assert answer["accepted"] == 2
        assert [r["index"] for r in answer["rejected"]] == [1]
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(
                urllib.request.Request(run.url, data=b"x", headers={"Content-Type": "text/csv"}),
                timeout=60,
            )
        assert err.value.code == 415
        out = cli(tmp_path, "sql", "SELECT field, reason FROM telemetry.rejected", "-f", "json")
        rows = orjson.loads(out.stdout)
        assert len(rows) == 1 and "malformed JSON" in rows[0]["reason"]
    finally:
        run.stop()
