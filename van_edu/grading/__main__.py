"""``python -m van_edu.grading generate|check``: make or verify the student and solution copies."""
from __future__ import annotations

import argparse
import sys

from ..errors import VanEduError
from .assign import default_exercises_dir, generate, out_of_sync


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m van_edu.grading",
                                     description="Generate exercises/student and exercises/solutions from exercises/source.")
    parser.add_argument("action", choices=["generate", "check"],
                        help="generate: write the copies; check: exit 1 if they are out of sync")
    parser.add_argument("--exercises", default=None,
                        help=f"the exercises folder holding source/ (default {default_exercises_dir()})")
    args = parser.parse_args(argv)
    try:
        if args.action == "generate":
            paths = generate(out_dir=args.exercises)
            print(f"wrote {len(paths)} notebooks under {paths[0].parent.parent}")
            return 0
        problems = out_of_sync(out_dir=args.exercises)
    except VanEduError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for p in problems:
        print(p)
    if problems:
        print("run `python -m van_edu.grading generate` to regenerate them", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
