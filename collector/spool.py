"""The disk spool: what the producer cannot hand over waits here, append-only.

Layout: a directory of segment files ``<seq:016d>.seg`` plus ``spool.lock``.
A segment starts with the 8-byte magic ``TSPOOL1\\n``; then records, each

    length: uint32 BE | crc32(payload): uint32 BE | payload (length bytes)
    payload = topic_len: uint8 | topic | key_len: uint16 BE | key | value

Writes go to the newest ("active") segment with one unbuffered ``os.write`` per
append, so a record is in the kernel as soon as ``append`` returns: a SIGKILL of
the process loses nothing that was appended. ``fsync`` (power loss) follows the
policy given by ``fsync_interval_s``: 0 syncs on every append; otherwise the
owner calls ``sync_if_due()`` (the emitter does every tick) and an append with
``sync=True`` syncs at once. A segment is synced when it is sealed.

Reading stops at the first record whose header or payload is cut short or whose
CRC does not match: a crash in the middle of a write leaves a torn tail, which
is counted and logged, never fatal. Segments are replayed oldest first, and a
segment is deleted only once its owner says every record of it was handled.

Bound: the spool keeps at most ``max_bytes``. Past it, whole segments are
dropped oldest first (never the one being replayed), each dropped record
counted in ``dropped`` and logged. One process per directory (``flock``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from collector.encoding import Record
from collector.exceptions import SpoolInUse, SpoolUnavailable

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_SEGMENT_BYTES", "Segment", "Spool", "spooled_bytes"]

log = logging.getLogger(__name__)

MAGIC = b"TSPOOL1\n"
_HEADER = struct.Struct(">II")
_KEYLEN = struct.Struct(">H")
DEFAULT_MAX_BYTES = 1 << 30
DEFAULT_SEGMENT_BYTES = 8 << 20
DEFAULT_FSYNC_INTERVAL_S = 1.0


@dataclass
class Segment:
    seq: int
    path: Path
    size: int
    records: int
    claimed: bool = field(default=False)


def _pack(record: Record) -> bytes:
    topic, key, value = record
    t = topic.encode()
    payload = b"".join((bytes((len(t),)), t, _KEYLEN.pack(len(key)), key, value))
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _unpack(payload: bytes) -> Record:
    tlen = payload[0]
    topic = payload[1 : 1 + tlen].decode()
    (klen,) = _KEYLEN.unpack_from(payload, 1 + tlen)
    kstart = 3 + tlen
    return topic, payload[kstart : kstart + klen], payload[kstart + klen :]


def spooled_bytes(directory: Path) -> int:
    """Bytes of the segment files under ``directory`` (its subdirectories too); 0 if none.

    For a reader outside the owning process (`telemetry status`): it takes no
    lock and reads only file sizes, so a spool in use is measured as it is.
    """
    total = 0
    for path in directory.rglob("*.seg"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:  # replayed and deleted meanwhile
            continue
    return total


def read_segment(path: Path) -> tuple[list[Record], int]:
    """All intact records of a segment, and how many trailing bytes were unreadable."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        return [], len(data)
    pos, end = len(MAGIC), len(data)
    out: list[Record] = []
    while pos + _HEADER.size <= end:
        length, crc = _HEADER.unpack_from(data, pos)
        start = pos + _HEADER.size
        payload = data[start : start + length]
        if len(payload) < length or zlib.crc32(payload) != crc or length < 3:
            break
        out.append(_unpack(payload))
        pos = start + length
    return out, end - pos


def _count_records(path: Path) -> tuple[int, int]:
    """(records, size) of a segment from its headers alone (no CRC), for start-up stats."""
    size = path.stat().st_size
    n = 0
    with path.open("rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            return 0, size
        pos = len(MAGIC)
        while True:
            header = f.read(_HEADER.size)
            if len(header) < _HEADER.size:
                break
            length, _ = _HEADER.unpack(header)
            if pos + _HEADER.size + length > size:
                break
            f.seek(length, os.SEEK_CUR)
            pos += _HEADER.size + length
            n += 1
    return n, size


class Spool:
    """Append-only segment files with a size bound; thread-safe."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        segment_bytes: int | None = None,
        fsync_interval_s: float = DEFAULT_FSYNC_INTERVAL_S,
        on_spooled: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
    ) -> None:
        if max_bytes < 64 * 1024:
            raise ValueError(f"spool max_bytes must be at least 65536, got {max_bytes}")
        if fsync_interval_s < 0:
            raise ValueError("spool fsync_interval_s must be >= 0")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or min(DEFAULT_SEGMENT_BYTES, max_bytes // 8)
        if not 4096 <= self.segment_bytes <= max_bytes // 2:
            raise ValueError("spool segment_bytes must lie between 4096 and max_bytes / 2")
        self.fsync_interval_s = fsync_interval_s
        self._on_spooled = on_spooled or (lambda n: None)
        self._on_dropped = on_dropped or (lambda n: None)
        self._lock = threading.Lock()
        self._segments: list[Segment] = []  # sealed, oldest first
        self._active: Segment | None = None
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._next_seq = 1
        self._dirty_since: float | None = None
        self._bytes = 0
        self._records = 0
        self.dropped = 0
        self.torn_bytes = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def is_open(self) -> bool:
        return self._lock_fd is not None

    def open(self) -> None:
        """Lock the directory and index the segments left by earlier runs."""
        if self.is_open:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(self.directory / "spool.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SpoolUnavailable(f"spool directory {self.directory}: {exc}") from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise SpoolInUse(
                f"spool directory {self.directory} is in use by another process "
                "(one emitter per spool directory)"
            ) from None
        self._lock_fd = lock_fd
        segments = []
        for path in sorted(self.directory.glob("*.seg")):
            try:
                seq = int(path.stem)
            except ValueError:
                continue
            records, size = _count_records(path)
            if records == 0:
                path.unlink(missing_ok=True)
                continue
            segments.append(Segment(seq, path, size, records))
        self._segments = segments
        self._next_seq = (segments[-1].seq + 1) if segments else 1
        self._bytes = sum(s.size for s in segments)
        self._records = sum(s.records for s in segments)
        if segments:
            log.info(
                "spool %s: %d records in %d segments from an earlier run will be replayed",
                self.directory,
                self._records,
                len(segments),
            )

    def close(self) -> None:
        with self._lock:
            self._seal_locked()
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    # ------------------------------------------------------------------ writing

    def append(self, records: Sequence[Record], *, sync: bool = False) -> int:
        """Append records in one write; returns how many were stored (dropped ones are counted)."""
        if not records:
            return 0
        blob = b"".join(_pack(r) for r in records)
        if len(blob) + len(MAGIC) > self.segment_bytes and len(records) > 1:
            # Larger than a segment: split so that the bound works on whole segments.
            half = len(records) // 2
            return self.append(records[:half], sync=sync) + self.append(records[half:], sync=sync)
        with self._lock:
            if self._lock_fd is None:
                raise SpoolUnavailable(f"spool {self.directory} is closed")
            if len(blob) + len(MAGIC) > self.max_bytes // 2:
                self._drop_new_locked(1, len(blob))
                return 0
            self._make_room_locked(len(blob) + len(MAGIC))
            seg = self._active_locked()
            fd = self._fd
            if fd is None:  # pragma: no cover - _active_locked opened it
                raise SpoolUnavailable("spool segment not open")
            try:
                view = memoryview(blob)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            except OSError as exc:
                raise SpoolUnavailable(f"spool write failed: {exc}") from exc
            seg.size += len(blob)
            seg.records += len(records)
            self._bytes += len(blob)
            self._records += len(records)
            if sync or self.fsync_interval_s == 0:
                os.fsync(fd)
                self._dirty_since = None
            elif self._dirty_since is None:
                self._dirty_since = time.monotonic()
            if seg.size >= self.segment_bytes:
                self._seal_locked()
        self._on_spooled(len(records))
        return len(records)

    def sync_if_due(self) -> None:
        with self._lock:
            since = self._dirty_since
            if since is not None and time.monotonic() - since >= self.fsync_interval_s:
                self._sync_locked()

    def sync(self) -> None:
        with self._lock:
            self._sync_locked()

    def _sync_locked(self) -> None:
        if self._fd is not None and self._dirty_since is not None:
            os.fsync(self._fd)
        self._dirty_since = None

    def _active_locked(self) -> Segment:
        if self._active is None:
            seq = self._next_seq
            self._next_seq += 1
            path = self.directory / f"{seq:016d}.seg"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
                os.write(fd, MAGIC)
                dfd = os.open(self.directory, os.O_RDONLY)
                try:
                    os.fsync(dfd)  # the new name survives a power loss
                finally:
                    os.close(dfd)
            except OSError as exc:
                raise SpoolUnavailable(f"cannot create spool segment {path}: {exc}") from exc
            self._fd = fd
            self._active = Segment(seq, path, len(MAGIC), 0)
            self._bytes += len(MAGIC)
        return self._active

    def _seal_locked(self) -> None:
        if self._active is None or self._fd is None:
            return
        self._sync_locked()
        os.close(self._fd)
        self._fd = None
        if self._active.records:
            self._segments.append(self._active)
        else:
            self._active.path.unlink(missing_ok=True)
            self._bytes -= self._active.size
        self._active = None

    def _make_room_locked(self, need: int) -> None:
        while self._bytes + need > self.max_bytes:
            victim = next((s for s in self._segments if not s.claimed), None)
            if victim is None:
                if self._active is not None and self._active.records:
                    self._seal_locked()
                    continue
                return  # only claimed segments left: the bound is exceeded briefly
            self._segments.remove(victim)
            victim.path.unlink(missing_ok=True)
            self._bytes -= victim.size
            self._records -= victim.records
            self.dropped += victim.records
            log.error(
                "spool %s past its bound of %d bytes: dropped %d oldest events (segment %s); "
                "%d dropped in total",
                self.directory,
                self.max_bytes,
                victim.records,
                victim.path.name,
                self.dropped,
            )
            self._on_dropped(victim.records)

    def _drop_new_locked(self, n: int, size: int) -> None:
        self.dropped += n
        log.error("spool: a record of %d bytes exceeds the spool bound; dropped", size)
        self._on_dropped(n)

    # ------------------------------------------------------------------ replay

    def claim(self) -> Segment | None:
        """The oldest unclaimed segment, sealing the active one if it is all there is."""
        with self._lock:
            idle = not any(not s.claimed for s in self._segments)
            if idle and self._active is not None and self._active.records:
                self._seal_locked()
            for seg in self._segments:
                if not seg.claimed:
                    seg.claimed = True
                    return seg
        return None

    def read(self, seg: Segment) -> list[Record]:
        records, torn = read_segment(seg.path)
        if torn:
            self.torn_bytes += torn
            log.warning(
                "spool segment %s: %d unreadable trailing bytes skipped "
                "(a write cut short by a crash, or corruption); %d records read",
                seg.path.name,
                torn,
                len(records),
            )
        return records

    def release(self, seg: Segment, *, done: bool) -> None:
        """Delete a claimed segment once every record of it is handled, or give it back."""
        with self._lock:
            seg.claimed = False
            if not done:
                return
            if seg in self._segments:
                self._segments.remove(seg)
                self._bytes -= seg.size
                self._records -= seg.records
            seg.path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ stats

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    @property
    def pending_records(self) -> int:
        return self._records

    def segments(self) -> Iterable[Segment]:
        with self._lock:
            return list(self._segments) + ([self._active] if self._active else [])
