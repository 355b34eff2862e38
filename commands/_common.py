"""Helpers shared by the CLI command modules: the console, error type and output conventions.

They live in common/console.py, so that code below commands/ (gptlab, lessons, ...) can use them
without importing the CLI; this module re-exports them, and every `from commands._common import ...`
keeps working. See common/console.py for --html/--svg (add_report_flags, save_reports)."""
from __future__ import annotations

from common.console import CLIError, add_report_flags, console, err_console, print_json, save_reports

__all__ = ["CLIError", "add_report_flags", "console", "err_console", "print_json", "save_reports"]
