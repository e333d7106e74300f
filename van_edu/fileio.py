"""Writing files so that a reader never sees half of one: the one home of atomic writes.

``check_output_dir`` and ``check_output_file`` say before a long job whether its results could be
written where it was asked to put them, so that the job is not lost at the end.

Every file the course writes that another run may read (training checkpoints, histories, the
decoded-data cache, reports) goes through ``atomic_write``: the content is
written to a temporary file in the same folder, which is then renamed over the target with
``os.replace``. A crash or an interrupt leaves either the old file or the new one, never a torn one.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import VanEduError

__all__ = ["atomic_write", "atomic_write_text", "check_output_dir", "check_output_file"]


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary path next to ``path``, then rename it to ``path``.

    The folder must exist. If ``write`` raises, the temporary file is removed and the error
    propagates; ``path`` is untouched. Returns ``path``.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    """``atomic_write`` of a UTF-8 text."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))



def check_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """Raise VanEduError unless ``path`` is a writable folder or one that can be made: no file in
    its place or above it. Creates nothing; returns ``path`` as a Path."""
    path = Path(path).expanduser()
    _check_writable(path, path, what, "a folder, or a path where one can be made")
    return path


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """Raise VanEduError unless a file can be written at ``path`` (its missing folders made): not
    a folder, and no file where a folder above it would go. Creates nothing; returns a Path."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise VanEduError(f"{what} {str(path)!r} is a folder (expected the path of a file, e.g. "
                          f"{str(path / 'out.json')!r})")
    if path.exists() and not path.is_file():
        raise VanEduError(f"{what} {str(path)!r} is not a regular file (expected the path of a file)")
    _check_writable(path.parent, path, what, "the path of a file in a folder you can write to")
    return path


def _check_writable(folder: Path, target: Path, what: str, expected: str) -> None:
    """``folder`` is, or can be made as, a folder that can be written in; errors name ``target``."""
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        where = "is a file" if existing == target else f"cannot be made: {existing} is a file"
        raise VanEduError(f"{what} {str(target)!r} {where} (expected {expected})")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise VanEduError(f"{what} {str(target)!r} cannot be written: no permission to write in "
                          f"{existing} (expected {expected})")
