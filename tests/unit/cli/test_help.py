"""Every subcommand the README names exists and answers --help."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from telemetry.cli import app

SUBCOMMANDS = [
    "run",
    "demo",
    "ingest",
    "stats",
    "status",
    "export",
    "collector",
    "worker",
    "migrate",
    "sql",
    "simulate",
]


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_has_help(name: str) -> None:
    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output and name in result.output


def test_top_level_help_lists_every_subcommand() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in SUBCOMMANDS:
        assert name in result.output
