"""The ``telemetry`` command: the shell around schemas, collector and processors."""
