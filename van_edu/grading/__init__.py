"""Exercises with autograded solutions, in five layers, each importing only those before it:

* **authoring** (``assign``, ``python -m van_edu.grading generate|check``): one nbgrader-style
  source per set -> the student and solution copies;
* **protocol** (``agent``, ``wire``, ``fixtures``): what runs in the learner's kernel, and the
  data-only format its answers come back in;
* **checks** (``check``: ``check.eq3_params(eq3_params)``; one ``checks_<topic>.py`` per set on
  ``_core``, comparing with ``reference``): each talks to the learner's code only through a
  ``Session``, so the same check is a self-check in a notebook and a verdict in the grader;
* **sandbox** (``limits``, ``host``, ``box``, ``kernel``): a fresh kernel per submission in its own
  folder, with limits, its own copy of the course, in bubblewrap where it runs, Landlock on Linux;
* **grader** (``grader``, ``scores``, ``classroom``, ``cli``): the plan of a notebook, the verdicts
  judged in the grader's process, the scores, a class with its journal, and ``van-edu grade``.

Nothing is imported with the package itself: each name below loads its module on first use, so
``import van_edu.grading`` costs nothing and the grader's dependencies (nbclient) load only when grading.
"""
from __future__ import annotations

import importlib

__all__ = ["check", "CheckFailed", "grade_notebook", "grade_folder", "generate"]

_LAZY = {"check": ("check", None), "CheckFailed": ("_core", "CheckFailed"),
         "grade_notebook": ("grader", "grade_notebook"), "grade_folder": ("classroom", "grade_folder"),
         "generate": ("assign", "generate")}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'van_edu.grading' has no attribute {name!r}")
    module, attr = _LAZY[name]
    mod = importlib.import_module(f".{module}", __name__)
    return mod if attr is None else getattr(mod, attr)
