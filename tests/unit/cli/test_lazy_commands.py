"""`telemetry` imports a subcommand's module only when that subcommand runs."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from telemetry.cli import COMMANDS, load_command

_SEEN = (
    "import sys; from typer.testing import CliRunner; from telemetry.cli import app; "
    "r = CliRunner().invoke(app, sys.argv[1:]); assert r.exit_code == 0, r.output; "
    "print(' '.join(sorted(m for m in sys.modules if m.startswith("
    "('telemetry.commands.', 'processors', 'simulator', 'aiokafka', 'chdb')))))"
)


def _modules_after(*args: str) -> set[str]:
    """The modules of ours (and the heavy libraries) a fresh process imported for ``args``."""
    out = subprocess.run(
        [sys.executable, "-c", _SEEN, *args], capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_listed_line_is_the_commands_own_first_paragraph(name: str) -> None:
    command = load_command(name)
    first = inspect.cleandoc(command.help or "").split("\n\n")[0].replace("\n", " ").strip()
    assert COMMANDS[name][1] == first
    assert command.name == name


def test_top_level_help_imports_no_command_module() -> None:
    assert _modules_after("--help") == set()


def test_a_subcommand_imports_its_own_module_only() -> None:
    loaded = _modules_after("stats", "--help")
    assert {m for m in loaded if m.startswith("telemetry.commands.")} == {
        "telemetry.commands.stats_cmd"
    }
