"""What the grader does on the host for a submission's box: a pids cgroup, and reading its answers.

* :func:`pids_cgroup` makes a fresh ``pids`` cgroup (cgroup v1 or v2) limited to a number of
  tasks, where this process may (root, or a delegated cgroup); the box's kernel joins it, and
  :func:`empty_cgroup` kills what is left in it and removes it when the kernel stops;
* :func:`read_answer` reads an answer file the kernel wrote: a regular file only (no links, no
  FIFOs that would block), at most a size limit, as text; never executed, never unpickled.
"""
from __future__ import annotations

import os
import secrets
import stat
import time
from pathlib import Path

from . import wire

__all__ = ["pids_cgroup", "empty_cgroup", "read_answer"]


def pids_cgroup(procs: int) -> Path | None:
    """A fresh pids cgroup limited to ``procs`` tasks, where this process may make one (else None)."""
    for base in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if not (base / "cgroup.procs").exists() or (base == Path("/sys/fs/cgroup") and
                                                     "pids" not in _read(base / "cgroup.controllers")):
            continue
        group = base / f"van-edu-grade-{secrets.token_hex(6)}"
        try:
            group.mkdir()
            (group / "pids.max").write_text(str(procs))
            return group
        except OSError:
            try:
                group.rmdir()
            except OSError:
                pass
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def empty_cgroup(group: Path | None) -> None:
    if group is None:
        return
    for _ in range(50):
        pids = [int(p) for p in _read(group / "cgroup.procs").split()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        time.sleep(0.02)
    try:
        group.rmdir()
    except OSError:
        pass


def read_answer(path: Path, limit: int = wire.MAX_BYTES) -> str | None:
    """The text of a regular file the kernel wrote (no links, no FIFOs), or None; at most ``limit`` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
        return data.decode("utf-8", errors="replace") if len(data) <= limit else None
    finally:
        os.close(fd)
