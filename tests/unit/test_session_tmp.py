"""Each pytest session has a base temp directory of its own (see tests/conftest.py)."""

from __future__ import annotations

import getpass
import tempfile
from pathlib import Path

import pytest


def test_the_session_base_is_not_pytests_shared_rotation(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> None:
    base = tmp_path_factory.getbasetemp().resolve()
    shared = (Path(tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}").resolve()
    assert shared not in base.parents, base
    if request.config.invocation_params.args and any(
        a.startswith("--basetemp") for a in request.config.invocation_params.args
    ):
        return  # the caller chose it
    assert base.name.startswith("telemetry-tests-"), base
