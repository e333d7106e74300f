"""The box a submission's kernel runs in: limits set before the learner's first line, then the kernel.

``python -m van_edu.grading.box --box DIR [limits] -f CONNECTION_FILE`` is the kernel command the
grader starts. In that process, before ipykernel (and so before any learner code) starts:

* **memory**: ``RLIMIT_AS`` caps the address space (``--memory`` MiB); an allocation past it fails
  with ``MemoryError`` in the learner's cell, and the machine is left alone;
* **processes**: a ``pids`` cgroup with ``pids.max`` when the grader could make one (root, or a
  delegated cgroup), else ``RLIMIT_NPROC`` (the user's current count plus ``--procs``; Linux
  ignores it for root): a fork bomb stops at the limit;
* **files**: ``RLIMIT_FSIZE`` caps a file's size, no core dumps;
* **the course**: the kernel imports the box's own copy of ``van_edu`` (``--course``, made by
  :func:`.host.course_copy`: the agent, the wire format and the fixtures of the grader, and under
  ``--forbid-reference`` not the code the tasks ask for); the installed ``van_edu`` is hidden;
* **Landlock** (Linux 5.13 and later, no privileges needed): the kernel may write only inside its
  box folder, may read only the system, the Python installation and the copy of the course (the
  installed course with its references and checks, the teacher's sources and the submissions
  cannot be read, so not imported either); TCP is limited to
  binding the kernel's own ports (Linux 6.7+: no connection anywhere, so no network); signals
  and abstract Unix sockets cannot reach processes outside the box (Linux 6.12+: the learner's
  code cannot kill or signal the grader); ptrace of the grader is refused.

The protections the kernel got are in its ``VAN_EDU_BOX`` environment variable, read by the grader
before the learner's first cell runs.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import sys
from contextlib import suppress
from pathlib import Path

__all__ = ["landlock_abi", "main"]

# --- Landlock (include/uapi/linux/landlock.h) -------------------------------------------------
_CREATE, _ADD_RULE, _RESTRICT = 444, 445, 446  # the same numbers on every architecture
_PATH_BENEATH, _NET_PORT = 1, 2
_FS = {name: 1 << i for i, name in enumerate((
    "EXECUTE", "WRITE_FILE", "READ_FILE", "READ_DIR", "REMOVE_DIR", "REMOVE_FILE", "MAKE_CHAR", "MAKE_DIR",
    "MAKE_REG", "MAKE_SOCK", "MAKE_FIFO", "MAKE_BLOCK", "MAKE_SYM", "REFER", "TRUNCATE", "IOCTL_DEV"))}
_FS_BY_ABI = {1: 13, 2: 14, 3: 15, 4: 15, 5: 16}  # how many of the bits above each ABI knows
_FILE_RIGHTS = _FS["EXECUTE"] | _FS["WRITE_FILE"] | _FS["READ_FILE"] | _FS["TRUNCATE"] | _FS["IOCTL_DEV"]
_BIND_TCP, _CONNECT_TCP = 1, 2
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1, 2


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPort(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


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
    """``rights`` on ``root``'s tree, except under the ``hidden`` paths (listing only on the way)."""
    inside = [h for h in hidden if h == root or root in h.parents]
    if not inside:
        _grant(libc, ruleset, root, rights)
        return
    if root in inside:
        return
    _grant(libc, ruleset, root, listing)  # list it, read nothing in it but the children below
    try:
        children = list(root.iterdir())
    except OSError:
        return
    for child in children:
        _grant_except(libc, ruleset, child, rights, hidden, listing)


def _landlock(box: Path, read_roots: list[Path], hidden: list[Path], ports: list[int], connection_file: Path) -> int:
    """Restrict this process (and its children) as the module docstring says; the ABI used (0: none)."""
    abi = landlock_abi()
    if abi < 1:
        return 0
    libc = _libc()
    handled = sum(bit for i, bit in enumerate(_FS.values()) if i < _FS_BY_ABI.get(abi, 16))
    net = (_BIND_TCP | _CONNECT_TCP) if abi >= 4 else 0
    scoped = (_SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL) if abi >= 6 else 0
    attr = _RulesetAttr(handled, net, scoped)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = libc.syscall(_CREATE, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return 0
    try:
        read = (_FS["EXECUTE"] | _FS["READ_FILE"] | _FS["READ_DIR"]) & handled
        listing = _FS["READ_DIR"] & handled
        for root in read_roots:
            _grant_except(libc, ruleset, root, read, hidden, listing)
        _grant(libc, ruleset, connection_file, (_FS["READ_FILE"] | _FS["WRITE_FILE"] | _FS["TRUNCATE"]) & handled)
        _grant(libc, ruleset, box, handled & ~_FS["EXECUTE"] | _FS["READ_FILE"])
        for dev in ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"):
            _grant(libc, ruleset, Path(dev), (_FS["READ_FILE"] | _FS["WRITE_FILE"] | _FS.get("IOCTL_DEV", 0)) & handled)
        if net:
            for port in ports:
                rule = _NetPort(_BIND_TCP, port)
                libc.syscall(_ADD_RULE, ruleset, _NET_PORT, ctypes.byref(rule), 0)
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS, required to restrict oneself unprivileged
        if libc.syscall(_RESTRICT, ruleset, 0) != 0:
            return 0
    finally:
        os.close(ruleset)
    return abi


def _read_roots() -> list[Path]:
    roots = {Path(p) for p in ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/proc", "/sys",
                               "/dev", "/opt")}
    roots |= {Path(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    roots |= {Path(p) for p in sys.path if p and os.path.isdir(p)}
    return sorted(r.resolve() for r in roots if r.exists())


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


def _limits(memory_mb: int, procs: int, file_mb: int, cgroup: str | None) -> dict:
    done = {}
    if memory_mb > 0 and sys.platform.startswith("linux") and _setrlimit(resource.RLIMIT_AS, memory_mb * 2**20):
        done["memory_mb"] = memory_mb
    _setrlimit(resource.RLIMIT_CORE, 0)
    if file_mb > 0 and _setrlimit(resource.RLIMIT_FSIZE, file_mb * 2**20):
        done["file_mb"] = file_mb
    if cgroup:
        try:
            Path(cgroup, "cgroup.procs").write_text(str(os.getpid()))
            done["procs"] = f"pids cgroup, at most {procs}"
        except OSError:
            cgroup = None
    if not cgroup and procs > 0 and sys.platform.startswith("linux") and os.getuid() != 0:
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
    parser.add_argument("--landlock", type=int, default=1)
    parser.add_argument("-f", dest="connection_file", required=True)
    args, rest = parser.parse_known_args(argv)
    box = Path(args.box).resolve()
    done = _limits(args.memory, args.procs, args.file_size, args.cgroup)
    course, installed = Path(args.course).resolve(), Path(__file__).resolve().parents[1]
    if args.landlock:
        info = json.loads(Path(args.connection_file).read_text(encoding="utf-8"))
        ports = [int(info[k]) for k in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
                 if info.get(k)]
        hidden = [installed] + [Path(h).resolve() for h in args.hide]
        abi = _landlock(box, _read_roots() + [course], hidden, ports, Path(args.connection_file).resolve())
        if abi:
            done["landlock"] = abi
    os.environ["VAN_EDU_BOX"] = json.dumps(done)
    for name in [m for m in sys.modules if m.split(".")[0] == "van_edu"]:
        del sys.modules[name]  # this launcher's own van_edu: the kernel imports the copy's
    os.chdir(box)
    sys.path[:] = [str(course)] + [p for p in sys.path if p not in ("", ".")]
    from ipykernel import kernelapp
    kernelapp.launch_new_instance(argv=["-f", args.connection_file, *rest])


if __name__ == "__main__":
    main()
