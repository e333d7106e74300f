"""Running code cells in a fresh kernel so that nothing a learner writes can stop the run.

``run_cells`` executes cells one by one in a Python kernel (this interpreter, one thread) with
nbclient, each with a time limit and a cap on the output kept:

* an exception is recorded and the next cell runs (``allow_errors``);
* a cell past its time limit is interrupted; if the kernel does not answer a probe within a few
  seconds (the code swallowed the interrupt), or if the kernel dies (``os._exit``, a crash, out of
  memory), a fresh kernel is started, the earlier cells are replayed without the culprit, and the
  run goes on;
* output beyond the cap is dropped (the first characters are kept) and the cell is flagged.
"""
from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from dataclasses import dataclass

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient.util import run_sync
from nbformat.v4 import new_code_cell, new_notebook

from ..errors import VanEduError
from .limits import MAX_RESTARTS, PROBE_TIMEOUT

__all__ = ["CellRun", "run_cells"]

WARM_UP = "import torch, van_edu.grading.check  # the grader's own imports, outside the learner's time"
WARM_UP_TIMEOUT = 300

_QUIET = logging.getLogger("van_edu.grading.kernel")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


@dataclass
class CellRun:
    """What happened to one cell."""

    error: tuple[str, str] | None = None   # (exception name, message)
    timed_out: bool = False
    died: bool = False                     # the kernel died while running it
    truncated: bool = False                # it printed more than the output limit
    skipped: str | None = None             # why it was not run at all
    stdout: str = ""


class _ThisPython(KernelSpecManager):
    """Kernels run in the grader's own interpreter, whatever kernelspecs the machine has."""

    def get_kernel_spec(self, kernel_name):
        return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                          display_name="Python 3 (grader)", language="python", resource_dir="")


class _Client(NotebookClient):
    """nbclient with a cap on the output kept per cell, in this interpreter."""

    def __init__(self, nb, output_limit: int, **kw):
        super().__init__(nb, **kw)
        self.output_task = None
        self.output_limit = output_limit
        self.output_used: dict[int, int] = {}
        self.truncated: set[int] = set()

    async def _async_poll_output_msg(self, parent_msg_id, cell, cell_index):
        # nbclient leaves this task running after a cell times out, and it would then swallow the
        # next cells' outputs: remember it so that it can be cancelled.
        self.output_task = asyncio.current_task()
        return await super()._async_poll_output_msg(parent_msg_id, cell, cell_index)

    def create_kernel_manager(self):
        self.km = self.kernel_manager_class(kernel_name="python3", kernel_spec_manager=_ThisPython(),
                                            config=self.config)
        return self.km

    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content", {})
        if msg["msg_type"] == "stream":
            size = len(content.get("text", ""))
        else:
            size = sum(len(str(v)) for v in content.get("data", {}).values())
        before = self.output_used.get(cell_index, 0)
        self.output_used[cell_index] = before + size
        if before + size > self.output_limit and msg["msg_type"] != "error":
            self.truncated.add(cell_index)
            if msg["msg_type"] != "stream" or before >= self.output_limit:
                return None  # dropped: only the first output_limit characters are kept
            content["text"] = content["text"][: self.output_limit - before] + "\n[output truncated by the grader]\n"
        return super().output(outs, msg, display_id, cell_index)


class _Restart(Exception):
    """The kernel died or ignored an interrupt: start a fresh one and replay the cells before."""


def _kernel_env() -> dict:
    # One thread: exercises use tiny tensors, and several threads only fight on a busy machine.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_cells(codes: list[str], timeout: int, output_limit: int, cwd: str,
              replayable: list[bool] | None = None) -> list[CellRun]:
    """Run ``codes`` in order in a fresh kernel; one ``CellRun`` per cell, never an exception from
    the code itself. ``replayable[i]`` says whether cell ``i`` is re-run after a kernel restart."""
    runs = [CellRun() for _ in codes]
    replayable = replayable or [True] * len(codes)
    never_again: set[int] = set()  # cells that killed or hung a kernel
    done, restarts = 0, 0
    while done < len(codes):
        # the cells, then two spare ones: a probe (does the kernel answer?) and the warm-up imports
        nb = new_notebook(cells=[new_code_cell(c) for c in codes] + [new_code_cell("pass"), new_code_cell(WARM_UP)])
        probe, warm = len(codes), len(codes) + 1
        nb.cells[probe].metadata["grader_timeout"] = min(PROBE_TIMEOUT, timeout)
        nb.cells[warm].metadata["grader_timeout"] = max(WARM_UP_TIMEOUT, timeout)
        client = _Client(nb, output_limit, timeout=timeout, allow_errors=True, shutdown_kernel="immediate",
                         timeout_func=lambda c: c.metadata.get("grader_timeout", timeout),
                         record_timing=False, log=_QUIET, iopub_timeout=2)
        session = client.setup_kernel(cwd=cwd, env=_kernel_env(), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        try:
            session.__enter__()
            client.execute_cell(nb.cells[warm], warm)
        except Exception as err:  # the grading environment, not the learner
            _shutdown(session)
            raise VanEduError(f"could not start a Python kernel with the course installed "
                              f"({type(err).__name__}: {err})") from err
        try:
            for i in range(done):  # replay after a restart, leaving out what broke the kernel
                if i in never_again or not replayable[i] or runs[i].timed_out:
                    continue
                if not _run_cell(client, nb, i, probe, CellRun()):
                    never_again.add(i)
                    raise _Restart
            while done < len(codes):
                i, done = done, done + 1
                if not _run_cell(client, nb, i, probe, runs[i]):
                    never_again.add(i)
                    raise _Restart
        except _Restart:
            restarts += 1
            if restarts > MAX_RESTARTS:
                for run in runs[done:]:
                    run.skipped = f"not run: the kernel had to be restarted {MAX_RESTARTS} times"
                break
        finally:
            _shutdown(session)
    return runs


def _run_cell(client, nb, i: int, probe: int, run: CellRun) -> bool:
    """Run cell ``i`` into ``run``; False when the kernel died or ignored the interrupt."""
    try:
        client.execute_cell(nb.cells[i], i)
    except CellTimeoutError:
        run.timed_out = True
        _record_outputs(run, nb.cells[i])
        run.error = None  # what it printed before the limit is kept; the time limit is the reason
        return _recover(client, nb, probe)
    except DeadKernelError:
        run.died = True
        return False
    _record_outputs(run, nb.cells[i])
    run.truncated = i in client.truncated
    return True


def _record_outputs(run: CellRun, cell) -> None:
    for out in cell.get("outputs", []):
        if out.output_type == "error":
            run.error = (out.ename, out.evalue)
        elif out.output_type == "stream" and out.name == "stdout":
            run.stdout += out.text


def _recover(client, nb, probe: int) -> bool:
    """Interrupt a cell past its time limit; True when the kernel answers again."""
    if client.output_task is not None and not client.output_task.done():
        client.output_task.cancel()
    try:
        run_sync(client.km.interrupt_kernel)()
        client.execute_cell(nb.cells[probe], probe)
        return True
    except Exception:
        return False


def _shutdown(session) -> None:
    try:
        session.__exit__(None, None, None)  # shuts the kernel down (immediately)
    except Exception:  # a kernel that is already gone
        pass
