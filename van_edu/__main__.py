"""``python -m van_edu`` is the ``van-edu`` command."""
import sys

from .cli import main

sys.exit(main())
