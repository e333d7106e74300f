"""The box a submission's kernel runs in: a sandbox and limits set before the learner's first line.

``python -m van_edu.grading.box --box DIR [limits] -f CONNECTION_FILE`` is the kernel command the
grader starts. Where bubblewrap can run (:func:`find_bwrap`: ``bwrap`` installed, user namespaces
allowed), that command, still on the host, joins the pids cgroup, gives up root for ``nobody``
(when the grader is root) and starts this file again inside ``bwrap`` (:func:`_bwrap_argv`): its own
user, PID, network, IPC and mount namespaces, no capabilities, a new session, a cleared
environment; mounted read-only only the system, the Python installation and its site folders (not
``/opt``, not ``/tmp``, not the installed course, not the teacher's sources, no submission), with
the grader's hidden folders covered by empty ones; its own ``/proc`` (no grader process in it),
``/dev`` and a small ``/tmp``; writable only the box and the folder of the kernel's channels (IPC
sockets: there is no network). Then, in either case, before ipykernel (and so before any learner
code) starts:

* **memory**: ``RLIMIT_AS`` caps the address space (``--memory`` MiB); an allocation past it fails
  with ``MemoryError`` in the learner's cell, and the machine is left alone;
* **processes**: a ``pids`` cgroup with ``pids.max`` when the grader could make one (root, or a
  delegated cgroup), else ``RLIMIT_NPROC`` (the user's current count plus ``--procs``; Linux
  ignores it for root): a fork bomb stops at the limit;
* **files**: ``RLIMIT_FSIZE`` caps a file's size, no core dumps;
* **the course**: the kernel imports the box's copy (``--course``, :func:`.host.course_copy`), not the installed one;
* **Landlock** (Linux 5.13 and later, no privileges needed; the whole box where bubblewrap is
  missing, a second wall inside it otherwise): the kernel may write only inside its box folder and
  its channels' folder, may read only the system, the Python installation and the copy of the
  course (the installed course with its references and checks, the teacher's sources and the
  submissions cannot be read, so not imported either); no TCP (Linux 6.7+); signals and abstract
  Unix sockets cannot reach processes outside the box (Linux 6.12+: the learner's code cannot kill
  or signal the grader); ptrace of the grader is refused.

The protections the kernel got are in its ``VAN_EDU_BOX`` environment variable, read by the grader
before the learner's first cell runs.
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import json
import os
import resource
import shutil
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

__all__ = ["landlock_abi", "find_bwrap", "main"]

NOBODY = 65534                   # the kernel's user in bubblewrap when the grader is root
TMP_MB = 64                      # the box's own /tmp (memory: a tmpfs)
_SYSTEM = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc")

# --- Landlock (include/uapi/linux/landlock.h) -------------------------------------------------
_CREATE, _ADD_RULE, _RESTRICT = 444, 445, 446  # the same numbers on every architecture
_PATH_BENEATH = 1
_FS = {name: 1 << i for i, name in enumerate((
    "EXECUTE", "WRITE_FILE", "READ_FILE", "READ_DIR", "REMOVE_DIR", "REMOVE_FILE", "MAKE_CHAR", "MAKE_DIR",
    "MAKE_REG", "MAKE_SOCK", "MAKE_FIFO", "MAKE_BLOCK", "MAKE_SYM", "REFER", "TRUNCATE", "IOCTL_DEV"))}
_FS_BY_ABI = {1: 13, 2: 14, 3: 15, 4: 15, 5: 16}  # how many of the bits above each ABI knows
_FILE_RIGHTS = _FS["EXECUTE"] | _FS["WRITE_FILE"] | _FS["READ_FILE"] | _FS["TRUNCATE"] | _FS["IOCTL_DEV"]
_TCP = 1 | 2  # bind, connect: handled, and no rule allows either
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1, 2


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def landlock_abi() -> int:
    """The Landlock ABI version this Linux kernel offers (0: none, or not Linux)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        abi = _libc().syscall(_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    except Exception:
        return 0
    return max(0, int(abi))


def _grant(libc, ruleset: int, path: Path, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if not path.is_dir():
            rights &= _FILE_RIGHTS
        attr = _PathBeneath(rights, fd)
        libc.syscall(_ADD_RULE, ruleset, _PATH_BENEATH, ctypes.byref(attr), 0)
    finally:
        os.close(fd)


def _grant_except(libc, ruleset: int, root: Path, rights: int, hidden: list[Path], listing: int) -> None:
    """``rights`` on ``root``'s tree, except under the ``hidden`` paths; on the way, where imports need it
    (a folder of ``sys.path``), the names in a folder (Landlock cannot hide one subfolder's names alone)."""
    inside = [h for h in hidden if h == root or root in h.parents]
    if not inside:
        _grant(libc, ruleset, root, rights)
        return
    if root in inside:
        return
    if str(root) in map(os.path.realpath, sys.path):
        _grant(libc, ruleset, root, listing)  # list it, read nothing in it but the children below
    try:
        children = list(root.iterdir())
    except OSError:
        return
    for child in children:
        _grant_except(libc, ruleset, child, rights, hidden, listing)


def _landlock(writable: list[Path], read_roots: list[Path], hidden: list[Path]) -> int:
    """Restrict this process (and its children) as the module docstring says; the ABI used (0: none)."""
    abi = landlock_abi()
    if abi < 1:
        return 0
    libc = _libc()
    handled = sum(bit for i, bit in enumerate(_FS.values()) if i < _FS_BY_ABI.get(abi, 16))
    attr = _RulesetAttr(handled, _TCP if abi >= 4 else 0, (_SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL) if abi >= 6 else 0)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = libc.syscall(_CREATE, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return 0
    try:
        read = (_FS["EXECUTE"] | _FS["READ_FILE"] | _FS["READ_DIR"]) & handled
        for root in read_roots:
            _grant_except(libc, ruleset, root, read, hidden, _FS["READ_DIR"] & handled)
        for folder in writable:
            _grant(libc, ruleset, folder, handled & ~_FS["EXECUTE"] | _FS["READ_FILE"])
        for dev in ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"):
            _grant(libc, ruleset, Path(dev), (_FS["READ_FILE"] | _FS["WRITE_FILE"] | _FS.get("IOCTL_DEV", 0)) & handled)
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS, required to restrict oneself unprivileged
        if libc.syscall(_RESTRICT, ruleset, 0) != 0:
            return 0
    finally:
        os.close(ruleset)
    return abi


def _read_roots(system=_SYSTEM + ("/proc", "/sys", "/dev", "/opt")) -> list[Path]:
    """What a kernel may read: the ``system`` folders, the Python installation, ``sys.path``."""
    roots = {Path(p) for p in (*system, sys.prefix, sys.base_prefix, sys.exec_prefix)}
    roots |= {Path(p) for p in sys.path if p and os.path.isdir(p)}
    return sorted(r.resolve() for r in roots if r.exists())


# --- bubblewrap -------------------------------------------------------------------------------
@functools.cache
def find_bwrap() -> tuple[list[str], str]:
    """(the ``--bwrap`` arguments of a box here, '') where bubblewrap runs; else ([], why not)."""
    path = shutil.which("bwrap")
    if not path or not sys.platform.startswith("linux"):
        return [], "bwrap is not installed"
    box = ["--bwrap", path] + (["--uid", str(NOBODY)] if os.getuid() == 0 else [])
    probe = _unshare(os.getuid() == 0) + ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
    with suppress(OSError, subprocess.SubprocessError):
        if subprocess.run([path, *probe, sys.executable, "-c", "import ipykernel"], timeout=60,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
            return box, ""
    return [], "bwrap cannot make its namespaces here (user namespaces disabled?)"


def _unshare(root: bool) -> list[str]:
    """Every namespace and no capability; as root no user namespace, and the two capabilities needed to
    become nobody (which then drops them: the kernel has none, ``no_new_privs`` keeps it so)."""
    if not root:
        return ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    return ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]


def _bwrap_argv(bwrap: str, root: bool, box: Path, course: Path, runtime: Path, hidden: list[Path]) -> list[str]:
    """bubblewrap's arguments for the box (module docstring); the command to run inside it follows them."""
    argv = [bwrap, *_unshare(root), "--clearenv", "--size", str(TMP_MB * 2**20), "--tmpfs", "/tmp"]
    for path in _SYSTEM:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
    system = tuple(p for p in _SYSTEM if not os.path.islink(p)) + ("/sys",)
    roots = [r for r in _read_roots(system) if not r.is_relative_to(box.parent)]
    mounts = roots + [course, box, runtime]
    for folder in sorted({a for m in mounts for a in m.parents if not any(a.is_relative_to(r) for r in mounts)} - {Path("/")}):
        argv += ["--perms", "0755", "--dir", str(folder)]  # the folders above a mount (bwrap would make them 0700)
    for root in roots:
        argv += ["--ro-bind", str(root), str(root)]
    for path in hidden:  # the grader's own folders, where a mounted root holds them: covered
        if any(path.is_relative_to(r) for r in roots) and path.is_dir():
            argv += ["--tmpfs", str(path)]
    argv += ["--proc", "/proc", "--dev", "/dev", "--ro-bind", str(course), str(course), "--bind", str(box), str(box),
             "--bind", str(runtime), str(runtime), "--chdir", str(box)]
    for name, value in os.environ.items():
        if not name.startswith("JPY_"):  # the grader's pid, meaningless in the box's PID namespace
            argv += ["--setenv", name, value]
    return argv


def _bwrapped(args, argv: list[str], hidden: list[Path], done: dict) -> None:
    """On the host: give the box to nobody (a root grader; the box's first line becomes nobody), run this
    file again in bubblewrap."""
    box, course, runtime = Path(args.box).resolve(), Path(args.course).resolve(), Path(args.connection_file).parent
    if args.uid is not None:  # never a walk of what the kernel could write: a link there would give away its target
        for folder, _, files in os.walk(course):  # written by the grader, read-only in the box
            for name in [folder, *(os.path.join(folder, f) for f in files)]:
                os.chown(name, args.uid, args.uid, follow_symlinks=False)
        for name in (box, runtime, args.connection_file):
            os.chown(name, args.uid, args.uid, follow_symlinks=False)
    done["sandbox"] = "bubblewrap"
    os.environ["VAN_EDU_BOX"] = json.dumps(done)
    inner = list(argv)
    for flag in ("--bwrap", "--cgroup"):
        if flag in inner:
            del inner[inner.index(flag):inner.index(flag) + 2]
    os.execv(args.bwrap, _bwrap_argv(args.bwrap, args.uid is not None, box, course, runtime.resolve(), hidden)
             + [sys.executable, str(course / "van_edu" / "grading" / "box.py"), *inner])


# --- limits ---------------------------------------------------------------------------------
def _my_task_count() -> int:
    uid, count = os.getuid(), 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with suppress(OSError):
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{pid}/task"))
    return count


def _setrlimit(which, value: int) -> bool:
    """Lower a resource limit; False where the platform does not enforce it (macOS and RLIMIT_AS)."""
    try:
        resource.setrlimit(which, (value, value))
        return True
    except (ValueError, OSError):
        return False


def _join(cgroup: str | None, procs: int) -> dict:
    """On the host: this process into the pids cgroup (its children follow it)."""
    with suppress(OSError):
        Path(cgroup, "cgroup.procs").write_text(str(os.getpid()))
        return {"procs": f"pids cgroup, at most {procs}"}
    return {}


def _limits(memory_mb: int, procs: int, file_mb: int, done: dict) -> dict:
    if memory_mb > 0 and sys.platform.startswith("linux") and _setrlimit(resource.RLIMIT_AS, memory_mb * 2**20):
        done["memory_mb"] = memory_mb
    _setrlimit(resource.RLIMIT_CORE, 0)
    if file_mb > 0 and _setrlimit(resource.RLIMIT_FSIZE, file_mb * 2**20):
        done["file_mb"] = file_mb
    if "procs" not in done and procs > 0 and sys.platform.startswith("linux") and os.getuid() != 0:
        if _setrlimit(resource.RLIMIT_NPROC, _my_task_count() + procs):
            done["procs"] = f"RLIMIT_NPROC, {procs} more than the user has"
    return done


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m van_edu.grading.box")
    parser.add_argument("--box", required=True)
    parser.add_argument("--course", required=True, help="the folder holding the box's copy of van_edu")
    parser.add_argument("--memory", type=int, default=0, help="MiB of address space (0: no limit)")
    parser.add_argument("--procs", type=int, default=0, help="processes and threads (0: no limit)")
    parser.add_argument("--file-size", type=int, default=0, help="MiB per file written (0: no limit)")
    parser.add_argument("--cgroup", help="a pids cgroup folder to join")
    parser.add_argument("--hide", action="append", default=[], help="a folder the kernel may not read")
    parser.add_argument("--bwrap", help="run the kernel in bubblewrap, this bwrap")
    parser.add_argument("--uid", type=int, help="with --bwrap: the user to become first (the grader is root)")
    parser.add_argument("-f", dest="connection_file", required=True)
    argv = sys.argv[1:] if argv is None else argv
    args, rest = parser.parse_known_args(argv)
    box, course, installed = Path(args.box).resolve(), Path(args.course).resolve(), Path(__file__).resolve().parents[1]
    hidden = [installed] * (not installed.is_relative_to(course)) + [Path(h).resolve() for h in args.hide]
    done = _join(args.cgroup, args.procs) if args.cgroup else {}
    if args.bwrap:
        _bwrapped(args, argv, hidden, done)  # does not return
    if args.uid is not None:  # in bubblewrap, as root: become nobody, and so lose the last capabilities
        os.setgroups([])
        os.setgid(args.uid)
        os.setuid(args.uid)
    done = {**json.loads(os.environ.get("VAN_EDU_BOX", "{}")), **done, "uid": os.getuid()}
    done = _limits(args.memory, args.procs, args.file_size, done)
    abi = _landlock([box, Path(args.connection_file).resolve().parent], _read_roots() + [course], hidden)
    if abi:
        done["landlock"] = abi
    os.environ["VAN_EDU_BOX"] = json.dumps(done)
    for name in [m for m in sys.modules if m.split(".")[0] == "van_edu"]:
        del sys.modules[name]  # this launcher's own van_edu: the kernel imports the copy's
    os.chdir(box)
    here = os.path.dirname(os.path.abspath(__file__))  # run as a file in bubblewrap: its folder is not a root
    sys.path[:] = [str(course)] + [p for p in sys.path if p not in ("", ".", here)]
    from ipykernel import kernelapp
    kernelapp.launch_new_instance(argv=["-f", args.connection_file, *rest])


if __name__ == "__main__":
    main()
