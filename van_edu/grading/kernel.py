"""A learner's kernel in its box: run their cells, and ask it questions whose answers are data.

:class:`BoxedKernel` starts a fresh Python kernel (this interpreter, one thread) with nbclient through
:mod:`.box` (the sandbox and the limits), in a fresh temporary folder with its own copy of the course
(:func:`.host.course_copy`) and its channels over IPC sockets in that folder; its environment names
nothing of the grader's (its ``HOME``, caches and temporary files are inside the box).

* :meth:`~BoxedKernel.run` executes one cell with a time limit and a cap on the output kept: an
  exception is recorded and the run goes on; a kernel that swallows the interrupt past the limit, or
  dies (``os._exit``, a crash, out of memory), is replaced and the earlier cells replayed without the
  culprit (:meth:`~BoxedKernel._restart`);
* :meth:`~BoxedKernel.ask` writes a request into the box, runs the agent's probe cell, and returns
  the answer file's text, read as bytes with a size cap (never executed, never unpickled): the
  check that sent the request judges it in the grader's process.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import zmq.asyncio
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient.util import run_sync
from nbformat.v4 import new_code_cell, new_notebook

from ..errors import VanEduError
from .box import find_bwrap
from .host import BOX_PREFIX, claim, course_copy, empty_cgroup, pids_cgroup, read_answer, sweep_once
from .limits import KEPT_OUTPUT, MAX_MESSAGE_MB, MAX_OUTPUT_MB, MAX_RESTARTS, PROBE_TIMEOUT, Limits

__all__ = ["CellRun", "Limits", "BoxedKernel", "KernelLost", "read_answer"]

WARM_UP = ("import torch, van_edu.grading.agent, van_edu.grading.fixtures  "
           "# the grader's own imports, outside the learner's time")
WARM_UP_TIMEOUT = 300

_QUIET = logging.getLogger("van_edu.grading.kernel")
_QUIET.disabled = True  # nbclient's warnings about the learner's kernel: the report says what matters


@dataclass
class CellRun:
    """What happened to one cell."""

    error: tuple[str, str] | None = None   # (exception name, message)
    timed_out: bool = False
    died: bool = False                     # the kernel died while running it
    truncated: bool = False                # it printed more than the output limit
    skipped: str | None = None             # why it was not run at all
    stdout: str = ""


class KernelLost(Exception):
    """A question to the kernel got no answer: it timed out, or the kernel died (and was restarted)."""


class _BoxSpec(KernelSpecManager):
    """Kernels run in the grader's own interpreter, through the box, whatever kernelspecs exist."""

    argv: list = []

    def get_kernel_spec(self, kernel_name):  # in bubblewrap, a signal to the kernel's group would not reach it
        return KernelSpec(argv=self.argv, display_name="Python 3 (grader box)", language="python", resource_dir="",
                          interrupt_mode="message" if "--bwrap" in self.argv else "signal")


class _Client(NotebookClient):
    """nbclient in this interpreter, with caps: a message's size (zmq drops a larger one unread), the
    output kept per cell, and all the output of the notebook (``flooded`` once past it)."""

    def __init__(self, nb, output_limit: int, spec: _BoxSpec, **kw):
        super().__init__(nb, **kw)
        self.output_task = None
        self.output_limit = output_limit
        self.output_used: dict[int, int] = {}
        self.truncated: set[int] = set()
        self.spec = spec
        self.received = 0
        self.zmq = zmq.asyncio.Context()
        self.zmq.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_MB * 2**20)  # for every socket made from it

    @property
    def flooded(self) -> bool:
        return self.received > MAX_OUTPUT_MB * 2**20

    async def _async_poll_output_msg(self, parent_msg_id, cell, cell_index):
        # nbclient leaves this task running after a cell times out, and it would then swallow the
        # next cells' outputs: remember it so that it can be cancelled.
        self.output_task = asyncio.current_task()
        return await super()._async_poll_output_msg(parent_msg_id, cell, cell_index)

    def create_kernel_manager(self):  # its channels: IPC sockets in the box's runtime folder (no network needed)
        runtime = self.spec.runtime
        self.km = self.kernel_manager_class(kernel_name="python3", kernel_spec_manager=self.spec, config=self.config,
                                            transport="ipc", ip=str(runtime / "kernel"),
                                            connection_file=str(runtime / "kernel.json"))
        make_client = self.km.client
        self.km.client = lambda **kw: make_client(context=self.zmq, **kw)  # the capped sockets
        return self.km

    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content")
        if not isinstance(content, dict):
            return None  # a malformed message (the learner's code can send anything): dropped
        if msg["msg_type"] == "stream":
            if not isinstance(content.get("text"), str):
                return None
            size = len(content["text"])
        else:
            data = content.get("data")
            size = sum(len(str(v)) for v in data.values()) if isinstance(data, dict) else 0
        before = self.output_used.get(cell_index, 0)
        self.output_used[cell_index] = before + size
        self.received += size
        if before + size > self.output_limit and msg["msg_type"] != "error":
            self.truncated.add(cell_index)
            if msg["msg_type"] != "stream" or before >= self.output_limit:
                return None  # dropped: only the first output_limit characters are kept
            content["text"] = content["text"][: self.output_limit - before] + "\n[output truncated by the grader]\n"
        return super().output(outs, msg, display_id, cell_index)


class BoxedKernel:
    """One submission's kernel, in a fresh folder; use as a context manager."""

    def __init__(self, notebook_name: str, notebook_text: str, limits: Limits | None = None,
                 hide: list[Path] | None = None, hidden_code=()):
        self.limits = limits or Limits()
        self.bwrap, self.no_bwrap = find_bwrap() if self.limits.sandbox != "landlock" else ([], "--sandbox landlock")
        self.hide = [Path(h) for h in (hide or [])]
        sweep_once(tempfile.gettempdir())  # what killed graders left
        self.root = Path(tempfile.mkdtemp(prefix=BOX_PREFIX))
        claim(self.root, None)
        course_copy(self.root / "course", hidden_code)
        self.box = self.root / "box"
        self.box.mkdir()
        (self.box / Path(notebook_name).name).write_text(notebook_text, encoding="utf-8")
        (self.root / "runtime").mkdir()
        self.deadline = time.monotonic() + self.limits.notebook_timeout
        self.steps: list[tuple[str, CellRun]] = []  # (code, what running it did)
        self.never_again: set[int] = set()
        self.restarts = 0
        self.client = self.session = self.cgroup = None
        self.protections: dict = {}

    # ---------------------------------------------------------------- life cycle
    def __enter__(self):
        self._start()
        return self

    def __exit__(self, *exc):
        self._stop()
        shutil.rmtree(self.root, ignore_errors=True)
        return False

    def _env(self) -> dict:
        home = self.box
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "PYTHONHASHSEED")}
        return {**keep, "HOME": str(home), "TMPDIR": str(home), "IPYTHONDIR": str(home / ".ipython"),
                "MPLCONFIGDIR": str(home / ".matplotlib"), "XDG_CACHE_HOME": str(home / ".cache"),
                "HF_HOME": str(home / ".hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "JUPYTER_RUNTIME_DIR": str(self.root / "runtime"), "MPLBACKEND": "agg",
                "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}

    def _argv(self) -> list:
        lim = self.limits
        argv = [sys.executable, "-m", "van_edu.grading.box", "--box", str(self.box), "--course", str(self.root / "course"),
                "--memory", str(lim.memory_mb), "--procs", str(lim.procs), "--file-size", str(lim.file_mb),
                *self.bwrap] + (["--cgroup", str(self.cgroup)] if self.cgroup else [])
        return argv + [arg for h in self.hide for arg in ("--hide", str(h))] + ["-f", "{connection_file}"]

    def _start(self) -> None:
        self.cgroup = pids_cgroup(self.limits.procs) if self.limits.procs > 0 else None
        claim(self.root, self.cgroup)
        spec = _BoxSpec()
        spec.argv, spec.runtime = self._argv(), self.root / "runtime"
        # three spare cells: a probe (does the kernel answer?), the warm-up imports, the box's protections
        self.nb = nb = new_notebook(cells=[new_code_cell("pass"), new_code_cell(WARM_UP), new_code_cell(
            "import os, json; print(os.environ.get('VAN_EDU_BOX', '{}'))")])
        nb.cells[0].metadata["grader_timeout"] = min(PROBE_TIMEOUT, self.limits.timeout)
        nb.cells[1].metadata["grader_timeout"] = max(WARM_UP_TIMEOUT, self.limits.timeout)
        self.client = _Client(nb, self.limits.output_limit, spec, timeout=self.limits.timeout, allow_errors=True,
                              shutdown_kernel="immediate", record_timing=False, log=_QUIET, iopub_timeout=2,
                              timeout_func=lambda c: c.metadata.get("grader_timeout", self.limits.timeout))
        self.client.km = None
        self.session = self.client.setup_kernel(cwd=str(self.box), env=self._env(), stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL)
        try:
            self.session.__enter__()
            self.client.execute_cell(nb.cells[1], 1)
            self.client.execute_cell(nb.cells[2], 2)
            text = "".join(o.get("text", "") for o in nb.cells[2].outputs if o.output_type == "stream")
            self.protections = {**({"no_bwrap": self.no_bwrap} if self.no_bwrap else {}), **json.loads(text.strip() or "{}")}
        except Exception as err:  # the grading environment, not the learner
            self._stop()
            raise VanEduError(f"could not start a Python kernel with the course installed "
                              f"({type(err).__name__}: {err})") from err

    def _stop(self) -> None:
        if self.session is not None:
            with suppress(Exception):  # a kernel that is already gone
                self.session.__exit__(None, None, None)  # shuts the kernel down (immediately)
            self.session = None
        if self.client is not None and not self.client.zmq.closed:
            self.client.zmq.destroy(linger=0)
        empty_cgroup(self.cgroup)
        self.cgroup = None

    def _restart(self) -> None:
        """A fresh kernel with the earlier cells replayed, leaving out those that broke one; none (the kernel
        stays stopped) after MAX_RESTARTS, or once the notebook's time is up: the replays count in it."""
        with suppress(VanEduError):
            while self.restarts < MAX_RESTARTS and self.time_left() > 0:
                self.restarts += 1
                self._stop()
                self._start()
                for i, (code, run) in enumerate(self.steps):
                    if self.time_left() <= 0:
                        break
                    if i in self.never_again or run.timed_out or run.died:
                        continue
                    if not self._execute(code, CellRun()):
                        self.never_again.add(i)
                        break
                else:
                    return
        self._stop()

    # ---------------------------------------------------------------- running code
    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def _execute(self, code: str, run: CellRun) -> bool:
        """Run ``code`` into ``run``; False when the kernel died or ignored the interrupt."""
        cell = new_code_cell(code)
        cell.metadata["grader_timeout"] = max(1, int(min(self.limits.timeout, self.time_left())))
        self.nb.cells.append(cell)
        index = len(self.nb.cells) - 1
        try:
            self.client.execute_cell(cell, index)
        except CellTimeoutError:
            run.timed_out = True
            _record_outputs(run, cell)
            run.error = None  # what it printed before the limit is kept; the time limit is the reason
            return self._recover()
        except DeadKernelError:
            run.died = True
            return False
        except Exception as err:  # a malformed message from the kernel: it is not trusted again
            run.error = ("MalformedMessage", f"the kernel sent the grader a message it could not read "
                                             f"({type(err).__name__}); the kernel was restarted")
            return False
        finally:
            cell.source = ""  # keep the in-memory notebook small
        _record_outputs(run, cell)
        run.truncated = index in self.client.truncated
        cell.outputs = []
        return True

    def _recover(self) -> bool:
        """Interrupt a cell past its time limit; True when the kernel answers again."""
        task = self.client.output_task
        if task is not None and not task.done():
            task.cancel()
        try:
            run_sync(self.client.km.interrupt_kernel)()
            self.client.execute_cell(self.nb.cells[0], 0)
            return True
        except Exception:
            return False

    def run(self, code: str, run: CellRun) -> CellRun:
        """Run one of the notebook's cells into ``run``; never raises for what it does."""
        self.steps.append((code, run))
        flooded = self.client is not None and self.client.flooded
        why = self._stopped() or (f"the notebook printed more than {MAX_OUTPUT_MB} MiB in all" if flooded else None)
        if why:
            run.skipped = f"not run: {why}"
        elif not self._execute(code, run):
            self.never_again.add(len(self.steps) - 1)
            self._restart()
        return run

    def _stopped(self) -> str | None:
        """Why nothing more runs in this notebook, or None."""
        if self.time_left() <= 0:
            return f"the notebook used up its {self.limits.notebook_timeout} s"
        return f"the kernel had to be restarted {MAX_RESTARTS} times" if self.session is None else None

    def ask(self, request: str) -> str:
        """Send the agent a request; its answer text. KernelLost when it gives none."""
        if self._stopped():
            raise KernelLost(self._stopped())
        token = secrets.token_hex(8)
        req, ans = self.box / f".request-{token}.json", self.box / f".answer-{token}.json"
        req.write_text(request, encoding="utf-8")
        code = (f"import van_edu.grading.agent as __van_edu_agent_module__\n"
                f"__van_edu_agent_module__.serve(globals(), {str(req)!r}, {str(ans)!r})")
        run = CellRun()
        alive = self._execute(code, run)
        with suppress(OSError):
            req.unlink()
        if not alive:
            self._restart()
            raise KernelLost("your code killed the Python kernel while it was being checked "
                             "(os._exit, a crash, or out of memory?)" if run.died else
                             f"{run.error[1]}, while your code was being checked" if run.error else
                             f"your code timed out after {self.limits.timeout} s while it was being checked "
                             "and ignored the interrupt")
        if run.timed_out:
            raise KernelLost(f"your code timed out after {self.limits.timeout} s while it was being checked "
                             "(an infinite loop, or far too slow?)")
        if run.truncated:
            raise KernelLost(f"your code printed more than {self.limits.output_limit:,} characters while it was "
                             "being checked; print less")
        text = read_answer(ans)
        with suppress(OSError):
            ans.unlink()
        if text is None:
            reason = f" ({run.error[0]}: {run.error[1][:200]})" if run.error else ""
            raise KernelLost(f"the check got no answer from your kernel{reason}")
        return text


def _kept(text: str) -> str:
    """At most KEPT_OUTPUT characters of a cell's output for the report, saying what was cut."""
    cut = len(text) - KEPT_OUTPUT
    return text if cut <= 0 else text[:KEPT_OUTPUT] + f"\n[{cut:,} more characters cut by the grader]"


def _record_outputs(run: CellRun, cell) -> None:
    stdout = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            run.error = (str(out.get("ename", ""))[:200], _kept(str(out.get("evalue", ""))))
        elif out.get("output_type") == "stream" and out.get("name") == "stdout":
            stdout.append(str(out.get("text", "")))
    run.stdout = _kept(run.stdout + "".join(stdout))
