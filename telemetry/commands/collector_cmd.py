"""`telemetry collector`: not built yet."""

from __future__ import annotations

import typer

from telemetry.context import fail


def register(app: typer.Typer) -> None:
    @app.command("collector")
    def collector() -> None:
        """Not built yet (see the open issues)."""
        fail("`telemetry collector` is not built yet", 3)
