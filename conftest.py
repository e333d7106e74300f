"""Repository-wide pytest set-up.

The notebook tests (``pytest --nbval-lax notebooks/``) must run the notebooks in test mode: the
kernels that nbval starts inherit this process's environment, so ``VAN_EDU_QUICK`` is set here,
before any kernel starts. An explicit ``VAN_EDU_QUICK=0`` in the environment runs them in full.
"""
import os

from van_edu.notebook import QUICK_ENV

os.environ.setdefault(QUICK_ENV, "1")


def pytest_collection_modifyitems(config, items):
    """The notebooks (nbval) are slow tests: ``make test`` runs them, ``make test-fast`` does not."""
    import pytest

    for item in items:
        if str(item.fspath).endswith(".ipynb"):
            item.add_marker(pytest.mark.slow)
