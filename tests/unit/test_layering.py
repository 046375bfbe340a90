"""Imports flow toward schemas/: each package imports only the packages below it.

The order is the team guide's (and docs/architecture.md's table): ``schemas``
imports nothing of ours; ``collector`` (gateway side) only ``schemas``;
``processors`` (stream processing, sinks, exports) and ``simulator`` (a
traffic generator in the gateway's role) ``schemas`` and ``collector``; the
``telemetry`` command anything. Imports under ``TYPE_CHECKING`` count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALLOWED: dict[str, set[str]] = {
    "schemas": set(),
    "collector": {"schemas"},
    "processors": {"schemas", "collector"},
    "simulator": {"schemas", "collector"},
    "telemetry": {"schemas", "collector", "processors", "simulator"},
}


def _imports(path: Path) -> set[str]:
    """The top-level packages ``path`` imports by absolute name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", list(ALLOWED))
def test_a_package_imports_only_the_packages_below_it(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    wrong = {
        f"{path.relative_to(ROOT)} imports {other}"
        for path in files
        for other in _imports(path) & (set(ALLOWED) - {package})
        if other not in ALLOWED[package]
    }
    assert not wrong, sorted(wrong)


def test_every_package_of_ours_is_placed() -> None:
    """A new top-level package gets a place in the order (and in the docs' table)."""
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages == set(ALLOWED)
