"""The terminal every part of the program prints to, its error type, and saved reports (--html/--svg).

It lives in common/ (not commands/) so that code below the CLI (training, lessons, ...) can print
tables and raise CLIError without importing the CLI package; triptych/commands/_common.py re-exports it all.

Saving what the terminal showed, for a command of your own:

    from triptych.common.console import add_report_flags, console, save_reports

    def register(sub):
        p = sub.add_parser("mycommand")
        add_report_flags(p)               # --html FILE and --svg FILE; parsing either starts the recording
        p.set_defaults(func=run)

    def run(args):
        console.print(table)              # or print_json(rows) under --json: recorded just the same
        save_reports(args)                # once, after the last output, on every path (--json too)
        return 0

save_reports writes each file atomically and says where on stderr (stdout may be JSON).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys

from rich.console import Console, NewLine
from rich.control import Control

from triptych.common.argtypes import count, output_file
from triptych.common.checks import InputError
from triptych.common.io import atomic_write_text

__all__ = ["CLIError", "RecordingConsole", "add_report_flags", "console", "err_console", "print_json",
           "save_reports"]


class CLIError(InputError):
    """A one-line usage or data problem; cli.py prints it and exits with code 2."""


class RecordingConsole(Console):
    """A rich Console that can also keep a copy of what it prints, for --html and --svg.

    Why not rich's own Console(record=True): that records every byte written, so on a terminal each
    redraw of a progress bar (several a second) lands in the record and the saved page shows the bar
    dozens of times, although the terminal showed it once and then erased it (transient=True). So
    this console tees what the program prints (print, log and everything built on them: rule,
    print_json, line) into a second, recording console that no live display draws on, and keeps the
    final picture of a non-transient live display when it stops. Commands keep printing to this one
    object; when nothing is being recorded the tee costs one attribute test per print.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._recorder: Console | None = None
        self._after_live = False

    @property
    def recording(self) -> bool:
        return self._recorder is not None

    def start_recording(self) -> None:
        """Record from now on (a second call keeps the record made so far)."""
        if self._recorder is None:
            # A StringIO is never a terminal, so nothing is drawn twice; its utf-8 keeps rich's box
            # characters, and the width follows this console's on every print so tables wrap alike.
            self._recorder = Console(file=io.StringIO(), record=True, width=self.width)

    def stop_recording(self) -> Console | None:
        """Stop recording; returns the recording console (export_html / export_svg), or None."""
        recorder, self._recorder = self._recorder, None
        return recorder

    def _tee(self):
        recorder = self._recorder
        if recorder is not None:
            recorder.width = self.width
        return recorder

    def print(self, *objects, **kwargs) -> None:
        recorder = self._tee()
        # Live displays call print(Control()) to redraw; a redraw is not output. Stopping one then
        # prints a newline to step below its last frame (line() on a terminal, print() elsewhere),
        # which the frame recorded in clear_live already ends with.
        redraw = bool(objects) and all(isinstance(o, Control) for o in objects)
        step_below = self._after_live and all(isinstance(o, NewLine) for o in objects)
        self._after_live = self._after_live and bool(redraw)
        if recorder is not None and not (redraw or step_below):
            recorder.print(*objects, **kwargs)
        super().print(*objects, **kwargs)

    def log(self, *objects, _stack_offset: int = 1, **kwargs) -> None:
        recorder = self._tee()
        if recorder is not None:
            recorder.log(*objects, _stack_offset=_stack_offset + 1, **kwargs)
        super().log(*objects, _stack_offset=_stack_offset + 1, **kwargs)

    def clear_live(self) -> None:
        # Called when a live display (a Progress) stops. A non-transient one stays on the screen as
        # its last frame, so the record gets that frame once; a transient one is erased, so nothing.
        # Only the outermost display: a nested one prints its own last frame through print().
        live = self._live_stack[-1] if len(self._live_stack) == 1 else None
        super().clear_live()
        # On a terminal an erased (transient) display's step below is erased too; in a file or a
        # pipe it stays as a blank line.
        self._after_live = live is not None and (not live.transient or self.is_terminal)
        recorder = self._tee()
        if recorder is not None and live is not None and not live.transient:
            recorder.print(live.renderable)

    def record_text(self, text: str) -> None:
        """Put text that went to stdout some other way (print_json) into the record, as shown."""
        recorder = self._tee()
        if recorder is not None:
            recorder.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True, end="")


# Piped output (tests, `| less`, CI logs) has no terminal width of its own. COLUMNS, when set, is the
# width of whatever reads the pipe (rich reads it itself); otherwise 100 columns: more than rich's 80,
# so the parity tables keep their numbers on one line, yet narrow enough for a pager or a CI log.
_width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 100
console = RecordingConsole(width=_width)
err_console = Console(stderr=True)


def print_json(obj) -> None:
    """Plain JSON on stdout (no rich markup), so `--json` output pipes into jq or json.loads."""
    text = json.dumps(obj, indent=2) + "\n"
    sys.stdout.write(text)
    sys.stdout.flush()
    console.record_text(text)


class _RecordTo(argparse.Action):
    """Stores the file name and starts recording, so that everything the command prints is kept."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        console.start_recording()


# argparse type for counts (--repeats, --tokens, --vocab-size): a positive integer, or the one-line error.
positive_int = count()


def add_report_flags(parser: argparse.ArgumentParser) -> None:
    """Add --html FILE and --svg FILE to a command's parser (call save_reports(args) at its end)."""
    # output_file: a folder or a path that cannot be written is refused as the command line is read,
    # before the command runs (not after, when the report is saved).
    parser.add_argument("--html", metavar="FILE", action=_RecordTo, type=output_file,
                        help="also save what the terminal shows as an HTML page")
    parser.add_argument("--svg", metavar="FILE", action=_RecordTo, type=output_file,
                        help="also save what the terminal shows as an SVG picture")


def save_reports(args: argparse.Namespace) -> list[str]:
    """Write the --html / --svg files the user asked for (atomically) and stop recording.

    Returns the paths written (none when neither flag was given)."""
    html, svg = getattr(args, "html", None), getattr(args, "svg", None)
    recorder = console.stop_recording()
    if recorder is None or not (html or svg):
        return []
    written = []
    if html:
        atomic_write_text(html, recorder.export_html(clear=False))
        written.append(html)
    if svg:
        title = " ".join(["triptych", getattr(args, "command", None) or ""]).strip()
        atomic_write_text(svg, recorder.export_svg(title=title, clear=False))
        written.append(svg)
    for path in written:
        err_console.print(f"saved: {path}", highlight=False, soft_wrap=True)  # a path must stay one copyable line
    return written
