"""Tests of van_edu.fileio: atomic_write (a reader sees the old file or the new one, never a torn one)
and the checks that a job's results can be written before the job runs."""
from __future__ import annotations

import pytest

from van_edu.errors import VanEduError
from van_edu.fileio import atomic_write, atomic_write_text, check_output_dir, check_output_file


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


def test_output_checks_refuse_files_in_the_way_and_create_nothing(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep")
    assert check_output_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert check_output_file(tmp_path / "new" / "bench.json") == tmp_path / "new" / "bench.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]       # nothing made
    with pytest.raises(VanEduError, match=r"out_dir '.*notes.txt' is a file \(expected a folder"):
        check_output_dir(blocker, "out_dir")
    with pytest.raises(VanEduError, match="cannot be made: .*notes.txt is a file"):
        check_output_dir(blocker / "run")
    with pytest.raises(VanEduError, match="is a folder"):
        check_output_file(tmp_path)
    with pytest.raises(VanEduError, match="cannot be made: .*notes.txt is a file"):
        check_output_file(blocker / "bench.json")
    assert blocker.read_text() == "keep"
