"""Model names and other data neither crash nor drive the operator's terminal.

Point 9 of the attacker's probe of `telemetry run`: a model named ``m/[/bold]``
made `telemetry stats` and `telemetry sql` fail with ``MarkupError``, and
``ESC [31m`` or an OSC title sequence reached the terminal raw. Every console
here has no colour system, so any ESC byte in the output came from the data.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from pipeline_util import make_event, stats_row
from rich.console import Console
from run_util import cli_bytes
from typer.testing import CliRunner

from processors.export.document import Skipped
from processors.export.push import PushResult
from processors.export.run import ExportReport
from telemetry import context
from telemetry.commands import demo_cmd, export_cmd, sql_cmd, stats_cmd
from telemetry.safe_text import safe_text, visible

#: Each breaks the old code: a markup error, live markup or emoji, or a raw control byte.
HOSTILE = [
    "m/[/bold]",
    "[bold red]loud",
    "red\x1b[31mX",
    "osc\x1b]0;owned\x07",
    "csi\x9b2J",
    "del\x7fbell\x07nl\ntab\t",
    "rtl\u202egnp.exe",
    "emoji:smile:",
]
#: What the operator reads instead.
SHOWN = {
    "m/[/bold]": "m/[/bold]",
    "[bold red]loud": "[bold red]loud",
    "red\x1b[31mX": "red\\x1b[31mX",
    "osc\x1b]0;owned\x07": "osc\\x1b]0;owned\\x07",
    "csi\x9b2J": "csi\\x9b2J",
    "del\x7fbell\x07nl\ntab\t": "del\\x7fbell\\x07nl\\x0atab\\x09",
    "rtl\u202egnp.exe": "rtl\\u202egnp.exe",
    "emoji:smile:": "emoji:smile:",
}
_CONTROL_BYTES = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]] + ["\u202e"]


def _console() -> Console:
    return Console(file=io.StringIO(), color_system=None, width=400, emoji=True)


def _output(console: Console) -> str:
    file = console.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()


def _assert_inert(out: str, value: str) -> None:
    """``value`` is shown in its visible form and no control character reached the output."""
    assert SHOWN[value] in out
    assert not [c for c in _CONTROL_BYTES if c in out.replace("\n", "")], repr(out)


@pytest.fixture
def console(monkeypatch: pytest.MonkeyPatch) -> Console:
    """One plain console in place of every command's own."""
    c = _console()
    for module in (context, sql_cmd, stats_cmd, export_cmd, demo_cmd):
        monkeypatch.setattr(module, "console", c, raising=False)
    monkeypatch.setattr(context, "err_console", c)
    monkeypatch.setattr(export_cmd, "err_console", c)
    return c


def test_visible_shows_every_control_character() -> None:
    assert visible("a\x1b[31mb\x1b]0;t\x07\x00\x7f\x85\u2066") == (
        "a\\x1b[31mb\\x1b]0;t\\x07\\x00\\x7f\\x85\\u2066"
    )
    assert visible("openai/gpt-4.1-mini é 中") == "openai/gpt-4.1-mini é 中"
    assert safe_text("[/bold]").plain == "[/bold]"


@pytest.mark.parametrize("value", HOSTILE)
def test_sql_table_shows_data_literally(console: Console, value: str) -> None:
    sql_cmd.print_result([value, "n"], [(value, 1), (value.encode(), None)], sql_cmd.Format.table)
    out = _output(console)
    assert out.count(SHOWN[value]) == 3  # the header and two cells
    _assert_inert(out, value)
    assert "NULL" in out and "2 rows" in out


@pytest.mark.parametrize("fmt", [sql_cmd.Format.json, sql_cmd.Format.ndjson])
def test_sql_json_keeps_the_data_exactly(capsys: pytest.CaptureFixture[str], fmt: Any) -> None:
    sql_cmd.print_result(["model"], [(v,) for v in HOSTILE], fmt)
    out = capsys.readouterr().out
    assert "\x1b" not in out  # JSON escapes C0 controls itself
    lines = out.split("\n")[:-1]  # str.split() would also split at the data's \x1c-\x1f
    docs = orjson.loads(out) if fmt is sql_cmd.Format.json else map(orjson.loads, lines)
    assert [d["model"] for d in docs] == HOSTILE


def test_sql_csv_keeps_the_data_exactly(capsys: pytest.CaptureFixture[str]) -> None:
    """csv and tsv are for files and pipes: the data as is (documented in print_result)."""
    import csv

    sql_cmd.print_result(["model"], [(v,) for v in HOSTILE], sql_cmd.Format.csv)
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert [r[0] for r in rows[1:]] == HOSTILE


class _Reader:
    """Answers the stats query with rows an attacker named."""

    is_embedded = False

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def query_dicts(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        return self.rows


@pytest.mark.parametrize("value", HOSTILE)
def test_stats_table_shows_data_literally(
    console: Console, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    from telemetry.cli import app

    rows = [stats_row(value), stats_row(value, provider=value)]
    monkeypatch.setattr(stats_cmd, "open_reader", lambda *a, **k: _Reader(rows))
    result = CliRunner().invoke(app, ["stats"])
    assert result.exception is None, result.exception
    out = _output(console)
    assert out.count(SHOWN[value]) == 3  # model twice, provider once
    _assert_inert(out, value)
    assert "rolling 7 days" in out and "2.30 s" in out


@pytest.mark.parametrize("value", HOSTILE)
def test_export_report_shows_data_literally(console: Console, value: str) -> None:
    report = ExportReport(
        out=Path("/tmp/export"),
        skipped=[Skipped(value, f"slug segment {value!r} is not a plain file name")],
        recovered=[f"removed {value}"],
        pushed=[PushResult(value, False, 400, 5, f"400 Bad Request: {value}")],
    )
    export_cmd.print_report(report)
    out = _output(console)
    assert out.count(SHOWN[value]) >= 4  # skipped, recovered, pushed model and answer
    _assert_inert(out, value)


@pytest.mark.parametrize("value", HOSTILE)
def test_demo_page_block_shows_the_model_literally(console: Console, value: str) -> None:
    console.print(demo_cmd.page_block(stats_row(value)))
    out = _output(console)
    _assert_inert(out, value)


@pytest.mark.parametrize("value", HOSTILE)
def test_fail_prints_the_message_literally(console: Console, value: str) -> None:
    with pytest.raises(SystemExit):
        context.fail(f"Syntax error near '{value}'")
    out = _output(console)
    assert out.startswith("error: Syntax error near")
    _assert_inert(out, value)


def _cli(args: list[str], cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {"TELEMETRY_DATA_DIR": str(cwd / "data"), "COLUMNS": "400", "TERM": "xterm-256color"}
    return cli_bytes(cwd, *args, env=env, stdin=stdin)


@pytest.mark.integration
def test_cli_stats_and_sql_with_hostile_model_names(tmp_path: Path) -> None:
    models = [m for m in HOSTILE if "\n" not in m]  # one NDJSON line each: no raw newline
    body = b"\n".join(orjson.dumps(make_event(model=m, provider=m)) for m in models) + b"\n"
    out = _cli(["ingest", "-"], tmp_path, stdin=body)
    assert out.returncode == 0, out.stderr
    assert f"accepted {len(models)}, rejected 0".encode() in out.stdout

    for args in (["stats"], ["sql", "SELECT model, provider FROM telemetry.requests"]):
        shown = _cli(args, tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert b"\x1b" not in shown.stdout + shown.stderr
        assert b"\x07" not in shown.stdout and b"\xc2\x9b" not in shown.stdout
        text = shown.stdout.decode()
        for m in models:
            assert SHOWN[m] in text, (m, text)

    exact = _cli(["sql", "SELECT model FROM telemetry.requests", "-f", "ndjson"], tmp_path)
    assert {orjson.loads(line)["model"] for line in exact.stdout.splitlines()} == set(models)
