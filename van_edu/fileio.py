"""Writing files so that a reader never sees half of one: the one home of atomic writes.

Every file the course writes that another run may read (training checkpoints, histories, the
decoded-data cache, fetched course files, reports) goes through ``atomic_write``: the content is
written to a temporary file in the same folder, which is then renamed over the target with
``os.replace``. A crash or an interrupt leaves either the old file or the new one, never a torn one.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "atomic_write_text"]


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
