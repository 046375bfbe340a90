"""`telemetry demo`: not built yet."""

from __future__ import annotations

import typer

from telemetry.context import fail


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo() -> None:
        """Not built yet (see the open issues)."""
        fail("`telemetry demo` is not built yet", 3)
