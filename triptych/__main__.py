"""`python -m triptych COMMAND ...`: the same program as the `triptych` console script and `python cli.py`."""
import sys

from triptych.cli import main

sys.exit(main())
