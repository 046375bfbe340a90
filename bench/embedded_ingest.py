"""`telemetry ingest FILE` + `telemetry stats` against ClickHouse alone on the same file.

Issue 13's goal: the embedded path (validate, keep rejects, dedup, store,
fold into hour buckets, publish) within 2x of what a user could do instead
with ClickHouse alone: load the NDJSON into chDB, validate in SQL, and ask for
exact 7-day stats (exact quantiles at query time). Both run here, in the same
run, on the same file, each as a fresh process on a fresh data directory,
three times each by default (``--repeat``); the ratio of the medians is what
counts, not the seconds.

    python bench/embedded_ingest.py                  # 1,000,000 events
    python bench/embedded_ingest.py --events 100000  # a quick run

The file is ``simulator.faults.write_faulty_file``: a simulated
week and a day of router traffic with gateway retries, and 2% of lines that
are malformed, of the wrong type, stale, in the future, blank or resent.
Peak RSS is each process's own (``os.wait4``), not the benchmark's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from _common import ROOT, footer, scratch

from simulator.faults import write_faulty_file

#: ClickHouse alone: the same contract in SQL, the same window, exact quantiles.
#: A user's version of `telemetry ingest` + `telemetry stats`.
_CLICKHOUSE_ALONE = r"""
import sys, time
import chdb
from chdb import session

path, work = sys.argv[1], sys.argv[2]
s = session.Session(work)
s.query("CREATE DATABASE IF NOT EXISTS t")
s.query('''
CREATE TABLE t.raw (
    event_id String, schema_version Int64, ts String, gateway_id String,
    region Nullable(String), model String, provider String, stream Bool, status String,
    error_type Nullable(String), http_status Int64, ttft_ms Nullable(Float64),
    latency_ms Float64, input_tokens Int64, output_tokens Int64, cached_input_tokens Int64
) ENGINE = MergeTree ORDER BY tuple()''')
s.query('''
CREATE TABLE t.requests (
    event_id UUID, ts DateTime64(3, 'UTC'), gateway_id LowCardinality(String),
    region LowCardinality(Nullable(String)), model LowCardinality(String),
    provider LowCardinality(String), stream Bool, status LowCardinality(String),
    error_type LowCardinality(Nullable(String)), http_status UInt16,
    ttft_ms Nullable(Float64), latency_ms Float64, input_tokens UInt64,
    output_tokens UInt64, cached_input_tokens UInt64
) ENGINE = ReplacingMergeTree ORDER BY (model, provider, event_id)''')
# Load: malformed lines and wrong types are skipped by the format (counted as errors).
s.query(f'''
INSERT INTO t.raw SELECT * FROM file('{path}', 'JSONEachRow')
SETTINGS input_format_allow_errors_ratio = 1, input_format_allow_errors_num = 100000000,
         input_format_skip_unknown_fields = 1, input_format_null_as_default = 0''')
# Validate in SQL (the contract's rules), dedup by event_id.
s.query('''
INSERT INTO t.requests
SELECT toUUID(event_id), parseDateTime64BestEffort(ts, 3, 'UTC') AS t, gateway_id, region,
       model, provider, stream, status, error_type, http_status,
       round(ttft_ms, 3), round(latency_ms, 3), input_tokens, output_tokens, cached_input_tokens
FROM t.raw
WHERE schema_version = 1
  AND match(event_id, '^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$')
  AND isNotNull(parseDateTime64BestEffortOrNull(ts, 3, 'UTC'))
  AND parseDateTime64BestEffort(ts, 3, 'UTC') BETWEEN now64(3) - INTERVAL 30 DAY
                                                   AND now64(3) + INTERVAL 5 MINUTE
  AND lengthUTF8(gateway_id) BETWEEN 1 AND 128 AND lengthUTF8(model) BETWEEN 1 AND 200
  AND lengthUTF8(provider) BETWEEN 1 AND 100
  AND (region IS NULL OR lengthUTF8(region) <= 128)
  AND status IN ('ok', 'error')
  AND (status = 'ok') = (error_type IS NULL)
  AND (error_type IS NULL OR error_type IN ('provider_error', 'timeout', 'rate_limited',
                                            'client_error', 'gateway_error', 'cancelled'))
  AND http_status BETWEEN 100 AND 599
  AND latency_ms BETWEEN 0 AND 86400000
  AND (ttft_ms IS NULL OR (ttft_ms >= 0 AND ttft_ms <= latency_ms))
  AND input_tokens BETWEEN 0 AND 100000000 AND output_tokens BETWEEN 0 AND 100000000
  AND cached_input_tokens BETWEEN 0 AND input_tokens
LIMIT 1 BY event_id''')
# Exact 7-day stats, per (model, provider) and per model; quantiles at rank floor(q(n-1)).
out = s.query('''
WITH toStartOfHour(now64(3)) - INTERVAL 167 HOUR AS start
SELECT model, provider, count() AS requests, sum(input_tokens + output_tokens) AS traffic,
       countIf(status = 'error' AND error_type NOT IN ('client_error', 'cancelled')) AS errors,
       errors / nullIf(requests - countIf(error_type IN ('client_error', 'cancelled')), 0),
       arraySort(groupArrayIf(ttft_ms, status = 'ok' AND ttft_ms IS NOT NULL)) AS tt,
       tt[toUInt64(floor(0.50 * (length(tt) - 1))) + 1] AS p50,
       tt[toUInt64(floor(0.95 * (length(tt) - 1))) + 1] AS p95,
       tt[toUInt64(floor(0.99 * (length(tt) - 1))) + 1] AS p99,
       arraySort(groupArrayIf(output_tokens / ((latency_ms - ttft_ms) / 1000),
           status = 'ok' AND ttft_ms IS NOT NULL AND output_tokens >= 2
           AND latency_ms > ttft_ms)) AS sp,
       sp[toUInt64(floor(0.5 * (length(sp) - 1))) + 1] AS tps
FROM t.requests FINAL WHERE ts >= start
GROUP BY GROUPING SETS ((model, provider), (model))
ORDER BY model, provider
FORMAT TSV''', 'TSV')
rows = [r.split('\t') for r in out.bytes().decode().splitlines()]
stored = s.query("SELECT count() FROM t.requests FINAL", "CSV").bytes().decode().strip()
print(f"{len(rows)} stats rows; {stored} events stored")
"""


@dataclass(frozen=True, slots=True)
class Run:
    seconds: float
    peak_rss_mb: float
    stdout: str


def timed(cmd: list[str], env: dict[str, str]) -> Run:
    """Run ``cmd``: its wall time, output, and its own peak RSS (reaped with ``os.wait4``)."""
    started = time.perf_counter()
    with (
        open(os.devnull, "rb") as stdin,
        _Capture() as out,
        _Capture() as err,
    ):
        proc = subprocess.Popen(cmd, env=env, stdin=stdin, stdout=out.f, stderr=err.f, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        text, errors = out.text(), err.text()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:5])} failed ({proc.returncode}):\n{errors[-3000:]}")
    return Run(seconds, usage.ru_maxrss / 1024, text)  # ru_maxrss is in KiB on Linux


class _Capture:
    """A temporary file for a child's output (no pipe to drain while we wait4)."""

    def __enter__(self) -> _Capture:
        import tempfile

        self.f = tempfile.TemporaryFile()
        return self

    def text(self) -> str:
        self.f.seek(0)
        return self.f.read().decode(errors="replace")

    def __exit__(self, *exc: object) -> None:
        self.f.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=1_000_000, help="lines in the file")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument(
        "--repeat", type=int, default=3, help="runs of each side; their medians are compared"
    )
    args = p.parse_args()

    with scratch("bench-embedded-ingest-", keep=args.keep) as work:
        path = work / "events.ndjson"
        t0 = time.perf_counter()
        made = write_faulty_file(path, args.events, seed=args.seed)
        print(
            f"file: {made.lines:,} lines, {path.stat().st_size / 1e6:.0f} MB, "
            f"{made.rejected:,} invalid, faults {dict(sorted(made.faults.items()))} "
            f"(written in {time.perf_counter() - t0:.1f} s)",
            flush=True,
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
        cli = [sys.executable, "-m", "telemetry.cli"]

        # Both sides run ``--repeat`` times, one after the other, each on a fresh
        # data directory: the same command moves by 30% from run to run on a
        # shared machine, and the medians are compared.
        ours: list[float] = []
        alone: list[float] = []
        peak = 0.0
        for k in range(args.repeat):
            env["TELEMETRY_DATA_DIR"] = str(work / f"data-{k}")
            ingest = timed([*cli, "ingest", "--quiet", str(path)], env)
            stats = timed([*cli, "stats", "--json"], env)
            ch = timed(
                [sys.executable, "-c", _CLICKHOUSE_ALONE, str(path), str(work / f"chdb-{k}")], env
            )
            ours.append(ingest.seconds + stats.seconds)
            alone.append(ch.seconds)
            peak = max(peak, ingest.peak_rss_mb)
            print(
                f"run {k + 1}: telemetry ingest {ingest.seconds:.2f} s (peak RSS "
                f"{ingest.peak_rss_mb:.0f} MB) + stats {stats.seconds:.2f} s = {ours[-1]:.2f} s;"
                f" ClickHouse alone {ch.seconds:.2f} s (peak RSS {ch.peak_rss_mb:.0f} MB)",
                flush=True,
            )
            if k == 0:
                print("  " + "\n  ".join(ingest.stdout.strip().splitlines()))
                print(f"  ClickHouse alone: {ch.stdout.strip()}")

        mine, theirs = statistics.median(ours), statistics.median(alone)
        print()
        print(f"events:                          {args.events:,}")
        print(
            f"telemetry ingest + stats:        {mine:.2f} s median of {args.repeat} "
            f"({args.events / mine:,.0f} events/s)"
        )
        print(f"ClickHouse alone:                {theirs:.2f} s median of {args.repeat}")
        print(f"ratio (ours / ClickHouse alone): {mine / theirs:.2f}x  (goal <= 2.0x)")
        print(f"peak RSS of ingest:              {peak:.0f} MB  (goal <= 800 MB)")
        footer()


if __name__ == "__main__":
    main()
