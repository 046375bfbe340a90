"""`telemetry collector`: configuration errors are one clear line, never a traceback."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from collector.auth import hash_token
from schemas.settings import Settings
from telemetry.commands import collector_cmd


def app() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def _root(ctx: typer.Context) -> None:
        ctx.obj = Settings()

    collector_cmd.register(root)
    return root


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TELEMETRY_KAFKA", "TELEMETRY_INGEST_TOKENS"):
        monkeypatch.delenv(name, raising=False)


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app(), ["collector", *args], env=env)
    return result.exit_code, result.output


def test_missing_kafka_is_one_clear_line() -> None:
    code, out = run("--insecure-no-auth")
    assert code == 2
    assert "TELEMETRY_KAFKA" in out
    assert "Traceback" not in out


def test_no_tokens_refuses_to_start_without_the_insecure_flag() -> None:
    code, out = run(env={"TELEMETRY_KAFKA": "127.0.0.1:1"})
    assert code == 2
    assert "TELEMETRY_INGEST_TOKENS" in out and "--insecure-no-auth" in out


def test_malformed_token_digest() -> None:
    code, out = run(env={"TELEMETRY_KAFKA": "127.0.0.1:1", "TELEMETRY_INGEST_TOKENS": "secret"})
    assert code == 2
    assert "sha256" in out


def test_bad_limits() -> None:
    env = {"TELEMETRY_KAFKA": "127.0.0.1:1", "TELEMETRY_INGEST_TOKENS": hash_token("t")}
    code, out = run("--max-body", "10", env=env)
    assert code == 2 and "--max-body" in out
    code, out = run("--spool-max-bytes", "10", env=env)
    assert code == 2 and "--spool-max-bytes" in out


def test_help_names_the_flags() -> None:
    code, out = run("--help")
    assert code == 0
    for flag in ("--host", "--port", "--max-body", "--spool-dir", "--insecure-no-auth"):
        assert flag in out
