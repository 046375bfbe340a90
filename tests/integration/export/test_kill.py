"""SIGKILL in the middle of an export leaves the previous export intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from processors.export.tree import PAUSE_AFTER_ENV, PAUSE_MARKER_ENV

pytestmark = pytest.mark.integration
CHILD = Path(__file__).with_name("export_child.py")
REPO = Path(__file__).resolve().parents[3]


def _snapshot(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def _child(data_dir: Path, out: Path, seed: int, **env: str) -> subprocess.Popen[str]:
    inherited = {
        k: v for k, v in os.environ.items() if k not in (PAUSE_AFTER_ENV, PAUSE_MARKER_ENV)
    }
    full_env = {**inherited, "PYTHONPATH": str(REPO), **env}
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(data_dir), str(out), str(seed)],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> str:
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    return output


def test_sigkill_mid_export_leaves_previous_tree(tmp_path: Path) -> None:
    data_dir, out = tmp_path / "data", tmp_path / "export"
    _finish(_child(data_dir, out, seed=0))
    before = _snapshot(out)
    assert len(before) == 50 * 3 + 2

    marker = tmp_path / "paused"
    victim = _child(data_dir, out, 1, **{PAUSE_AFTER_ENV: "40", PAUSE_MARKER_ENV: str(marker)})
    deadline = time.monotonic() + 120
    while not marker.exists():  # wait until the new tree is half written
        assert victim.poll() is None, victim.communicate()[0]
        assert time.monotonic() < deadline, "the export never reached the pause point"
        time.sleep(0.02)
    half_tree = Path(marker.read_text())
    assert half_tree.is_dir() and half_tree.parent == tmp_path
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL

    assert _snapshot(out) == before  # readers still see the whole previous export
    assert half_tree.exists()  # what the dead export left aside, never in `out`

    output = _finish(_child(data_dir, out, seed=1))
    assert "removed .export.tmp-" in output
    after = _snapshot(out)
    assert after.keys() == before.keys() and after != before
    assert not half_tree.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".export.lock",
        "data",
        "export",
        "paused",
    ]
