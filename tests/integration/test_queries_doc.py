"""docs/queries.md never rots: every query runs against simulated traffic and returns rows."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from processors.clickhouse import connect
from processors.embedded import ingest_lines
from simulator import Simulator
from simulator.targets import encode_lines

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "queries.md"
EVENTS = 40_000
#: The doc's check computes the contract's definition (rank floor(q*(n-1))), so
#: every row with samples is held to 1%.
MIN_SAMPLES_FOR_1PCT = 1
_HEADING = re.compile(r"^## (.+)$", re.MULTILINE)
_SQL = re.compile(r"```sql\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class DocQuery:
    title: str
    intro: str
    sql: str


def parse_queries(text: str) -> list[DocQuery]:
    """Each ``## heading``: the prose under it and its one ```sql block."""
    out = []
    heads = list(_HEADING.finditer(text))
    for i, head in enumerate(heads):
        body = text[head.end() : heads[i + 1].start() if i + 1 < len(heads) else len(text)]
        blocks = _SQL.findall(body)
        if not blocks:
            continue
        assert len(blocks) == 1, f"{head.group(1)}: one sql block per heading"
        intro = body[: body.index("```sql")].strip()
        out.append(DocQuery(head.group(1).strip(), intro, blocks[0].strip()))
    return out


def test_the_doc_has_the_queries_people_ask() -> None:
    queries = parse_queries(DOC.read_text())
    assert len(queries) >= 12
    for q in queries:
        assert q.intro.endswith("."), f"{q.title}: say in a sentence what it answers"
    sql = "\n".join(q.sql for q in queries)
    for needle in (
        "quantileExactInclusive",
        "telemetry.model_stats_7d",
        "telemetry.model_stats_hourly",
        "telemetry.rejected",
        "cached_input_tokens",
        "region",
        "gateway_id",
        "stream",
    ):
        assert needle in sql, needle


def _populate(ch: Any) -> int:
    sim = Simulator(seed=11)
    now = datetime.now(UTC)
    data = b"".join(encode_lines(b) for b in sim.backfill(days=7, events=EVENTS, end=now))
    bad = b"".join(
        line + b"\n"
        for line in (
            b"{not json",
            orjson.dumps({"event_id": "nope", "schema_version": 1}),
            orjson.dumps({**orjson.loads(data.split(b"\n", 1)[0]), "latency_ms": -1}),
        )
    )
    report = ingest_lines(ch, [data, bad], source="test:queries-doc")
    assert report.rejected == 3
    assert report.refresh is not None and report.refresh.stats_rows > 0
    return report.stored


def test_every_query_runs_and_returns_rows(clickhouse: Any, subtests: Any) -> None:
    stored = _populate(clickhouse)
    assert stored >= 20_000
    queries = parse_queries(DOC.read_text())
    # As analysts run them: `telemetry sql` is read-only (processors/sql_guard.py).
    reader = connect(clickhouse.dsn, readonly=True)
    for q in queries:
        with subtests.test(msg=q.title):
            names, rows = reader.query_table(q.sql)
            assert rows, f"{q.title}: no rows"
            if q.title.lower().startswith("exact vs published"):
                _check_published_against_exact(names, rows)


def _check_published_against_exact(names: list[str], rows: list[tuple[Any, ...]]) -> None:
    docs = [dict(zip(names, r, strict=True)) for r in rows]
    assert any(d["provider"] == "" for d in docs), "the all-providers rows are compared too"
    judged = 0
    for d in docs:
        where = f"{d['model']} / {d['provider'] or '(all)'}"
        assert d["published_samples"] == d["exact_samples"], f"{where}: counts are exact"
        if d["exact_samples"] < MIN_SAMPLES_FOR_1PCT:
            continue
        judged += 1
        assert abs(d["p50_rel_err"]) <= 0.01, f"{where}: p50 {d}"
        assert abs(d["p95_rel_err"]) <= 0.01, f"{where}: p95 {d}"
    assert judged >= 3
