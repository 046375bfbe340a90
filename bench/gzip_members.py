"""Decoding a gzip body of many members: ours against the per-member loop it replaced.

A hostile body of N empty gzip members (``gzip.compress(b"") * N``) once took
time quadratic in N on the event loop: the loop handed zlib ``unused_data``,
a copy of everything after each member (issue 11, point 3: 8.4 MB took over
120 s). This times ``collector.http.body.decompress`` and that loop, kept here
as the baseline, on the same bodies in the same run.

usage: python bench/gzip_members.py [--members 25000,50000,100000]
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.http.body import decompress

LIMIT = 64 << 20


def per_member_copy(body: bytes, limit: int) -> bytes:
    """The replaced loop: each member decoded from a fresh copy of the rest of the body."""
    out, size, data = [], 0, body
    while data:
        d = zlib.decompressobj(wbits=31)
        chunk = d.decompress(data, limit - size + 1)
        size += len(chunk)
        out.append(chunk)
        data = d.unused_data
    return b"".join(out)


def timed(fn: Callable[[bytes], bytes], body: bytes) -> float:
    started = time.perf_counter()
    fn(body)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", default="25000,50000,100000")
    args = ap.parse_args()
    for n in (int(x) for x in args.members.split(",")):
        body = gzip.compress(b"") * n
        ours = timed(lambda b: decompress(b, "gzip", LIMIT), body)
        base = timed(lambda b: per_member_copy(b, LIMIT), body)
        print(
            f"{n:>8,} empty members ({len(body) / 1e6:4.1f} MB): per-member copy {base:6.2f} s, "
            f"ours {ours:6.3f} s, {base / ours:5.1f}x"
        )


if __name__ == "__main__":
    main()
