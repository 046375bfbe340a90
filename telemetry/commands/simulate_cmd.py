"""`telemetry simulate`: not built yet."""

from __future__ import annotations

import typer

from telemetry.context import fail


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate() -> None:
        """Not built yet (see the open issues)."""
        fail("`telemetry simulate` is not built yet", 3)
