"""``python cli_child.py DATA_DIR stats|events [export args...]``: data, then the CLI.

``stats`` inserts rows straight into ``model_stats_*_versions`` (pass
``--no-refresh``); ``events`` ingests 150 request events through the embedded
pipeline, so the export's refresh computes the stats itself.

Runs ``telemetry export`` as registered by ``telemetry.commands.export_cmd`` on
a root app that sets the settings as ``telemetry``'s own does, so the command
is exercised in its own process (signals, exit codes) on its own data dir.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer
from conftest import hourly_rows, insert, stats_rows  # this directory's conftest

from processors.clickhouse import connect
from processors.migrate import migrate
from schemas.settings import Settings
from telemetry.commands import export_cmd


def make_event(i: int, now: datetime) -> dict[str, object]:
    return {
        "event_id": str(uuid.UUID(int=i + 1)),
        "schema_version": 1,
        "ts": (now - timedelta(minutes=i)).isoformat().replace("+00:00", "Z"),
        "gateway_id": "gw-test-1",
        "region": "eu-west",
        "model": "openai/gpt-4.1-mini",
        "provider": "openai" if i % 3 else "azure",
        "stream": True,
        "status": "ok",
        "error_type": None,
        "http_status": 200,
        "ttft_ms": 1000.0 + i,
        "latency_ms": 3000.0 + i,
        "input_tokens": 120,
        "output_tokens": 350,
        "cached_input_tokens": 0,
    }


def main() -> None:
    data_dir, mode = Path(sys.argv[1]), sys.argv[2]
    settings = Settings(data_dir=data_dir)
    ch = connect(settings.clickhouse_dsn)
    migrate(ch, requests_ttl_days=30)
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    if mode == "stats":
        models = {"openai/gpt-4.1-mini": {"openai": 2000, "azure": 1000}, "tiny/m": {"x": 10}}
        insert(ch, stats_rows(now, models), hourly_rows("openai/gpt-4.1-mini", now))
    else:
        from processors.embedded import ingest_lines

        events = [make_event(i, now) for i in range(150)]
        lines = b"".join(json.dumps(e).encode() + b"\n" for e in events)
        ingest_lines(ch, [lines], source="test", do_refresh=False)
    ch.close()

    app = typer.Typer(pretty_exceptions_enable=False)

    @app.callback()
    def root(ctx: typer.Context) -> None:
        ctx.obj = settings

    export_cmd.register(app)
    app(sys.argv[3:])


if __name__ == "__main__":
    main()
