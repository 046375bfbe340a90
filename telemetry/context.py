"""What every subcommand shares: the settings, and one-line errors for expected failures.

Data-derived text printed on ``console`` / ``err_console`` goes through
``telemetry.safe_text.safe_text`` (no markup, no control characters).
"""

from __future__ import annotations

import sys
from typing import NoReturn

import typer
from rich.console import Console
from rich.text import Text

from schemas.errors import ConfigError, TelemetryError
from schemas.settings import Settings
from telemetry.safe_text import safe_text

__all__ = ["console", "err_console", "fail", "settings_from"]

console = Console()
err_console = Console(stderr=True)


def settings_from(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    if not isinstance(obj, Settings):
        raise ConfigError("internal: settings were not initialised")
    return obj


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line saying what to fix, and exit non-zero: no traceback.

    ``message`` is taken literally (no markup): it often quotes data, such as
    a server's error about a query or a file name.
    """
    line = Text.assemble(Text("error:", style="bold red"), " ", safe_text(message))
    err_console.print(line, highlight=False, soft_wrap=True)
    sys.exit(code)


def exit_code_for(exc: TelemetryError) -> int:
    return 2 if isinstance(exc, ConfigError) else 1
