"""The spool alone: format, torn tails, the bound, replay order, the lock, SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from collector.exceptions import SpoolInUse, SpoolUnavailable
from collector.spool import MAGIC, Spool, read_segment

ROOT = Path(__file__).resolve().parents[3]


def recs(n: int, start: int = 0, size: int = 100) -> list[tuple[str, bytes, bytes]]:
    return [
        ("topic.a", f"k{i}".encode(), f"{i:08d}".encode().ljust(size, b"x"))
        for i in range(start, start + n)
    ]


def values(records: list[tuple[str, bytes, bytes]]) -> list[bytes]:
    return [r[2] for r in records]


def drain(spool: Spool) -> list[tuple[str, bytes, bytes]]:
    out = []
    while (seg := spool.claim()) is not None:
        out.extend(spool.read(seg))
        spool.release(seg, done=True)
    return out


def test_round_trip_keeps_topic_key_value_and_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=8192)
    spool.open()
    written = recs(300)
    for i in range(0, 300, 7):
        spool.append(written[i : i + 7])
    assert spool.pending_records == 300
    assert len(list(spool.segments())) > 2  # rolled over several segments
    assert drain(spool) == written  # oldest first, exact bytes
    assert spool.pending_records == 0
    assert not list(tmp_path.glob("*.seg"))
    spool.close()


def test_records_survive_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.open()
    spool.append(recs(50))
    spool.close()
    again = Spool(tmp_path, max_bytes=1 << 20)
    again.open()
    assert again.pending_records == 50
    again.append(recs(5, start=50))
    assert values(drain(again)) == values(recs(55))
    again.close()


def test_torn_tail_is_tolerated_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.open()
    spool.append(recs(10))
    spool.close()
    (seg,) = tmp_path.glob("*.seg")
    data = seg.read_bytes()
    seg.write_bytes(data[:-30])  # a crash in the middle of the last write
    again = Spool(tmp_path, max_bytes=1 << 20)
    again.open()
    got = drain(again)
    assert values(got) == values(recs(9))
    assert again.torn_bytes > 0
    again.close()


def test_crc_mismatch_stops_the_segment_without_raising(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.open()
    spool.append(recs(10))
    spool.close()
    (seg,) = tmp_path.glob("*.seg")
    data = bytearray(seg.read_bytes())
    data[len(MAGIC) + 8 + 5 * 120] ^= 0xFF  # flip a byte inside record 5's payload region
    seg.write_bytes(bytes(data))
    got, torn = read_segment(seg)
    assert 0 < len(got) < 10
    assert torn > 0
    assert values(got) == values(recs(len(got)))


def test_bound_drops_oldest_segments_and_counts_them(tmp_path: Path) -> None:
    dropped: list[int] = []
    spool = Spool(tmp_path, max_bytes=64 * 1024, segment_bytes=8192, on_dropped=dropped.append)
    spool.open()
    for i in range(0, 2000, 10):
        spool.append(recs(10, start=i))
    assert spool.pending_bytes <= 64 * 1024
    assert spool.dropped == sum(dropped) > 0
    kept = values(drain(spool))
    assert len(kept) + spool.dropped == 2000
    assert kept == values(recs(2000))[spool.dropped :]  # the oldest went, the newest stayed
    spool.close()


def test_claimed_segment_is_never_dropped(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=64 * 1024, segment_bytes=8192)
    spool.open()
    spool.append(recs(60))
    seg = spool.claim()
    assert seg is not None
    for i in range(100, 1500, 10):
        spool.append(recs(10, start=i))
    assert seg.path.exists()
    spool.release(seg, done=True)
    spool.close()


def test_one_process_per_directory(tmp_path: Path) -> None:
    first = Spool(tmp_path, max_bytes=1 << 20)
    first.open()
    code = textwrap.dedent(
        f"""
        from collector.spool import Spool
        from collector.exceptions import SpoolInUse
        try:
            Spool({str(tmp_path)!r}, max_bytes=1 << 20).open()
        except SpoolInUse:
            raise SystemExit(7)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60)
    assert proc.returncode == 7
    first.close()
    with pytest.raises(SpoolUnavailable):
        first.append(recs(1))
    assert issubclass(SpoolInUse, Exception)


def test_fsync_policy_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    spool = Spool(tmp_path, max_bytes=1 << 20, fsync_interval_s=3600)
    spool.open()
    spool.append(recs(1))  # creates the segment: one directory fsync
    base = len(synced)
    spool.append(recs(1))
    spool.append(recs(1))
    assert len(synced) == base  # page cache only: no fsync per append
    before = len(synced)
    spool.sync_if_due()  # not due yet
    assert len(synced) == before
    spool.append(recs(1), sync=True)
    assert len(synced) == before + 1
    spool.close()
    always = Spool(tmp_path / "b", max_bytes=1 << 20, fsync_interval_s=0)
    always.open()
    n = len(synced)
    always.append(recs(1))
    always.append(recs(1))
    assert len(synced) >= n + 2
    always.close()


def test_sigkill_after_append_loses_nothing(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import os, signal
        from collector.spool import Spool
        s = Spool({str(tmp_path)!r}, max_bytes=1 << 24, fsync_interval_s=3600)
        s.open()
        for i in range(0, 1000, 10):
            s.append([("t", b"k", str(j).encode()) for j in range(i, i + 10)])
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    spool = Spool(tmp_path, max_bytes=1 << 24)
    spool.open()  # the dead process's lock is gone with it
    assert [int(v) for v in values(drain(spool))] == list(range(1000))
    spool.close()


def test_rejects_bad_configuration(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        Spool(tmp_path, max_bytes=10)
    with pytest.raises(ValueError, match="segment_bytes"):
        Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 20)
