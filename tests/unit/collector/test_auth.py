"""Bearer tokens configured as sha256 digests, compared in constant time."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from collector.auth import TokenAuth, hash_token
from schemas.errors import ConfigError


def test_accepts_configured_tokens_only() -> None:
    auth = TokenAuth.from_setting(SecretStr(f"{hash_token('alpha')}, {hash_token('beta')}"))
    assert auth is not None and len(auth) == 2
    assert auth.check("Bearer alpha") == hash_token("alpha")[:12]
    assert auth.check("bearer beta") == hash_token("beta")[:12]
    for bad in (None, "", "Bearer", "Bearer gamma", "Basic alpha", "alpha", "Bearer  "):
        assert auth.check(bad) is None


def test_unset_means_no_auth_object() -> None:
    assert TokenAuth.from_setting(None) is None
    assert TokenAuth.from_setting(SecretStr("  ")) is None


@pytest.mark.parametrize("value", ["nothex", "ab" * 31, hash_token("x") + "0"])
def test_malformed_digest_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="TELEMETRY_INGEST_TOKENS"):
        TokenAuth.from_setting(value)


def test_digest_case_is_ignored() -> None:
    auth = TokenAuth([hash_token("t").upper()])
    assert auth.check("Bearer t") is not None
