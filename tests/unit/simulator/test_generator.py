"""The simulator: valid events with the statistical shape a real router's traffic has."""

from __future__ import annotations

import itertools
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from schemas.codec import validate_event
from schemas.event import ERROR_TYPES, EXCLUDED_FROM_ERROR_RATE
from simulator import Simulator
from simulator.catalog import MODELS
from simulator.generator import epoch_ms
from simulator.targets import encode_lines

END = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def sample() -> list[dict[str, Any]]:
    sim = Simulator(seed=7)
    return [e for batch in sim.backfill(days=1, events=20_000, end=END) for e in batch]


def test_every_event_validates(sample: list[dict[str, Any]]) -> None:
    assert len(sample) == 20_000
    for event in sample:
        validate_event(event, now=END)


def test_same_seed_same_events_other_seed_other_events() -> None:
    def run(seed: int) -> list[dict[str, Any]]:
        sim = Simulator(seed=seed)
        return [e for b in sim.backfill(days=0.5, events=3_000, end=END) for e in b]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_catalog_is_a_router_catalog() -> None:
    assert len(MODELS) == 12
    assert len({m.slug for m in MODELS}) == 12
    for model in MODELS:
        assert "/" in model.slug
        assert 1 <= len(model.providers) <= 4
        assert sum(share for _, share in model.providers) == pytest.approx(1.0)


def test_popularity_is_zipf_like(sample: list[dict[str, Any]]) -> None:
    counts = Counter(e["model"] for e in sample)
    assert set(counts) == {m.slug for m in MODELS}
    first, last = counts[MODELS[0].slug], counts[MODELS[-1].slug]
    assert first > 8 * last


def _ttfts(sample: list[dict[str, Any]]) -> dict[str, list[float]]:
    by_model: dict[str, list[float]] = defaultdict(list)
    for e in sample:
        if e["status"] == "ok" and e["ttft_ms"] is not None:
            by_model[e["model"]].append(e["ttft_ms"])
    return by_model


def _quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def test_ttft_is_heavy_tailed_for_every_big_model(sample: list[dict[str, Any]]) -> None:
    by_model = _ttfts(sample)
    big = [m.slug for m in MODELS if m.big]
    assert len(big) >= 5
    for slug in big:
        values = by_model[slug]
        assert len(values) >= 200, slug
        ratio = _quantile(values, 0.95) / _quantile(values, 0.50)
        assert ratio >= 3, f"{slug}: p95/p50 = {ratio:.2f}"


def test_big_models_are_slower_and_providers_differ(sample: list[dict[str, Any]]) -> None:
    by_model = _ttfts(sample)
    small = statistics.median(by_model["meta-llama/llama-3.1-8b-instruct"])
    big = statistics.median(by_model["anthropic/claude-sonnet-4"])
    assert big > 3 * small
    speeds: dict[str, list[float]] = defaultdict(list)
    for e in sample:
        if (
            e["model"] == "meta-llama/llama-3.3-70b-instruct"
            and e["status"] == "ok"
            and e["stream"]
            and e["output_tokens"] >= 2
        ):
            speeds[e["provider"]].append(
                e["output_tokens"] / ((e["latency_ms"] - e["ttft_ms"]) / 1000)
            )
    assert statistics.median(speeds["groq"]) > 2.5 * statistics.median(speeds["deepinfra"])


def test_non_streaming_ttft_is_latency_or_null(sample: list[dict[str, Any]]) -> None:
    ok = [e for e in sample if e["status"] == "ok" and not e["stream"]]
    same = sum(e["ttft_ms"] == e["latency_ms"] for e in ok)
    null = sum(e["ttft_ms"] is None for e in ok)
    assert same + null == len(ok)
    assert same > 0 and null > 0


def test_resent_events_are_identical_copies(sample: list[dict[str, Any]]) -> None:
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in sample:
        by_id[e["event_id"]].append(e)
    copies = [v for v in by_id.values() if len(v) > 1]
    assert 30 <= len(copies) <= 200  # 0.5% of 20k
    for group in copies:
        assert all(c == group[0] for c in group)


def test_every_error_type_and_plausible_error_rate(sample: list[dict[str, Any]]) -> None:
    types = Counter(e["error_type"] for e in sample if e["status"] == "error")
    assert set(types) == set(ERROR_TYPES)
    denominator = sum(e["error_type"] not in EXCLUDED_FROM_ERROR_RATE for e in sample)
    errors = sum(
        e["status"] == "error" and e["error_type"] not in EXCLUDED_FROM_ERROR_RATE for e in sample
    )
    assert 0.01 < errors / denominator < 0.08
    statuses = Counter(e["http_status"] for e in sample if e["error_type"] == "rate_limited")
    assert set(statuses) == {429}


def test_an_incident_shows_as_one_provider_hour_spike(sample: list[dict[str, Any]]) -> None:
    sim = Simulator(seed=7)
    incidents = sim.incidents(END - timedelta(days=1), END)
    assert incidents
    served: Counter[tuple[str, int]] = Counter()
    failed: Counter[tuple[str, int]] = Counter()
    for e in sample:
        if e["error_type"] in EXCLUDED_FROM_ERROR_RATE:
            continue
        key = (e["provider"], epoch_ms(datetime.fromisoformat(e["ts"])) // HOUR_MS)
        served[key] += 1
        failed[key] += e["status"] == "error"
    spikes = []
    for inc in incidents:
        hour = (inc.start_ms + inc.end_ms) // 2 // HOUR_MS
        key = (inc.provider, hour)
        others = [failed[k] / served[k] for k in served if k[0] == inc.provider and k[1] != hour]
        if served[key] >= 20 and others:
            spikes.append((failed[key] / served[key], statistics.median(others)))
    assert spikes, "no incident hour with enough traffic"
    rate, usual = max(spikes)
    assert rate >= 0.15
    assert rate >= 5 * max(usual, 0.01)


def test_daily_cycle(sample: list[dict[str, Any]]) -> None:
    per_hour = Counter(datetime.fromisoformat(e["ts"]).hour for e in sample)
    assert max(per_hour.values()) > 1.5 * min(per_hour.values())


def test_timestamps_in_order_and_in_window(sample: list[dict[str, Any]]) -> None:
    stamps = [e["ts"] for e in sample]
    out_of_order = sum(b < a for a, b in itertools.pairwise(stamps))
    assert out_of_order <= 200  # only resent copies lag
    start = (END - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    end = END.isoformat().replace("+00:00", "Z")
    assert start <= min(stamps) and max(stamps) < end


def test_regions_gateways_and_cache_reads(sample: list[dict[str, Any]]) -> None:
    regions = Counter(e["region"] for e in sample)
    assert None in regions and len(regions) >= 7
    assert len({e["gateway_id"] for e in sample}) >= 12
    cached = [e for e in sample if e["cached_input_tokens"]]
    assert cached and all(e["cached_input_tokens"] <= e["input_tokens"] for e in cached)


def test_live_batches_are_stamped_in_their_window() -> None:
    sim = Simulator(seed=1)
    start = datetime.now(UTC) - timedelta(seconds=2)
    end = start + timedelta(seconds=1)
    batch = sim.between(start, end, 500)
    assert len(batch) >= 500
    for e in batch:
        ts = datetime.fromisoformat(e["ts"])
        assert start - timedelta(milliseconds=1) <= ts < end
        validate_event(e)


def test_events_cap_is_exact() -> None:
    sim = Simulator(seed=2, duplicate_share=0.2)
    got = [e for b in sim.backfill(days=1, events=5_000, end=END) for e in b]
    assert len(got) == 5_000
    assert sim.resent > 500


def test_encode_lines_is_ndjson_even_with_braces_in_strings() -> None:
    sim = Simulator(seed=5)
    batch = sim.between(END - timedelta(minutes=1), END, 300)
    assert encode_lines(batch) == b"".join(orjson.dumps(e) + b"\n" for e in batch)
    odd = [dict(batch[0], gateway_id="gw},{x"), batch[1]]
    assert encode_lines(odd) == b"".join(orjson.dumps(e) + b"\n" for e in odd)
    assert encode_lines([]) == b""
