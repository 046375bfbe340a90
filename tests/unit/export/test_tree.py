"""The tree is swapped in whole: a failed or killed export leaves the previous tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from processors.export import tree as tree_mod
from processors.export.errors import ExportError
from processors.export.tree import TreeWriter, recover


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _write(out: Path, files: dict[str, bytes], *, fsync: bool = False) -> None:
    with TreeWriter(out, fsync=fsync) as w:
        for rel, data in files.items():
            w.write(rel, data)
        w.commit()


def test_first_and_second_export_swap_whole_trees(tmp_path: Path) -> None:
    out = tmp_path / "export"
    _write(
        out, {"index.json": b"1", "models/a/b.json": b"old", "models/gone.json": b"x"}, fsync=True
    )
    assert _snapshot(out) == {
        "index.json": b"1",
        "models/a/b.json": b"old",
        "models/gone.json": b"x",
    }
    _write(out, {"index.json": b"2", "models/a/b.json": b"new"})
    assert _snapshot(out) == {"index.json": b"2", "models/a/b.json": b"new"}  # no leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == [".export.lock", "export"]


def test_exception_mid_export_leaves_previous_tree(tmp_path: Path) -> None:
    out = tmp_path / "export"
    _write(out, {"index.json": b"1"})
    with pytest.raises(RuntimeError), TreeWriter(out, fsync=False) as w:
        w.write("index.json", b"2")
        raise RuntimeError("boom")
    assert _snapshot(out) == {"index.json": b"1"}
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_leftovers_of_a_killed_export_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "export"
    _write(out, {"index.json": b"1"})
    dead = tmp_path / ".export.tmp-999999-deadbeef"
    (dead / "models").mkdir(parents=True)
    (dead / "models" / "half.json").write_bytes(b"{")
    with TreeWriter(out, fsync=False) as w:
        assert any("removed .export.tmp-999999" in r for r in w.recovered)
        w.write("index.json", b"2")
        w.commit()
    assert not dead.exists() and _snapshot(out) == {"index.json": b"2"}


def test_crash_between_fallback_renames_is_repaired(tmp_path: Path) -> None:
    out = tmp_path / "export"
    old = tmp_path / ".export.old-12345678"
    old.mkdir()
    (old / "index.json").write_bytes(b"previous")
    assert recover(out) == ["restored the previous tree from .export.old-12345678"]
    assert _snapshot(out) == {"index.json": b"previous"}


def test_fallback_swap_without_rename_exchange(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tree_mod, "_exchange", lambda a, b: False)
    out = tmp_path / "export"
    _write(out, {"index.json": b"1"})
    _write(out, {"index.json": b"2"})
    assert _snapshot(out) == {"index.json": b"2"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".export.lock", "export"]


def test_second_writer_is_refused_while_one_writes(tmp_path: Path) -> None:
    out = tmp_path / "export"
    with TreeWriter(out, fsync=False), pytest.raises(ExportError, match="another export"):
        TreeWriter(out, fsync=False).__enter__()


def test_refuses_paths_outside_the_tree(tmp_path: Path) -> None:
    with TreeWriter(tmp_path / "export", fsync=False) as w, pytest.raises(ExportError):
        w.write("../escape.json", b"x")
    assert not (tmp_path / "escape.json").exists()


def test_out_must_be_a_directory(tmp_path: Path) -> None:
    out = tmp_path / "export"
    out.write_text("not a dir")
    with pytest.raises(ExportError, match="not a directory"):
        TreeWriter(out).__enter__()


def test_exchange_is_atomic_swap_here(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").touch()
    if not tree_mod._exchange(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) not supported on this filesystem")
    assert os.listdir(b) == ["x"] and os.listdir(a) == []


def test_the_tree_is_readable_whatever_the_umask(tmp_path: Path) -> None:
    """A process owning the embedded store runs with umask 077; its exports stay publishable."""
    out = tmp_path / "export"
    old = os.umask(0o077)
    try:
        _write(out, {"index.json": b"{}", "models/a/b.json": b"{}"})
    finally:
        os.umask(old)
    modes = {str(p.relative_to(out)): p.stat().st_mode & 0o777 for p in out.rglob("*")}
    assert modes == {
        "index.json": 0o644,
        "models": 0o755,
        "models/a": 0o755,
        "models/a/b.json": 0o644,
    }
    assert out.stat().st_mode & 0o777 == 0o755
