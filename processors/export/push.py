"""Push model documents to the catalog: one HTTP ``PUT`` per model.

Protocol (see docs/exports.md):

* ``PUT <URL>/<model slug>`` (or ``URL`` with ``{model}`` replaced), body the
  document exactly as written to ``models/<slug>.json``,
  ``Content-Type: application/json``;
* ``Authorization: Bearer $TELEMETRY_CATALOG_TOKEN``;
* ``Idempotency-Key: <model>@<as_of>``: the same stats sent twice are one
  update for the catalog, so retries are safe;
* 2xx is success; 408, 425, 429, 500, 502, 503, 504 and connection failures are retried
  with exponential backoff (``Retry-After`` honoured up to the cap); other
  answers are final. Each model gets a :class:`PushResult` saying what the
  catalog answered and after how many attempts.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp

from processors.export.document import ModelDocument, iso
from processors.export.errors import ExportConfigError

__all__ = [
    "TOKEN_ENV",
    "PushPolicy",
    "PushResult",
    "idempotency_key",
    "push_documents",
    "target_url",
    "token_from_env",
]

TOKEN_ENV = "TELEMETRY_CATALOG_TOKEN"
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class PushPolicy:
    attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    timeout_s: float = 20.0
    concurrency: int = 8
    #: Random share of each delay (full jitter at 1.0); 0 makes delays exact.
    jitter: float = 0.5

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """The wait before attempt ``attempt + 1`` (attempts count from 1)."""
        base = min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
        if retry_after is not None:
            base = min(max(base, retry_after), self.max_backoff_s)
        return base * (1 - self.jitter * random.random())


@dataclass(frozen=True, slots=True)
class PushResult:
    model: str
    ok: bool
    status: int | None
    attempts: int
    message: str


def token_from_env() -> str:
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ExportConfigError(
            f"--push needs a bearer token in {TOKEN_ENV}; set it to the catalog's API token"
        )
    return token


def target_url(base: str, model: str) -> str:
    slug = quote(model, safe="/:@+~-._")
    if "{model}" in base:
        return base.replace("{model}", slug)
    return f"{base.rstrip('/')}/{slug}"


def idempotency_key(doc: ModelDocument) -> str:
    return quote(f"{doc.model}@{iso(doc.as_of)}", safe="/:@+~-._")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


async def _push_one(
    session: aiohttp.ClientSession,
    base: str,
    token: str,
    doc: ModelDocument,
    policy: PushPolicy,
) -> PushResult:
    url = target_url(base, doc.model)
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Idempotency-Key": idempotency_key(doc),
    }
    body = doc.encode()
    message = ""
    status: int | None = None
    for attempt in range(1, policy.attempts + 1):
        retry_after = None
        try:
            async with session.put(url, data=body, headers=headers) as resp:
                status = resp.status
                text = (await resp.text(errors="replace")).strip().replace("\n", " ")
                message = f"{resp.status} {resp.reason or ''}".strip()
                if text:
                    message += f": {text[:160]}"
                if 200 <= resp.status < 300:
                    return PushResult(doc.model, True, status, attempt, message)
                if resp.status not in _RETRY_STATUS:
                    return PushResult(doc.model, False, status, attempt, message)
                retry_after = _retry_after(resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = None
            message = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if attempt < policy.attempts:
            await asyncio.sleep(policy.delay(attempt, retry_after))
    return PushResult(
        doc.model, False, status, policy.attempts, f"gave up after {policy.attempts}: {message}"
    )


async def push_documents(
    url: str,
    documents: Sequence[ModelDocument],
    *,
    token: str,
    policy: PushPolicy | None = None,
) -> list[PushResult]:
    """PUT every document; never raises for a refused or failed push (see the results)."""
    policy = policy or PushPolicy()
    if not url.startswith(("http://", "https://")):
        raise ExportConfigError(f"--push {url!r}: must be an http:// or https:// URL")
    sem = asyncio.Semaphore(policy.concurrency)
    timeout = aiohttp.ClientTimeout(total=policy.timeout_s)

    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def guarded(doc: ModelDocument) -> PushResult:
            async with sem:
                return await _push_one(session, url, token, doc, policy)

        return list(await asyncio.gather(*(guarded(d) for d in documents)))
