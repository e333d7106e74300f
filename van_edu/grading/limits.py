"""The grader's default limits (a module of their own, so that the CLI loads without nbclient)."""
DEFAULT_TIMEOUT = 60            # seconds per cell
DEFAULT_OUTPUT_LIMIT = 100_000  # characters of output per cell
PROBE_TIMEOUT = 10              # seconds an interrupted kernel gets to answer again
MAX_RESTARTS = 4                # fresh kernels per notebook after crashes or ignored interrupts
