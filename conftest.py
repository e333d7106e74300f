"""Repository-wide pytest set-up.

The notebook tests (``pytest --nbval-lax notebooks/``) must run the notebooks in test mode: the
kernels that nbval starts inherit this process's environment, so ``VAN_EDU_QUICK`` is set here,
before any kernel starts. An explicit ``VAN_EDU_QUICK=0`` in the environment runs them in full.
"""
import os

from van_edu.notebook import QUICK_ENV

os.environ.setdefault(QUICK_ENV, "1")
