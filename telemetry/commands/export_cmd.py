"""`telemetry export`: not built yet."""

from __future__ import annotations

import typer

from telemetry.context import fail


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export() -> None:
        """Not built yet (see the open issues)."""
        fail("`telemetry export` is not built yet", 3)
