"""`telemetry worker`: placeholder until the Faust worker lands in this module."""

from __future__ import annotations

import typer

from telemetry.context import fail


def register(app: typer.Typer) -> None:
    @app.command("worker")
    def worker() -> None:
        """Not built yet."""
        fail("`telemetry worker` is not built yet", 3)
