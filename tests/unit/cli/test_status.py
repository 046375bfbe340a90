"""`telemetry status`'s reading of the newest stats' age (the pure part)."""

from __future__ import annotations

from telemetry.commands.status_cmd import stats_state


def test_old_stats_are_stale_only_while_work_waits() -> None:
    assert stats_state(60.0, 30.0, [5, 0]) == "ok"  # within 3 intervals, whatever waits
    assert stats_state(91.0, 30.0, [0, 0]) == "quiet"  # nothing new to publish
    assert stats_state(91.0, 30.0, []) == "quiet"
    assert stats_state(91.0, 30.0, [0, 3]) == "stale"
