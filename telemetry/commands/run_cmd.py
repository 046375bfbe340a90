"""`telemetry run`: not built yet."""

from __future__ import annotations

import typer

from telemetry.context import fail


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run() -> None:
        """Not built yet (see the open issues)."""
        fail("`telemetry run` is not built yet", 3)
