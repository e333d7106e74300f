"""The grader's default limits (a module of their own, so that the CLI loads without nbclient)."""
DEFAULT_TIMEOUT = 60             # seconds per cell, and per question a check asks the kernel
DEFAULT_NOTEBOOK_TIMEOUT = 900   # seconds for a whole notebook, its checks included
DEFAULT_OUTPUT_LIMIT = 100_000   # characters of output per cell
DEFAULT_MEMORY_MB = 4096         # address space of a submission's kernel (set 06's checks peak at 1.4 GiB)
DEFAULT_PROCS = 64               # processes and threads of a submission's kernel
DEFAULT_FILE_MB = 256            # size of any one file a submission writes
PROBE_TIMEOUT = 10               # seconds an interrupted kernel gets to answer again
MAX_RESTARTS = 4                 # fresh kernels per notebook after crashes or ignored interrupts
