"""What the simulated router serves: models, upstream providers, regions and gateway nodes.

Plain data, no randomness. The numbers are shaped after public model pages and
what gateway operators report: small models answer in well under a second on
fast providers, big and reasoning models take seconds, specialised inference
providers (groq) stream several times faster than general clouds, and the
first-party API of a cheap model is often the slowest route to it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BASE_ERROR_RATES",
    "MODELS",
    "PROVIDERS",
    "REGIONS",
    "Gateway",
    "ModelSpec",
    "ProviderSpec",
    "Region",
]

#: Per-request base rate of each error type before provider multipliers.
#: Sum ≈ 4.2%, of which client_error and cancelled (1.8%) do not count as
#: serving errors: a quiet week shows error rates of 2-3%, like the seed page.
BASE_ERROR_RATES: dict[str, float] = {
    "provider_error": 0.012,
    "timeout": 0.004,
    "rate_limited": 0.006,
    "client_error": 0.010,
    "gateway_error": 0.0015,
    "cancelled": 0.008,
}


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """An upstream: how fast it answers relative to a model's baseline, how often it fails."""

    name: str
    ttft_factor: float  #: multiplies the model's median TTFT
    tps_factor: float  #: multiplies the model's median output speed
    error_factor: float = 1.0  #: multiplies provider_error and timeout base rates
    rate_limit_factor: float = 1.0  #: multiplies the rate_limited base rate
    prompt_cache: bool = True  #: reports cached input tokens


@dataclass(frozen=True, slots=True)
class ModelSpec:
    slug: str
    params_b: int  #: rough size in billions of parameters (public estimates)
    ttft_ms: float  #: median TTFT on a provider with ttft_factor 1 (before prefill)
    sigma: float  #: lognormal spread of TTFT: p95/p50 = exp(1.645 sigma)
    input_median: int
    output_median: int
    stream_share: float
    context: int
    tps: float  #: median output tokens/s on a provider with tps_factor 1
    providers: tuple[tuple[str, float], ...]  #: (provider, share of this model's traffic)

    @property
    def big(self) -> bool:
        return self.params_b >= 60


PROVIDERS: dict[str, ProviderSpec] = {
    p.name: p
    for p in (
        ProviderSpec("openai", 1.0, 1.0),
        ProviderSpec("azure", 1.15, 0.85, error_factor=0.8),
        ProviderSpec("anthropic", 1.0, 1.0, rate_limit_factor=1.5),
        ProviderSpec("amazon-bedrock", 1.25, 0.9, error_factor=0.9),
        ProviderSpec("google-vertex", 1.1, 0.95, error_factor=0.8),
        ProviderSpec("google-ai-studio", 0.95, 1.05, rate_limit_factor=2.0),
        ProviderSpec("together", 1.0, 1.0),
        ProviderSpec("fireworks", 0.85, 1.2),
        ProviderSpec("groq", 0.35, 3.5, rate_limit_factor=3.0, prompt_cache=False),
        ProviderSpec("deepinfra", 1.3, 0.6, error_factor=1.5, prompt_cache=False),
        ProviderSpec("deepseek", 1.6, 0.7, error_factor=2.0, rate_limit_factor=2.5),
        ProviderSpec("mistral", 1.0, 1.0),
    )
}

#: In order of popularity: traffic share follows a Zipf law over this order.
MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        "openai/gpt-4.1-mini",
        30,
        1500,
        0.95,
        850,
        260,
        0.78,
        1_047_576,
        tps=180,
        providers=(("openai", 0.7), ("azure", 0.3)),
    ),
    ModelSpec(
        "google/gemini-2.5-flash",
        40,
        650,
        0.9,
        1400,
        380,
        0.8,
        1_048_576,
        tps=230,
        providers=(("google-ai-studio", 0.6), ("google-vertex", 0.4)),
    ),
    ModelSpec(
        "anthropic/claude-sonnet-4",
        200,
        2100,
        0.85,
        4200,
        520,
        0.85,
        200_000,
        tps=62,
        providers=(("anthropic", 0.55), ("amazon-bedrock", 0.3), ("google-vertex", 0.15)),
    ),
    ModelSpec(
        "deepseek/deepseek-chat",
        671,
        1600,
        1.0,
        1800,
        420,
        0.75,
        128_000,
        tps=45,
        providers=(("deepseek", 0.5), ("together", 0.3), ("fireworks", 0.2)),
    ),
    ModelSpec(
        "meta-llama/llama-3.3-70b-instruct",
        70,
        650,
        0.95,
        1100,
        300,
        0.7,
        131_072,
        tps=95,
        providers=(("groq", 0.35), ("together", 0.3), ("fireworks", 0.2), ("deepinfra", 0.15)),
    ),
    ModelSpec(
        "openai/gpt-4.1",
        300,
        2400,
        0.9,
        2600,
        480,
        0.8,
        1_047_576,
        tps=85,
        providers=(("openai", 0.75), ("azure", 0.25)),
    ),
    ModelSpec(
        "openai/gpt-4o-mini",
        8,
        800,
        0.9,
        700,
        220,
        0.72,
        128_000,
        tps=95,
        providers=(("openai", 0.8), ("azure", 0.2)),
    ),
    ModelSpec(
        "google/gemini-2.5-pro",
        400,
        5200,
        0.8,
        3500,
        900,
        0.8,
        1_048_576,
        tps=140,
        providers=(("google-vertex", 0.55), ("google-ai-studio", 0.45)),
    ),
    ModelSpec(
        "anthropic/claude-3.5-haiku",
        20,
        1000,
        0.85,
        1500,
        280,
        0.75,
        200_000,
        tps=60,
        providers=(("anthropic", 0.65), ("amazon-bedrock", 0.35)),
    ),
    ModelSpec(
        "meta-llama/llama-3.1-8b-instruct",
        8,
        260,
        0.9,
        600,
        180,
        0.65,
        131_072,
        tps=170,
        providers=(("groq", 0.5), ("deepinfra", 0.25), ("together", 0.25)),
    ),
    ModelSpec(
        "mistralai/mistral-large",
        123,
        1400,
        0.9,
        1500,
        350,
        0.75,
        128_000,
        tps=45,
        providers=(("mistral", 0.7), ("azure", 0.3)),
    ),
    ModelSpec(
        "qwen/qwen-2.5-72b-instruct",
        72,
        900,
        0.95,
        1200,
        320,
        0.7,
        32_768,
        tps=55,
        providers=(("together", 0.45), ("deepinfra", 0.35), ("fireworks", 0.2)),
    ),
)


@dataclass(frozen=True, slots=True)
class Gateway:
    gateway_id: str
    overhead_ms: float  #: added to every request's latency at this node
    #: non-streaming requests: True reports ttft_ms == latency_ms (some gateway
    #: builds do), False reports no TTFT (null)
    nonstream_ttft_is_latency: bool


@dataclass(frozen=True, slots=True)
class Region:
    name: str | None
    share: float  #: share of daily traffic
    utc_offset_h: int  #: local time drives the daily cycle
    rtt_ms: float  #: extra round trip to the upstreams
    gateways: tuple[Gateway, ...]


REGIONS: tuple[Region, ...] = (
    Region(
        "us-east",
        0.30,
        -5,
        0,
        (
            Gateway("gw-use1-a", 6, False),
            Gateway("gw-use1-b", 6, False),
            Gateway("gw-use1-c", 9, False),
        ),
    ),
    Region(
        "us-west",
        0.14,
        -8,
        25,
        (Gateway("gw-usw2-a", 8, True), Gateway("gw-usw2-b", 8, True)),
    ),
    Region(
        "eu-west",
        0.22,
        0,
        45,
        (
            Gateway("gw-euw1-a", 7, False),
            Gateway("gw-euw1-b", 7, False),
            Gateway("gw-euw1-c", 7, False),
        ),
    ),
    Region(
        "eu-central",
        0.10,
        1,
        50,
        (Gateway("gw-euc1-a", 8, False), Gateway("gw-euc1-b", 12, False)),
    ),
    Region(
        "ap-southeast",
        0.12,
        8,
        110,
        (Gateway("gw-apse1-a", 10, True), Gateway("gw-apse1-b", 65, True)),
    ),
    Region("ap-northeast", 0.08, 9, 95, (Gateway("gw-apne1-a", 11, True),)),
    Region("sa-east", 0.03, -3, 75, (Gateway("gw-sae1-a", 14, False),)),
    # an old gateway build that does not report its region
    Region(None, 0.01, -5, 20, (Gateway("gw-legacy-1", 30, True),)),
)
