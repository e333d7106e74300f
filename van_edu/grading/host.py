"""What the grader does on the host for a submission's box: its copy of the course, a pids cgroup, its answers.

* :func:`course_copy` writes the ``van_edu`` the box's kernel imports (the installed one is hidden
  from it): the course without its grader (``check`` is a stand-in there: the notebook's self-checks
  do nothing, the grader judges from outside), and under ``--forbid-reference`` without the code
  the tasks ask the learner to write, each function or class replaced by a stand-in that raises
  when called or instantiated (its code is not in the copy: nothing in the kernel can bring it back);
* :func:`pids_cgroup` makes the cgroup the kernel joins, :func:`empty_cgroup` kills what is left and removes it;
* :func:`claim` marks a box's folder with the grader process that owns it (and its cgroup), and :func:`sweep`
  removes the folders, cgroups and processes of graders that were killed before they could (SIGKILL, an
  OOM kill, a reboot's leftovers): each grader process sweeps once, before its first box;
* :func:`read_answer` reads an answer file the kernel wrote, as text; never executed, never unpickled.
"""
from __future__ import annotations

import ast
import functools
import json
import os
import re
import secrets
import shutil
import stat
import time
from contextlib import suppress
from pathlib import Path

from ..errors import VanEduError
from . import wire

__all__ = ["course_copy", "pids_cgroup", "empty_cgroup", "claim", "sweep", "read_answer"]

BOX_PREFIX = "van-edu-grade-"  # a box folder's name, and a cgroup's
OWNER = "owner.json"  # in a box folder, beside (not in) what the kernel may write

BOX_SIDE = ("__init__.py", "agent.py", "wire.py", "fixtures.py", "box.py")  # all of van_edu.grading a kernel gets
_CHECK = '''"""Self-checks, replaced while grading (they judge nothing: the grader checks each task from outside)."""
CheckFailed = type("CheckFailed", (AssertionError,), {})


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return lambda *args, **kwargs: print(f"(check.{name} is not run while grading: the grader checks it from outside)")
'''
_STAND_IN = """class {name}:  # hidden while grading with --forbid-reference
    def __new__(cls, *args, **kwargs):
        raise RuntimeError("the course's {full} is hidden while grading (--forbid-reference): write your own")"""


def course_copy(dest: Path, hidden=()) -> None:
    """``dest/van_edu``, a copy of the course for a box without the grader and the ``hidden`` objects
    (``van_edu.lka.LKA``: top-level functions and classes, named where they are defined)."""
    package = Path(__file__).resolve().parents[1]
    strip: dict[str, set[str]] = {}
    for full in hidden:
        strip.setdefault(full.rsplit(".", 1)[0], set()).add(full.rsplit(".", 1)[1])
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if "__pycache__" in rel.parts or (rel.parts[0] == "grading" and rel.name not in BOX_SIDE):
            continue
        module = ".".join(("van_edu", *rel.with_suffix("").parts)).removesuffix(".__init__")
        text = _without(path.read_text(encoding="utf-8"), module, strip.pop(module, set()))
        (dest / "van_edu" / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / "van_edu" / rel).write_text(text, encoding="utf-8")
    if strip:
        raise VanEduError(f"a check hides code of modules van_edu does not have: {sorted(strip)}")
    (dest / "van_edu" / "grading" / "check.py").write_text(_CHECK, encoding="utf-8")


def _without(text: str, module: str, names: set[str]) -> str:
    """A module's source with the top-level definitions of ``names`` replaced by stand-ins."""
    if not names:
        return text
    spans = {node.name: (min([node.lineno] + [d.lineno for d in node.decorator_list]), node.end_lineno)
             for node in ast.parse(text).body
             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in names}
    if names - set(spans):
        raise VanEduError(f"a check hides {sorted(names - set(spans))}, which {module} does not define")
    lines = text.split("\n")
    for name, (start, end) in sorted(spans.items(), key=lambda item: -item[1][0]):
        lines[start - 1:end] = [_STAND_IN.format(name=name, full=f"{module}.{name}")]
    return "\n".join(lines)


def pids_cgroup(procs: int) -> Path | None:
    """A fresh pids cgroup (v1 or v2) of at most ``procs`` tasks where this process may (root, delegated), else None."""
    for base in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if not (base / "cgroup.procs").exists() or (base == Path("/sys/fs/cgroup") and
                                                     "pids" not in _read(base / "cgroup.controllers")):
            continue
        group = base / f"{BOX_PREFIX}{secrets.token_hex(6)}"
        try:
            group.mkdir()
            (group / "pids.max").write_text(str(procs))
            return group
        except OSError:
            with suppress(OSError):
                group.rmdir()
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
            with suppress(OSError):
                os.kill(pid, 9)
        time.sleep(0.02)
    with suppress(OSError):
        group.rmdir()


def _started(pid: int) -> str | None:
    """When a live process started (clock ticks since boot, from ``/proc``; with its pid it names the process
    for good); None where there is no ``/proc`` entry, or the process has ended (a zombie)."""
    fields = _read(Path(f"/proc/{pid}/stat")).rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 and fields[0] not in "ZX" else None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        pass
    if started is None or not Path("/proc/self/stat").exists():  # no /proc here: what kill() said
        return True
    return _started(pid) == started  # ended, or a reused pid (another process)


def claim(root: Path, cgroup: Path | None) -> None:
    """Write into the box folder ``root`` which process owns it, and its current cgroup (see :func:`sweep`)."""
    record = {"pid": os.getpid(), "started": _started(os.getpid()), "cgroup": str(cgroup) if cgroup else None}
    (root / OWNER).write_text(json.dumps(record), encoding="utf-8")


def sweep(tmp: Path) -> list[Path]:
    """Remove the box folders in ``tmp`` (this user's) whose grader process is gone: first the processes still
    running in them (their cgroup's, and any whose working folder is inside), then the cgroup, then the folder.
    Returns the folders removed. A folder without an owner record is left alone."""
    removed = []
    for root in sorted(Path(tmp).glob(f"{BOX_PREFIX}*")):
        try:
            owner = json.loads((root / OWNER).read_text(encoding="utf-8"))
            if root.stat().st_uid != os.getuid() or _alive(int(owner["pid"]), owner.get("started")):
                continue
        except (OSError, ValueError, KeyError, TypeError):
            continue
        group = str(owner.get("cgroup") or "")
        if re.fullmatch(rf"/sys/fs/cgroup(/pids)?/{BOX_PREFIX}[0-9a-f]{{12}}", group):
            empty_cgroup(Path(group))
        for proc in Path("/proc").glob("[0-9]*"):
            with suppress(OSError, ValueError):
                if Path(os.readlink(proc / "cwd")).is_relative_to(root):
                    os.kill(int(proc.name), 9)
        shutil.rmtree(root, ignore_errors=True)
        removed.append(root)
    return removed


@functools.cache
def sweep_once(tmp: str) -> list[Path]:
    """:func:`sweep`, once per process."""
    return sweep(Path(tmp))


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
