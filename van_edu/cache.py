"""The decoded-tensor cache: a split decoded once is saved with ``torch.save`` and served again.

Decoded splits are cached in ``~/.cache/van_edu`` (``VAN_EDU_CACHE`` moves it; ``VAN_EDU_CACHE=off``
turns it off), one file per (source, split, size), keyed by the source files' paths, sizes and
modification times: a changed file is decoded again, never served stale. Files are written with
``fileio.atomic_write``, so a reader never sees half of one.
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path

import torch

from .fileio import atomic_write
from .images import ImageData
from .sources import Source

__all__ = ["TensorCache", "folder_files", "files_digest"]

_CACHE_VERSION = 1


def _cache_dir() -> Path | None:
    """The cache folder (``VAN_EDU_CACHE``, else ``$XDG_CACHE_HOME/van_edu`` or ``~/.cache/van_edu``);
    None when the cache is turned off."""
    value = os.environ.get("VAN_EDU_CACHE", "")
    if value.lower() in {"0", "off", "false", "no"}:
        return None
    if value:
        return Path(value).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "van_edu"


def folder_files(folder: Path) -> list[Path]:
    """Every file of a local dataset folder, hidden ones excepted, in a stable order."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def files_digest(files: list[Path]) -> str:
    """sha256 over the files' resolved paths, sizes and modification times ("" for no files)."""
    if not files:
        return ""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


class TensorCache:
    """One cache file per (source, split, size); it holds the key of the files it was made from."""

    def __init__(self, source: Source, split: str, size: int | None):
        self.source, self.split, self.size, self.key = source, split, size, None
        root = _cache_dir()
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source.path).name or "data")
        where = hashlib.sha256(f"{source.path}|{source.config}".encode()).hexdigest()[:10]
        self.file = root / f"{slug}-{where}-{split}-{size or 'orig'}.pt" if root else None

    def set_key(self, digest: str) -> None:
        """Key = the source files' digest (``files_digest``) + what shapes the tensors; none when
        there are no files."""
        if digest:
            self.key = hashlib.sha256(
                f"v{_CACHE_VERSION}|{self.split}|{self.size}|{digest}".encode()).hexdigest()

    def read(self) -> ImageData | None:
        """The cached split if its file holds this key, else None (also when it cannot be read)."""
        if self.file is None or self.key is None or not self.file.is_file():
            return None
        try:
            stored = torch.load(self.file, weights_only=True)
        except Exception:                                      # unreadable: decode again
            return None
        if stored.get("key") != self.key:
            return None
        return ImageData(stored["images"], stored["labels"], stored["classes"], self.source.name)

    def write(self, data: ImageData) -> None:
        """Save the split under this key; a folder that cannot be written only warns."""
        if self.file is None or self.key is None:
            return
        stored = {"key": self.key, "images": data.images, "labels": data.labels, "classes": data.classes}
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.file, lambda tmp: torch.save(stored, tmp))
        except OSError as error:
            warnings.warn(f"van_edu: could not write the decoded-data cache {self.file}: {error}", stacklevel=2)
