"""The grader's limits and their defaults (a module of their own, so that the CLI loads without nbclient)."""
from dataclasses import dataclass

PROBE_TIMEOUT = 10               # seconds an interrupted kernel gets to answer again
MAX_RESTARTS = 4                 # fresh kernels per notebook after crashes or ignored interrupts
MAX_MESSAGE_MB = 16              # one kernel message (zmq drops a larger one unread; a real one: < 1 MB)
MAX_OUTPUT_MB = 64               # all of a notebook's output messages together; later cells are not run
KEPT_OUTPUT = 2000               # characters of a cell's printed output (and error) kept in the report
MAX_NOTEBOOK_MB = 64             # a submitted file larger than this is not read


@dataclass
class Limits:
    """What one submission may use. Times in seconds; 0 switches a size limit off."""

    timeout: int = 60             # per cell, and per question a check asks the kernel
    notebook_timeout: int = 900   # for the whole notebook, its checks and replays included
    output_limit: int = 100_000   # characters of output kept per cell
    memory_mb: int = 4096         # address space of the kernel (set 06's checks peak at 1.4 GiB)
    procs: int = 64               # processes and threads
    file_mb: int = 256            # size of any one file written
    sandbox: str = "auto"         # "bwrap" (bubblewrap), "landlock" (the fallback), "auto": bwrap where it runs
