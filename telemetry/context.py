"""What every subcommand shares: the settings, and one-line errors for expected failures."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer
from rich.console import Console

from schemas.errors import ConfigError, TelemetryError
from schemas.settings import Settings

__all__ = ["console", "err_console", "fail", "settings_from"]

console = Console()
err_console = Console(stderr=True)


def settings_from(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    if not isinstance(obj, Settings):
        raise ConfigError("internal: settings were not initialised")
    return obj


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line saying what to fix, and exit non-zero: no traceback."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


def exit_code_for(exc: TelemetryError) -> int:
    return 2 if isinstance(exc, ConfigError) else 1
