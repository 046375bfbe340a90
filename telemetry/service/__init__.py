"""`telemetry run`: the whole pipeline in one process, embedded (no broker, chDB)."""
