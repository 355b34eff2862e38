#!/usr/bin/env python3
"""`python cli.py COMMAND ...` in a clone: the same program as `triptych COMMAND ...` and
`python -m triptych COMMAND ...` (the program itself is triptych/cli.py)."""
import os
import sys

# `python cli.py` from another folder still finds the packages beside this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from triptych.cli import main  # noqa: E402  (after sys.path is set)

if __name__ == "__main__":
    sys.exit(main())
