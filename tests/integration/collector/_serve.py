"""Subprocess for the HTTP SIGKILL test: the ingest service; prints its URL; SIGTERM stops it.

usage: python _serve.py BOOTSTRAP SPOOL_DIR TOPIC DLQ_TOPIC TOKEN_DIGEST
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from collector.auth import TokenAuth
from collector.server import ServiceConfig, serve


def main(bootstrap: str, spool_dir: str, topic: str, dlq_topic: str, digest: str) -> None:
    config = ServiceConfig(
        bootstrap_servers=bootstrap,
        spool_dir=Path(spool_dir),
        auth=TokenAuth([digest]),
        port=0,
        topic=topic,
        dlq_topic=dlq_topic,
        emitter_options={"connect_timeout_s": 1.0},
    )
    asyncio.run(serve(config, on_listening=lambda url: print(f"LISTENING {url}", flush=True)))


if __name__ == "__main__":
    main(*sys.argv[1:6])
