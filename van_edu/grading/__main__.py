"""``python -m van_edu.grading generate|check``: make or verify the student and solution copies."""
import sys

from .assign import main

if __name__ == "__main__":
    sys.exit(main())
