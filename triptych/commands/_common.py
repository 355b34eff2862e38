"""Helpers shared by the CLI command modules: the console, error type, output conventions and the
checked argument types.

They live in common/ (console.py, argtypes.py), so that code below commands/ (training, lessons,
generation, ...) can use them without importing the CLI; this module re-exports them, and every
`from commands._common import ...` keeps working. See triptych/common/console.py for --html/--svg
(add_report_flags, save_reports) and triptych/common/argtypes.py for the checked values (count, whole, SEED,
number, text, output_file, output_dir): each is refused in one line while the command line is read,
before the command does any work."""
from __future__ import annotations

from triptych.common.argtypes import (SEED, Default, count, nonneg_number, number, output_dir, output_file, positive_number,
                             text, whole)
from triptych.common.console import CLIError, add_report_flags, console, err_console, print_json, save_reports

__all__ = ["CLIError", "Default", "SEED", "add_report_flags", "console", "count", "err_console", "nonneg_number",
           "number", "output_dir", "output_file", "positive_number", "print_json", "save_reports", "text", "whole"]
