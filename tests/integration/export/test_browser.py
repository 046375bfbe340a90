"""The exported pages in headless Chromium: no console errors, no requests, charts drawn.

Chromium is Debian's ``chromium`` package (no browser download). It is driven
over the DevTools protocol with aiohttp's websocket client: console messages,
exceptions, log entries and every network request are recorded while a page
loads from disk, then the chart area is screenshotted and its pixels counted.
Skipped when chromium is missing, unless CI is set. Set
``TELEMETRY_DOCS_SCREENSHOT=PATH`` to also save a full-page screenshot there.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import math
import os
import shutil
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from processors.aggregate.window import window_start
from processors.export.document import build_documents
from processors.export.run import ExportOptions, write_tree

pytestmark = pytest.mark.integration

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
    "--remote-debugging-address=127.0.0.1",
]
AS_OF = datetime(2025, 5, 1, 12, 0, 30, 123000, tzinfo=UTC)


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set and chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return path


# -- a tree to look at ---------------------------------------------------------------


def _stats(model: str, provider: str, requests: int, scale: float) -> dict[str, Any]:
    return {
        "model": model,
        "provider": provider,
        "as_of": AS_OF,
        "window_start": window_start(AS_OF),
        "requests": requests,
        "input_tokens": requests * 67,
        "output_tokens": requests * 162,
        "traffic_tokens": requests * 229 + 762,
        "errors": requests * 29 // 1000,
        "error_denominator": requests,
        "error_rate": (requests * 29 // 1000) / requests,
        "ttft_samples": requests,
        "ttft_p50_ms": 2297.0 * scale,
        "ttft_p95_ms": 10900.0 * scale,
        "ttft_p99_ms": 15000.0 * scale,
        "output_tps_samples": requests,
        "output_tps_p50": 175.2 / scale,
    }


def _hourly(model: str) -> list[dict[str, Any]]:
    rows = []
    start = window_start(AS_OF)
    for h in range(168):
        if 100 <= h < 104:
            continue  # an outage: the charts show a gap
        req = 30 + int(14 * math.sin((h - 6) / 24 * 2 * math.pi))
        rows.append(
            {
                "model": model,
                "hour": start + timedelta(hours=h),
                "requests": req,
                "errors": 0 if h % 11 else 1,
                "error_denominator": req,
                "error_rate": (0 if h % 11 else 1) / req + 0.012 * (1 + math.sin(h / 5)),
                "ttft_samples": req,
                "ttft_p50_ms": 2300 + 250 * math.sin(h / 9) + 60 * math.sin(h * 1.7),
                "ttft_p95_ms": 10900 + 1800 * math.sin(h / 13) + 500 * math.sin(h * 1.3),
                "output_tps_samples": req,
                "output_tps_p50": 175 + 14 * math.cos(h / 10) + 4 * math.sin(h * 2.1),
            }
        )
    return rows


def build_sample_tree(out: Path) -> Path:
    rows = [
        _stats("openai/gpt-4.1-mini", "", 3008, 1.0),
        _stats("openai/gpt-4.1-mini", "openai", 2006, 0.95),
        _stats("openai/gpt-4.1-mini", "azure", 1002, 1.1),
        _stats("meta-llama/llama-3.1-8b-instruct", "", 42, 0.4),
        _stats("meta-llama/llama-3.1-8b-instruct", "groq", 42, 0.4),
    ]
    docs = build_documents(rows, max_age=None)
    hourly = {"openai/gpt-4.1-mini": _hourly("openai/gpt-4.1-mini")}
    write_tree(docs, hourly, ExportOptions(out=out, fsync=False))
    return out


# -- Chromium over the DevTools protocol -----------------------------------------------


@dataclass
class PageLoad:
    console: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    evaluated: Any = None
    chart_png: bytes = b""
    full_png: bytes = b""


class DevTools:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        await self.ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads((await asyncio.wait_for(self.ws.receive(), 30)).data)
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result
            self.events.append(msg)

    async def wait_event(self, method: str, timeout: float = 30) -> None:
        if any(e.get("method") == method for e in self.events):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            raw = await asyncio.wait_for(self.ws.receive(), deadline - time.monotonic())
            msg = json.loads(raw.data)
            self.events.append(msg)
            if msg.get("method") == method:
                return
        raise TimeoutError(method)

    async def drain(self, seconds: float) -> None:
        try:
            while True:
                raw = await asyncio.wait_for(self.ws.receive(), seconds)
                self.events.append(json.loads(raw.data))
        except TimeoutError:
            return


@pytest.fixture(scope="module")
def browser() -> Iterator[str]:
    """A running headless Chromium; yields its DevTools HTTP endpoint."""
    exe = _chromium()
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    proc = subprocess.Popen(
        [exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("chromium did not start its DevTools endpoint")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port_file.read_text().split()[0]}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(profile, ignore_errors=True)


_PROBE = """(() => {
  const boxes = [...document.querySelectorAll('.chart-box')];
  const charts = boxes.map(b => ({
    id: b.id,
    paths: b.querySelectorAll('svg path').length,
    bars: b.querySelectorAll('svg g.series rect').length,
    length: [...b.querySelectorAll('svg path')].reduce((s, p) => s + p.getTotalLength(), 0),
  }));
  const r = boxes.length ? boxes[0].getBoundingClientRect() : null;
  return {charts, first: r && {x: r.x, y: r.y + window.scrollY, w: r.width, h: r.height},
          height: document.documentElement.scrollHeight,
          perf: document.querySelector('#performance')?.innerText ?? null};
})()"""


async def _load(endpoint: str, page: Path, width: int = 1000, full: bool = False) -> PageLoad:
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{endpoint}/json/new?about:blank") as resp:
            target = await resp.json()
        async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            dt = DevTools(ws)
            for domain in ("Runtime", "Log", "Network", "Page"):
                await dt.call(f"{domain}.enable")
            await dt.call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=900,
                deviceScaleFactor=1,
                mobile=False,
            )
            dt.events.clear()
            url = page.resolve().as_uri()
            await dt.call("Page.navigate", url=url)
            await dt.wait_event("Page.loadEventFired")
            await dt.drain(0.5)
            out = PageLoad()
            for e in dt.events:
                method, p = e.get("method"), e.get("params", {})
                if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                    out.console.append(json.dumps(p.get("args")))
                elif method == "Runtime.exceptionThrown":
                    out.console.append(json.dumps(p.get("exceptionDetails")))
                elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
                    out.console.append(p["entry"].get("text", ""))
                elif method == "Network.requestWillBeSent":
                    out.requests.append(p["request"]["url"])
            probe = await dt.call("Runtime.evaluate", expression=_PROBE, returnByValue=True)
            out.evaluated = probe["result"]["value"]
            first = out.evaluated["first"]
            if first:
                clip = {
                    "x": first["x"],
                    "y": first["y"],
                    "width": first["w"],
                    "height": first["h"],
                    "scale": 1,
                }
                shot = await dt.call(
                    "Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True
                )
                out.chart_png = base64.b64decode(shot["data"])
            if full:
                height = min(int(out.evaluated["height"]), 4000)
                clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
                shot = await dt.call(
                    "Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True
                )
                out.full_png = base64.b64decode(shot["data"])
        async with http.get(f"{endpoint}/json/close/{target['id']}"):
            pass
    return out


# -- PNG pixels without an imaging library -----------------------------------------------


def png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """Decode an 8-bit RGB/RGBA PNG (what Chromium writes): width, height, pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, chunk = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    prev = bytearray(stride)
    pixels: list[tuple[int, ...]] = []
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        pixels.extend(tuple(line[i : i + 3]) for i in range(0, stride, channels))
        prev = line
    return width, height, pixels


def _coloured(pixels: list[tuple[int, ...]]) -> int:
    """Pixels clearly coloured (a series' blue or amber), not white, grey or black text."""
    return sum(1 for r, g, b in pixels if max(r, g, b) - min(r, g, b) > 60)


# -- the tests --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="export-tree-") as d:
        yield build_sample_tree(Path(d) / "export")


def test_model_page_draws_charts_without_errors_or_requests(browser: str, tree: Path) -> None:
    page = tree / "models/openai/gpt-4.1-mini.html"
    shot_to = os.environ.get("TELEMETRY_DOCS_SCREENSHOT")
    load = asyncio.run(_load(browser, page, full=bool(shot_to)))
    assert load.console == []
    assert load.requests == [page.resolve().as_uri()]  # the page itself, nothing else
    charts = {c["id"]: c for c in load.evaluated["charts"]}
    assert set(charts) == {"chart-ttft", "chart-output_speed", "chart-requests", "chart-error_rate"}
    assert charts["chart-ttft"]["paths"] == 4  # p50 and p95, each broken by the outage
    assert charts["chart-ttft"]["length"] > 500
    assert charts["chart-requests"]["bars"] == 164
    perf = load.evaluated["perf"]
    for text in ("2.30 s", "10.90 s", "175 tok/s", "2.9%"):
        assert text in perf
    width, height, pixels = png_pixels(load.chart_png)
    assert width > 600 and height > 150
    assert _coloured(pixels) > 1500, "the TTFT chart drew no coloured lines"
    if shot_to:
        Path(shot_to).write_bytes(load.full_png)


def test_index_and_withheld_page_open_cleanly(browser: str, tree: Path) -> None:
    for page in (tree / "index.html", tree / "models/meta-llama/llama-3.1-8b-instruct.html"):
        load = asyncio.run(_load(browser, page))
        assert load.console == [], page
        assert load.requests == [page.resolve().as_uri()], page
    thin = asyncio.run(_load(browser, tree / "models/meta-llama/llama-3.1-8b-instruct.html"))
    assert thin.evaluated["perf"].count("—") == 4  # 42 requests: every figure withheld
