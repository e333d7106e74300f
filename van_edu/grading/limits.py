"""The grader's limits and their defaults (a module of their own, so that the CLI loads without nbclient)."""
from dataclasses import dataclass

DEFAULT_TIMEOUT = 60             # seconds per cell, and per question a check asks the kernel
DEFAULT_NOTEBOOK_TIMEOUT = 900   # seconds for a whole notebook, its checks included
DEFAULT_OUTPUT_LIMIT = 100_000   # characters of output per cell
DEFAULT_MEMORY_MB = 4096         # address space of a submission's kernel (set 06's checks peak at 1.4 GiB)
DEFAULT_PROCS = 64               # processes and threads of a submission's kernel
DEFAULT_FILE_MB = 256            # size of any one file a submission writes
PROBE_TIMEOUT = 10               # seconds an interrupted kernel gets to answer again
MAX_RESTARTS = 4                 # fresh kernels per notebook after crashes or ignored interrupts
MAX_MESSAGE_MB = 16              # one kernel message (zmq drops a larger one unread; a real one: < 1 MB)
MAX_OUTPUT_MB = 64               # all of a notebook's output messages together; later cells are not run
KEPT_OUTPUT = 2000               # characters of a cell's printed output (and error) kept in the report
MAX_NOTEBOOK_MB = 64             # a submitted file larger than this is not read


@dataclass
class Limits:
    """What one submission may use. Times in seconds; 0 switches a size limit off."""

    timeout: int = DEFAULT_TIMEOUT                    # per cell (and per check's question)
    notebook_timeout: int = DEFAULT_NOTEBOOK_TIMEOUT  # for the whole notebook, checks included
    output_limit: int = DEFAULT_OUTPUT_LIMIT          # characters of output kept per cell
    memory_mb: int = DEFAULT_MEMORY_MB                # address space of the kernel
    procs: int = DEFAULT_PROCS                        # processes and threads
    file_mb: int = DEFAULT_FILE_MB                    # size of one file written
    landlock: bool = True                             # files, network and signals (Linux)
