"""Bearer tokens, stored as sha256 hex digests and compared in constant time.

The service never holds a token in clear: ``TELEMETRY_INGEST_TOKENS`` lists the
digests (``printf %s "$TOKEN" | sha256sum | cut -d' ' -f1``), one per gateway, comma separated.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable

from pydantic import SecretStr

from schemas.errors import ConfigError

__all__ = ["TokenAuth", "hash_token"]

_HEX64 = re.compile(r"[0-9a-f]{64}")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenAuth:
    """Checks ``Authorization: Bearer <token>`` against configured digests."""

    def __init__(self, digests: Iterable[str]) -> None:
        cleaned = []
        for i, d in enumerate(digests):
            d = d.strip().lower()
            if not d:
                continue
            if not _HEX64.fullmatch(d):
                raise ConfigError(
                    f"TELEMETRY_INGEST_TOKENS: entry {i + 1} is not a sha256 hex digest "
                    "(64 hex characters; compute one with: "
                    "printf %s TOKEN | sha256sum | cut -d' ' -f1)"
                )
            cleaned.append(bytes.fromhex(d))
        if not cleaned:
            raise ConfigError("TELEMETRY_INGEST_TOKENS: no token digest configured")
        self._digests = tuple(cleaned)

    @classmethod
    def from_setting(cls, value: SecretStr | str | None) -> TokenAuth | None:
        """None when no tokens are configured (the caller decides whether that is allowed)."""
        if value is None:
            return None
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not raw.strip():
            return None
        return cls(raw.split(","))

    def __len__(self) -> int:
        return len(self._digests)

    def check(self, authorization: str | None) -> str | None:
        """The caller's identity (a digest prefix, safe to log) or None when refused."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        presented = hashlib.sha256(token.encode()).digest()
        match: bytes | None = None
        for digest in self._digests:  # no early exit: time does not depend on which matched
            if hmac.compare_digest(presented, digest):
                match = digest
        return match.hex()[:12] if match is not None else None
