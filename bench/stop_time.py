"""How long `telemetry run` takes to end after SIGTERM while reads run through its socket.

Every process must end within 10 s of SIGTERM whatever it is doing. This starts
`telemetry run` in a fresh data dir, sends heavy queries through the control
socket (more than it has read handles, so some wait for one), and times the
SIGTERM. Without the kill on stop, the process would wait for the reads' time
bound (TELEMETRY_SQL_TIMEOUT_S, 30 s by default).

usage: python bench/stop_time.py [--reads 6]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

RUN = ["run", "--port", "0", "--export-every", "0"]
HEAVY = "SELECT count() FROM numbers(300000000000) WHERE sipHash64(number) % 7 = 3"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reads", type=int, default=6)
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        log = cwd / "run.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "telemetry.cli", *RUN],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            while b"control socket" not in log.read_bytes():
                if proc.poll() is not None:
                    sys.exit(f"telemetry run ended early:\n{log.read_text()}")
                time.sleep(0.2)
            socks = []
            for _ in range(args.reads):
                sock = socket.socket(socket.AF_UNIX)
                sock.connect(str(cwd / ".telemetry" / "control.sock"))
                sock.sendall(orjson.dumps({"op": "query", "sql": HEAVY}) + b"\n")
                socks.append(sock)
            time.sleep(3)  # the reads get going; this is a measurement, not a test
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(120)
            took = time.monotonic() - started
            for sock in socks:
                sock.close()
    print(
        f"{args.reads} heavy socket reads running or queued: "
        f"exit {code}, {took:.2f} s after SIGTERM"
    )


if __name__ == "__main__":
    main()
