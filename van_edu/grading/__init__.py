"""Exercises with autograded solutions: the checks learners run, and the grader teachers run.

* ``van_edu.grading.check``: one check per task (``check.eq3_params(eq3_params)``), usable on
  Colab and offline; it needs only torch and ``van_edu``. A check talks to the learner's code
  only through a ``Session`` (``_core``): the ``agent`` runs the code and sends its results back
  as data (``wire``), so the same check is a self-check in a notebook and a verdict in the grader.
* ``van_edu.grading.assign``: nbgrader-style sources -> student and solution copies.
* ``van_edu.grading.grader``: runs a submission in its own box (``kernel``, ``box``: a fresh
  kernel and folder with limits, Landlock on Linux) and judges each task in the grader's process
  (needs nbclient; ``host``: the pids cgroup and the answer files, ``scores``: results, reasons,
  CSV and JSON).

Nothing is imported with the package itself: each name above (and ``grade_folder``, in
``classroom``) loads its module on first use, so ``import van_edu.grading`` costs nothing and the
grader's dependencies (nbclient) load only when grading.
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
