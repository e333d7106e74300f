"""Tests of van_edu.fileio.atomic_write: a reader sees the old file or the new one, never a torn one."""
from __future__ import annotations

import pytest

from van_edu.fileio import atomic_write, atomic_write_text


def test_a_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")
    assert atomic_write_text(target, "new") == target
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_failing_write_keeps_the_old_file_and_removes_its_temporary_file(tmp_path):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old weights")

    def half_then_crash(tmp):
        tmp.write_bytes(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_crash)
    assert target.read_bytes() == b"old weights"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_a_failing_first_write_leaves_nothing(tmp_path):
    def crash(tmp):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "new.txt", crash)
    assert list(tmp_path.iterdir()) == []
