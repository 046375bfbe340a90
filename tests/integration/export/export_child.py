"""Run one export in its own process (the kill test's victim).

``python export_child.py DATA_DIR OUT SEED``: puts 50 models of stats (varied by
SEED) into a chDB under DATA_DIR, then exports them to OUT. The tree's test
hook (``TELEMETRY_TEST_EXPORT_PAUSE_AFTER``) makes it stop half-way on demand.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import hourly_rows, insert, stats_rows  # this directory's conftest

from processors.clickhouse import connect
from processors.export.run import ExportOptions, export_once
from processors.migrate import migrate


def main() -> None:
    data_dir, out, seed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    ch = connect(f"chdb://{data_dir / 'clickhouse'}")
    migrate(ch, requests_ttl_days=30)
    ch.command("TRUNCATE TABLE telemetry.model_stats_7d_versions")
    ch.command("TRUNCATE TABLE telemetry.model_stats_hourly_versions")
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    models = {f"vendor{i % 5}/model-{i:03d}": {"a": 100 + seed, "b": 50 + i} for i in range(50)}
    insert(ch, stats_rows(now, models, seed=seed), hourly_rows("vendor0/model-000", now))
    report = export_once(ch, ExportOptions(out=out))
    print(f"written={len(report.written)} files={report.files} recovered={report.recovered}")


if __name__ == "__main__":
    main()
