"""The checks the exercise notebooks call, one per task: ``check.<task>(your_answer)``.

Each compares the learner's function or class with the reference on fixed inputs (and, with
``hidden=True``, on more and random ones, as the grader's hidden tests do), prints ``PASS`` or
``FAIL`` with a reason, and raises on failure so that a notebook cell, and the grader, see it.
Every ``checks_<topic>.py`` beside this module (one per exercise set) is found and its
:func:`~._core.task_check` functions registered: a new set needs a file, nothing more here.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from ._core import CheckFailed, TaskCheck

CHECKS = {c.task: c for path in sorted(Path(__file__).parent.glob("checks_*.py"))
          for c in vars(importlib.import_module(f".{path.stem}", __package__)).values() if isinstance(c, TaskCheck)}
globals().update(CHECKS)

__all__ = ["CheckFailed", "CHECKS", *CHECKS]
