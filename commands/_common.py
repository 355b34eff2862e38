"""Helpers shared by the CLI command modules: the console, error type and output conventions."""
from __future__ import annotations

import json
import os
import sys

from rich.console import Console

from common.checks import InputError

# Piped output (tests, `| less`, CI logs) has no terminal width; rich would fall back to 80 columns
# and wrap the parity tables into unreadable cells, so give it room unless COLUMNS says otherwise.
_width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 150
console = Console(width=_width)
err_console = Console(stderr=True)


class CLIError(InputError):
    """A one-line usage or data problem; cli.py prints it and exits with code 2."""


def print_json(obj) -> None:
    """Plain JSON on stdout (no rich markup), so `--json` output pipes into jq or json.loads."""
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    sys.stdout.flush()
