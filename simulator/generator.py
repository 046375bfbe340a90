"""Synthetic gateway traffic: request events as a real router would emit them.

The generator is trusted and built for speed (well over 100,000 events/s on
one core): it builds the contract's dicts directly, formats ids and
timestamps by hand, and never runs the validator. A unit test checks that a
large sample validates and has the statistical shape documented here:

* popularity: Zipf over the catalog's models, fixed provider shares per model;
* TTFT: lognormal per (model, provider) (p95 = 4-5 x p50), plus prefill time
  proportional to input tokens, gateway overhead and the region's round trip;
  big models and slow providers are slower;
* output speed: lognormal around the provider's tokens/s for the model;
* non-streaming requests: some gateway builds report ``ttft_ms == latency_ms``,
  the others no TTFT at all;
* errors of every type at base rates, spiking for one provider during an
  incident (``traffic.incidents_between``);
* a daily cycle per region (local afternoon peak, quieter weekends);
* gateway retries: a small share of events is sent again, byte for byte
  (same ``event_id``), a little later in the stream.

Everything is drawn from one ``random.Random(seed)``: same seed, same window,
same events.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from statistics import NormalDist
from typing import Any

from simulator.catalog import (
    BASE_ERROR_RATES,
    MODELS,
    PROVIDERS,
    REGIONS,
    ModelSpec,
    Region,
)
from simulator.traffic import (
    HOUR_MS,
    Incident,
    incidents_between,
    load,
    model_weights,
    region_weights,
)

__all__ = [
    "DEFAULT_DUPLICATE_SHARE",
    "Simulator",
    "epoch_ms",
]

Event = dict[str, Any]

#: Share of events a gateway sends twice (a retry after a lost acknowledgement).
DEFAULT_DUPLICATE_SHARE = 0.005
#: A resent copy follows its original within this many events.
_RESEND_WITHIN = 400
_SLOT_MS = 10 * 60_000
_MAX_SLOT_EVENTS = 5_000
_ROUTE_TABLE = 10_000
_GATEWAY_TABLE = 1_000
_ERROR_ORDER = (
    "provider_error",
    "timeout",
    "rate_limited",
    "client_error",
    "gateway_error",
    "cancelled",
)
_PROVIDER_STATUS = (500, 502, 502, 503, 503)
_CLIENT_STATUS = (400, 400, 400, 401, 402, 404, 413, 422)
_GATEWAY_STATUS = (500, 500, 502, 503)
_TIMEOUTS_MS = (60_000.0, 60_000.0, 120_000.0, 300_000.0)
#: "SS.mmmZ" for every millisecond of a minute: a lookup instead of formatting.
_SECONDS: tuple[str, ...] = ()
#: Standard normal deviates at 2^16 evenly spaced quantiles: ``_NORMAL[getrandbits(16)]``
#: is a normal draw five times cheaper than ``random.gauss`` (tails reach 4.3 sigma).
_NORMAL_BITS = 16
_NORMAL: tuple[float, ...] = ()


def _seconds_table() -> tuple[str, ...]:
    global _SECONDS
    if not _SECONDS:
        _SECONDS = tuple(f"{ms // 1000:02d}.{ms % 1000:03d}Z" for ms in range(60_000))
    return _SECONDS


def _normal_table() -> tuple[float, ...]:
    global _NORMAL
    if not _NORMAL:
        inv = NormalDist().inv_cdf
        size = 1 << _NORMAL_BITS
        _NORMAL = tuple(inv((i + 0.5) / size) for i in range(size))
    return _NORMAL


def epoch_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        raise ValueError("datetime must be timezone-aware")
    return int(dt.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class _Route:
    """One (model, provider) with its parameters pre-computed for the hot loop."""

    index: int
    model: str
    provider: str
    ttft_mu: float
    sigma: float
    prefill_ms_per_token: float
    tps_mu: float
    in_mu: float
    out_mu: float
    context: int
    stream_share: float
    cache: bool
    rates: tuple[float, ...]  # per error type, in _ERROR_ORDER

    def thresholds(self, incident: Incident | None = None) -> tuple[float, ...]:
        rates = list(self.rates)
        if incident is not None:
            sev = incident.severity
            rates[0] = min(0.45, max(rates[0] * 20 * sev, 0.18 * sev))
            rates[1] = min(0.20, max(rates[1] * 25 * sev, 0.06 * sev))
            rates[2] = min(0.10, rates[2] * 2)
        out, acc = [], 0.0
        for r in rates:
            acc += r
            out.append(acc)
        return tuple(out)


def _routes(models: tuple[ModelSpec, ...]) -> list[_Route]:
    routes: list[_Route] = []
    for model in models:
        for provider_name, _share in model.providers:
            p = PROVIDERS[provider_name]
            rates = (
                BASE_ERROR_RATES["provider_error"] * p.error_factor,
                BASE_ERROR_RATES["timeout"] * p.error_factor,
                BASE_ERROR_RATES["rate_limited"] * p.rate_limit_factor,
                BASE_ERROR_RATES["client_error"],
                BASE_ERROR_RATES["gateway_error"],
                BASE_ERROR_RATES["cancelled"],
            )
            routes.append(
                _Route(
                    index=len(routes),
                    model=model.slug,
                    provider=provider_name,
                    ttft_mu=math.log(model.ttft_ms * p.ttft_factor),
                    sigma=model.sigma,
                    # prefill: bigger models read the prompt slower
                    prefill_ms_per_token=model.params_b**0.5 * 0.004 * p.ttft_factor,
                    tps_mu=math.log(model.tps * p.tps_factor),
                    in_mu=math.log(model.input_median),
                    out_mu=math.log(model.output_median),
                    context=model.context,
                    stream_share=model.stream_share,
                    cache=p.prompt_cache,
                    rates=rates,
                )
            )
    return routes


def _table(items: list[Any], weights: list[float], size: int) -> list[Any]:
    """A lookup table where each item fills a share of slots equal to its weight."""
    total = sum(weights)
    exact = [w / total * size for w in weights]
    counts = [int(x) for x in exact]
    by_rest = sorted(range(len(items)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_rest[: size - sum(counts)]:
        counts[i] += 1
    out: list[Any] = []
    for item, n in zip(items, counts, strict=True):
        out.extend([item] * n)
    return out


def _allocate(total: int, weights: list[float]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` (largest remainder): sums exactly."""
    s = sum(weights)
    if total <= 0 or s <= 0:
        return [0] * len(weights)
    exact = [w / s * total for w in weights]
    counts = [int(x) for x in exact]
    by_rest = sorted(range(len(weights)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_rest[: total - sum(counts)]:
        counts[i] += 1
    return counts


class Simulator:
    """Deterministic synthetic traffic. Not thread-safe: one stream per instance."""

    def __init__(
        self,
        *,
        seed: int = 0,
        duplicate_share: float = DEFAULT_DUPLICATE_SHARE,
        models: tuple[ModelSpec, ...] = MODELS,
        regions: tuple[Region, ...] = REGIONS,
    ) -> None:
        if not 0 <= duplicate_share < 0.5:
            raise ValueError("duplicate_share must be in [0, 0.5)")
        self.seed = seed
        self.models = models
        self.regions = regions
        self.duplicate_share = duplicate_share
        self._rng = random.Random(seed)
        self._routes = _routes(models)
        route_weights: list[float] = []
        for model, mw in zip(models, model_weights(models), strict=True):
            route_weights.extend(mw * share for _, share in model.providers)
        hot = [
            (
                r.index,
                r.model,
                r.provider,
                r.ttft_mu,
                r.sigma,
                r.prefill_ms_per_token,
                r.tps_mu,
                r.in_mu,
                r.out_mu,
                r.context,
                r.stream_share,
                r.cache,
            )
            for r in self._routes
        ]
        self._route_table = _table(hot, route_weights, _ROUTE_TABLE)
        self._thresholds = [r.thresholds() for r in self._routes]
        self._normal = _normal_table()
        self._seconds = _seconds_table()
        self._gateway_tables: dict[int, list[tuple[str | None, float, str, float, bool]]] = {}
        self._resend: list[tuple[int, int, Event]] = []
        self._emitted = 0
        #: resent copies handed out so far (same event_id as an earlier event)
        self.resent = 0
        self._seq = 0

    # -- public API -------------------------------------------------------------------

    @property
    def emitted(self) -> int:
        """Events handed out so far, resent copies included."""
        return self._emitted

    def incidents(self, start: datetime, end: datetime) -> list[Incident]:
        """The provider incidents this simulator plays between ``start`` and ``end``."""
        return incidents_between(self.seed, epoch_ms(start), epoch_ms(end), self.models)

    def backfill(
        self,
        *,
        days: float,
        events: int,
        end: datetime | None = None,
        batch_size: int = 10_000,
    ) -> Iterator[list[Event]]:
        """Exactly ``events`` events (resent copies included) over the ``days`` before ``end``.

        Timestamps follow the daily cycle and come in order (a resent copy
        lags its original by a few events). Yields lists of up to about
        ``batch_size`` events.
        """
        if days <= 0:
            raise ValueError("days must be positive")
        end_ms = epoch_ms(end or datetime.now(UTC))
        start_ms = end_ms - int(days * 86_400_000)
        unique = round(events / (1 + self.duplicate_share))
        edges = [*range(start_ms, end_ms, _SLOT_MS), end_ms]
        spans = list(itertools.pairwise(edges))
        rng = self._rng
        weights = [
            load((a + b) // 2, self.regions) * (b - a) * math.exp(rng.gauss(0, 0.08))
            for a, b in spans
        ]
        incidents = incidents_between(self.seed, start_ms, end_ms, self.models)
        limit = self._emitted + events
        out: list[Event] = []
        for (a, b), n in zip(spans, _allocate(unique, weights), strict=True):
            if not n:
                continue
            pieces = -(-n // _MAX_SLOT_EVENTS)
            step = (b - a) / pieces
            for k in range(pieces):
                lo = a + int(k * step)
                hi = a + int((k + 1) * step)
                count = n // pieces + (k < n % pieces)
                active = [i for i in incidents if i.start_ms < hi and i.end_ms > lo]
                self._slot(out, lo, hi, count, active, limit)
                if len(out) >= batch_size:
                    yield out
                    out = []
        self._drain(out, limit)
        short = limit - self._emitted
        if short > 0:  # fewer resends than expected: top up the last slot
            lo, hi = spans[-1]
            active = [i for i in incidents if i.start_ms < hi and i.end_ms > lo]
            self._slot(out, lo, hi, short, active, limit)
            self._drain(out, limit)
        if out:
            yield out

    def between(self, start: datetime, end: datetime, n: int) -> list[Event]:
        """``n`` new events stamped in [start, end) (live mode), plus resent copies now due."""
        a, b = epoch_ms(start), epoch_ms(end)
        b = max(b, a + 1)
        out: list[Event] = []
        active = incidents_between(self.seed, a, b, self.models)
        self._slot(out, a, b, n, active, None)
        return out

    def live(self, *, rate: float, start: datetime | None = None) -> Iterator[list[Event]]:
        """Endless live traffic at ``rate`` events/s: each ``next()`` returns what is due now.

        Never sleeps; the caller paces the calls. Timestamps are the wall clock.
        """
        t0 = time.monotonic()
        last = start or datetime.now(UTC)
        due = 0.0
        while True:
            now = datetime.now(UTC)
            target = rate * (time.monotonic() - t0)
            n = int(target - due)
            due += n
            yield self.between(last, now, n) if n > 0 else []
            last = now

    # -- the hot loop ---------------------------------------------------------------

    def _gateway_table(self, t_ms: int) -> list[tuple[str | None, float, str, float, bool]]:
        """Gateways weighted by their region's load in that hour (the daily cycle)."""
        hour = t_ms // HOUR_MS
        cached = self._gateway_tables.get(hour)
        if cached is not None:
            return cached
        items, weights = [], []
        mid = hour * HOUR_MS + HOUR_MS // 2
        for region, w in zip(self.regions, region_weights(mid, self.regions), strict=True):
            for gw in region.gateways:
                items.append(
                    (
                        region.name,
                        region.rtt_ms,
                        gw.gateway_id,
                        gw.overhead_ms,
                        gw.nonstream_ttft_is_latency,
                    )
                )
                weights.append(w / len(region.gateways))
        if len(self._gateway_tables) > 256:
            self._gateway_tables.clear()
        table = self._gateway_tables[hour] = _table(items, weights, _GATEWAY_TABLE)
        return table

    def _drain(self, out: list[Event], limit: int | None) -> None:
        while self._resend and (limit is None or self._emitted < limit):
            out.append(heapq.heappop(self._resend)[2])
            self._emitted += 1
            self.resent += 1
        self._resend.clear()

    def _slot(
        self,
        out: list[Event],
        start_ms: int,
        end_ms: int,
        n: int,
        incidents: list[Incident],
        limit: int | None,
    ) -> None:
        """Append ``n`` events stamped in [start_ms, end_ms), plus resent copies that fall due.

        The hot loop: locals only, routes and gateways as tuples, one random
        call per decision. Stops early once ``limit`` events were handed out.
        """
        rng = self._rng
        rnd = rng.random
        bits = rng.getrandbits
        normal = self._normal
        exp = math.exp
        routes = self._route_table
        n_routes = len(routes)
        gateways = self._gateway_table((start_ms + end_ms) // 2)
        n_gateways = len(gateways)
        thresholds = self._thresholds
        dup_share = self.duplicate_share
        resend = self._resend
        push, pop = heapq.heappush, heapq.heappop
        append = out.append
        failure = self._failure
        seconds = self._seconds
        span = end_ms - start_ms
        offsets = sorted([int(rnd() * span) for _ in range(n)])
        incident_thresholds: dict[tuple[int, Incident], tuple[float, ...]] = {}
        by_provider = {inc.provider: inc for inc in incidents}
        ids = rng.randbytes(16 * n).hex()
        emitted = self._emitted
        stop = limit if limit is not None else emitted + n + len(resend) + 1
        next_minute = -1
        prefix = ""
        i = -32
        try:
            for off in offsets:
                if emitted >= stop:
                    return
                ms = start_ms + off
                if ms >= next_minute:
                    minute = ms // 60_000
                    next_minute = (minute + 1) * 60_000
                    prefix = time.strftime("%Y-%m-%dT%H:%M:", time.gmtime(minute * 60))
                (
                    index,
                    model,
                    provider,
                    ttft_mu,
                    sigma,
                    prefill,
                    tps_mu,
                    in_mu,
                    out_mu,
                    context,
                    stream_share,
                    cache,
                ) = routes[int(rnd() * n_routes)]
                region, rtt, gateway_id, gw_overhead, nonstream_ttft = gateways[
                    int(rnd() * n_gateways)
                ]
                thr = thresholds[index]
                slow = 1.0
                if by_provider:
                    incident = by_provider.get(provider)
                    if incident is not None and incident.start_ms <= ms < incident.end_ms:
                        key = (index, incident)
                        thr = incident_thresholds.get(key) or incident_thresholds.setdefault(
                            key, self._routes[index].thresholds(incident)
                        )
                        slow = 1.0 + 1.5 * incident.severity
                stream = rnd() < stream_share
                z = bits(64)
                in_tok = int(exp(in_mu + 1.1 * normal[z & 0xFFFF]))
                if in_tok > context:
                    in_tok = context
                out_tok = int(exp(out_mu + 0.9 * normal[(z >> 16) & 0xFFFF])) + 1
                overhead = gw_overhead * (0.5 + rnd()) + rtt
                ttft = (
                    exp(ttft_mu + sigma * normal[(z >> 32) & 0xFFFF]) * slow
                    + in_tok * prefill
                    + overhead
                )
                gen_ms = out_tok * 1000.0 / exp(tps_mu + 0.25 * normal[z >> 48])
                u = rnd()
                if u >= thr[5]:
                    # int(x * 10 + 0.5) / 10 rounds to 0.1 ms: monotonic, cheaper than round()
                    latency = int((ttft + gen_ms + rnd() * 3.0) * 10 + 0.5) / 10
                    if stream:
                        ttft_out: float | None = int(ttft * 10 + 0.5) / 10
                    elif nonstream_ttft:
                        ttft_out = latency
                    else:
                        ttft_out = None
                    cached = 0
                    if cache and in_tok >= 1024 and rnd() < 0.4:
                        cached = int(in_tok * (0.5 + 0.45 * rnd()))
                    status, error_type, http_status = "ok", None, 200
                else:
                    kind = 0
                    while u >= thr[kind]:
                        kind += 1
                    error_type = _ERROR_ORDER[kind]
                    status = "error"
                    http_status, ttft_out, latency, in_tok, out_tok = failure(
                        kind, stream, ttft, gen_ms, overhead, in_tok, out_tok
                    )
                    cached = 0
                i += 32
                event = {
                    # a version 4 UUID with variant nibble "a": 120 random bits
                    "event_id": f"{ids[i : i + 8]}-{ids[i + 8 : i + 12]}-4{ids[i + 13 : i + 16]}"
                    f"-a{ids[i + 17 : i + 20]}-{ids[i + 20 : i + 32]}",
                    "schema_version": 1,
                    "ts": prefix + seconds[ms % 60_000],
                    "gateway_id": gateway_id,
                    "region": region,
                    "model": model,
                    "provider": provider,
                    "stream": stream,
                    "status": status,
                    "error_type": error_type,
                    "http_status": http_status,
                    "ttft_ms": ttft_out,
                    "latency_ms": latency,
                    "input_tokens": in_tok,
                    "output_tokens": out_tok,
                    "cached_input_tokens": cached,
                }
                append(event)
                emitted += 1
                if rnd() < dup_share:
                    self._seq += 1
                    push(resend, (emitted + 1 + int(rnd() * _RESEND_WITHIN), self._seq, event))
                while resend and resend[0][0] <= emitted:
                    if emitted >= stop:
                        return
                    append(pop(resend)[2])
                    emitted += 1
                    self.resent += 1
        finally:
            self._emitted = emitted

    def _failure(
        self,
        kind: int,
        stream: bool,
        ttft: float,
        gen_ms: float,
        overhead: float,
        in_tok: int,
        out_tok: int,
    ) -> tuple[int, float | None, float, int, int]:
        """(http_status, ttft_ms, latency_ms, input_tokens, output_tokens) of a failed request."""
        rnd = self._rng.random
        if kind == 0:  # provider_error: before the first token, or mid-stream
            status = _PROVIDER_STATUS[int(rnd() * len(_PROVIDER_STATUS))]
            if stream and rnd() < 0.3:
                part = rnd()
                return (
                    status,
                    round(ttft, 1),
                    round(ttft + gen_ms * part, 1),
                    in_tok,
                    int(out_tok * part),
                )
            return status, None, round(ttft * (0.3 + 0.7 * rnd()), 1), 0, 0
        if kind == 1:  # timeout: the gateway's budget ran out
            budget = _TIMEOUTS_MS[int(rnd() * len(_TIMEOUTS_MS))] + rnd() * 250
            if stream and rnd() < 0.2 and ttft < budget:
                return 504, round(ttft, 1), round(budget, 1), in_tok, int(out_tok * rnd() * 0.5)
            return 504, None, round(budget, 1), 0, 0
        if kind == 2:  # rate_limited: refused upstream, fast
            return 429, None, round(overhead + 20 + rnd() * 300, 1), 0, 0
        if kind == 3:  # client_error: refused before routing
            status = _CLIENT_STATUS[int(rnd() * len(_CLIENT_STATUS))]
            return status, None, round(overhead * 0.5 + 2 + rnd() * 60, 1), 0, 0
        if kind == 4:  # gateway_error: our own fault
            status = _GATEWAY_STATUS[int(rnd() * len(_GATEWAY_STATUS))]
            return status, None, round(overhead + rnd() * 1500, 1), 0, 0
        # cancelled: the client went away, often mid-stream
        if stream and rnd() < 0.7:
            part = rnd()
            return 499, round(ttft, 1), round(ttft + gen_ms * part, 1), in_tok, int(out_tok * part)
        return 499, None, round(ttft * rnd(), 1), 0, 0
