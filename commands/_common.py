"""Helpers shared by the CLI command modules: the console, error type and output conventions."""
from __future__ import annotations

import json
import sys

from rich.console import Console

from common.checks import InputError

console = Console()
err_console = Console(stderr=True)


class CLIError(InputError):
    """A one-line usage or data problem; cli.py prints it and exits with code 2."""


def print_json(obj) -> None:
    """Plain JSON on stdout (no rich markup), so `--json` output pipes into jq or json.loads."""
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    sys.stdout.flush()
