"""``python -m van_edu`` is the ``van-edu`` command (importing this module runs nothing)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
