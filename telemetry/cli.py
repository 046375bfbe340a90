"""Entry point of the ``telemetry`` command.

Global flags override ``TELEMETRY_*`` variables; each subcommand lives in its
own module under ``telemetry.commands`` and registers itself (``register``).
A module is imported only when its subcommand runs (or shows its own
``--help``): importing them all cost every CLI process its heaviest
dependencies (chDB, aiohttp, Kafka, numpy) whatever it was asked to do.
``telemetry --help`` lists the subcommands from ``COMMANDS``, whose lines a
test holds equal to the commands' own docstrings.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from typer.core import TyperCommand, TyperGroup

from schemas.errors import TelemetryError
from schemas.settings import Settings
from telemetry.context import exit_code_for, fail

#: Every subcommand, in the order ``--help`` lists them: its module under
#: ``telemetry.commands`` and its line in the list (its docstring's first paragraph).
COMMANDS: dict[str, tuple[str, str]] = {
    "run": (
        "run_cmd",
        "HTTP ingest, stats refresh and scheduled exports in one process; no broker.",
    ),
    "demo": (
        "demo_cmd",
        "Backfill a simulated week, run live for a while, print every model's page block.",
    ),
    "ingest": (
        "ingest_cmd",
        "Validate NDJSON events and send them through the configured pipeline.",
    ),
    "stats": (
        "stats_cmd",
        "Print the current rolling 7-day stats, per model and per (model, provider).",
    ),
    "status": (
        "status_cmd",
        "The pipeline's health: lag per partition, age of the newest stats, DLQ, spool.",
    ),
    "export": (
        "export_cmd",
        "Write the catalog export: per-model JSON, pages with charts, badges, index.",
    ),
    "collector": (
        "collector_cmd",
        "HTTP ingest: POST /v1/events (JSON array or NDJSON) to Kafka, with a disk spool.",
    ),
    "worker": (
        "worker_cmd",
        "Consume telemetry.requests.v1 and keep the rolling 7-day stats (needs TELEMETRY_KAFKA).",
    ),
    "migrate": ("migrate_cmd", "Create or upgrade the `telemetry` database (safe to run again)."),
    "sql": ("sql_cmd", "Run one query against the configured ClickHouse and print the result."),
    "simulate": ("simulate_cmd", "Synthetic gateway traffic that looks like a real router's."),
}


# Recent typer carries its own copy of click (older typer used click itself): the
# group's methods take and return that copy's context, formatter and command types.
_Command = Any
_Context = Any


def load_command(name: str) -> _Command:
    """Import ``name``'s module and build its command, as ``typer`` would have."""
    module = importlib.import_module(f"telemetry.commands.{COMMANDS[name][0]}")
    holder = typer.Typer()
    module.register(holder)
    return typer.main.get_command(holder)


class _Commands(MutableMapping[str, _Command]):
    """The group's commands: every name of ``COMMANDS``, each loaded on first use."""

    def __init__(self) -> None:
        self._loaded: dict[str, _Command] = {}

    def loaded(self, name: str) -> bool:
        return name in self._loaded

    def __getitem__(self, name: str) -> _Command:
        if name not in self._loaded:
            if name not in COMMANDS:
                raise KeyError(name)
            self._loaded[name] = load_command(name)
        return self._loaded[name]

    def __setitem__(self, name: str, command: _Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        yield from COMMANDS
        yield from (name for name in self._loaded if name not in COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS) + sum(name not in COMMANDS for name in self._loaded)


class LazyGroup(TyperGroup):
    """A group whose subcommands are imported when one runs, not to list them in ``--help``."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _Commands()
        self._listing = False

    def list_commands(self, ctx: _Context) -> list[str]:
        return list(self.commands)

    def get_command(self, ctx: _Context, cmd_name: str) -> _Command | None:
        commands = self.commands
        if self._listing and cmd_name in COMMANDS:
            assert isinstance(commands, _Commands)
            if not commands.loaded(cmd_name):
                return TyperCommand(cmd_name, help=COMMANDS[cmd_name][1])
        return commands.get(cmd_name)

    def format_help(self, ctx: _Context, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="telemetry",
    cls=LazyGroup,
    help="Telemetry for an LLM gateway's model pages: events in, rolling 7-day stats out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    kafka: Annotated[
        str | None,
        typer.Option(help="Kafka bootstrap servers [env TELEMETRY_KAFKA; unset: embedded]"),
    ] = None,
    clickhouse: Annotated[
        str | None,
        typer.Option(
            help="ClickHouse DSN, chdb://PATH or http(s)://... [env TELEMETRY_CLICKHOUSE]"
        ),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="embedded state directory [env TELEMETRY_DATA_DIR]")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log at INFO")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # Expected failures get one line from us; their libraries' retries are noise.
        for noisy in ("urllib3", "clickhouse_connect", "aiokafka"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)
    overrides: dict[str, Any] = {
        k: v
        for k, v in {"kafka": kafka, "clickhouse": clickhouse, "data_dir": data_dir}.items()
        if v is not None
    }
    try:
        ctx.obj = Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "?"
        fail(f"TELEMETRY_{name.upper()} (--{name.replace('_', '-')}): {err['msg']}", 2)


def main() -> None:
    os.environ.setdefault("PYTHONFAULTHANDLER", "0")
    try:
        app()
    except TelemetryError as exc:
        fail(str(exc), exit_code_for(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)


if __name__ == "__main__":
    main()
