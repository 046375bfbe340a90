"""A realistic NDJSON file with the faults real traffic brings: for benchmarks and demos.

The simulator's events are trusted and valid; a file a user ingests is not.
``write_faulty_file`` mixes, deterministically from a seed, the simulator's
traffic (with its gateway retries) with what goes wrong on the way: malformed
and truncated lines, wrong types, broken cross-field rules, events older than
the contract allows (stale) or stamped in the future, blank lines, and extra
resent copies. Each kind is counted, so a benchmark can check the outcome.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from simulator.generator import Simulator
from simulator.targets import encode_lines

__all__ = ["FAULT_KINDS", "FaultyFile", "fault_line", "write_faulty_file"]

#: What can be wrong with a line, and whether the line is then rejected.
FAULT_KINDS: dict[str, bool] = {
    "truncated": True,  # a line cut short (a crashed writer)
    "not_an_object": True,
    "wrong_type": True,  # "http_status": "200"
    "ttft_over_latency": True,
    "stale": True,  # older than the 30 days the contract accepts
    "future": True,  # more than 5 minutes ahead
    "missing_field": True,
    "blank": False,  # skipped, but counted in the line numbers
    "resent": False,  # a copy of an earlier event (same event_id): stored once
}


@dataclass(slots=True)
class FaultyFile:
    path: Path
    lines: int = 0
    #: lines that are one event the contract accepts (resent copies included)
    valid: int = 0
    #: injected faults by kind
    faults: Counter[str] = field(default_factory=Counter)

    @property
    def rejected(self) -> int:
        return sum(n for kind, n in self.faults.items() if FAULT_KINDS[kind])


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fault_line(kind: str, event: dict[str, Any], now: datetime) -> bytes:
    """One line of the given fault kind, made from a valid ``event``."""
    if kind == "truncated":
        raw = orjson.dumps(event)
        return raw[: len(raw) // 2]
    if kind == "not_an_object":
        return b"[1, 2, 3]"
    if kind == "wrong_type":
        return orjson.dumps({**event, "http_status": str(event["http_status"])})
    if kind == "ttft_over_latency":
        return orjson.dumps({**event, "ttft_ms": event["latency_ms"] + 10.0})
    if kind == "stale":
        return orjson.dumps({**event, "ts": _iso(now - timedelta(days=31))})
    if kind == "future":
        return orjson.dumps({**event, "ts": _iso(now + timedelta(minutes=10))})
    if kind == "missing_field":
        return orjson.dumps({k: v for k, v in event.items() if k != "latency_ms"})
    if kind == "blank":
        return b""
    if kind == "resent":
        return orjson.dumps(event)
    raise ValueError(f"unknown fault kind {kind!r}")


def write_faulty_file(
    path: Path,
    events: int,
    *,
    seed: int = 0,
    fault_share: float = 0.02,
    days: float = 8.0,
    now: datetime | None = None,
) -> FaultyFile:
    """Write ``events`` lines: simulated traffic over ``days``, ``fault_share`` of them faults.

    Eight days, not seven, so that some valid events fall outside the rolling
    window (stored, not counted), as in a real backfill.
    """
    now = now or datetime.now(UTC)
    rng = random.Random(seed)
    kinds = list(FAULT_KINDS)
    n_faults = int(events * fault_share)
    sim = Simulator(seed=seed, duplicate_share=0.01)
    out = FaultyFile(path)
    recent: list[dict[str, Any]] = []
    # Fault positions, spread uniformly over the file.
    at = set(rng.sample(range(events), n_faults)) if n_faults else set()
    end = now - timedelta(minutes=1)
    with path.open("wb") as f:
        good = sim.backfill(days=days, events=events - n_faults, end=end)
        for batch in good:
            encoded = encode_lines(batch).split(b"\n")[:-1]
            buf: list[bytes] = []
            for event, line in zip(batch, encoded, strict=True):
                while out.lines + len(buf) in at:
                    kind = rng.choice(kinds)
                    source = rng.choice(recent) if recent else event
                    buf.append(fault_line(kind, source, now))
                    out.faults[kind] += 1
                    out.valid += kind == "resent"
                buf.append(line)
                out.valid += 1
            if len(recent) < 1000:
                recent.extend(batch[:50])
            else:
                recent[rng.randrange(len(recent))] = batch[0]
            f.write(b"\n".join(buf) + b"\n")
            out.lines += len(buf)
        while out.lines < events:  # faults due after the last event
            kind = rng.choice(kinds)
            f.write(fault_line(kind, recent[0], now) + b"\n")
            out.faults[kind] += 1
            out.valid += kind == "resent"
            out.lines += 1
    return out
