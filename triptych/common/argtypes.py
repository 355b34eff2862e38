"""Command-line values checked when the command line is read, before any work starts.

Each factory returns an argparse `type=` callable; a bad value becomes argparse's one-line error
("argument --seed: expected a non-negative integer, got '-1'"), which cli.py prints with exit code 2.
The same words everywhere:

    count(high=None)        a positive integer          (steps, batch sizes, layers, tokens, ...)
    whole(high=None)        a non-negative integer      (0 meaning "none" or "the default")
    SEED                    an integer in [0, 2**32 - 1], the range every backend's generator takes
    number(low, high, ...)  a finite number in a range  (learning rates, fractions, temperatures)
    text                    non-empty text that is valid UTF-8
    output_file, output_dir where the command will write: checked to be writable before it starts

A number with no natural upper bound still gets CEILING (2**31 - 1): past it, arrays cannot be
indexed by int32 in every backend and a run would not end in a lifetime; a typo of extra digits is
then named at once instead of failing deep inside NumPy. The callables keep their bounds as
attributes (low, high), so tests can find every numeric option and try values just outside them.

It lives in common/ so that the modules that register subcommands below the CLI (triptych/bpe/bench.py,
triptych/generation/bench.py) use the same checks; triptych/commands/_common.py re-exports it.
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile

CEILING = 2**31 - 1
SEED_MAX = 2**32 - 1


class count:  # noqa: N801 - used like a type: `type=count()`
    """An integer in [low, high]; `why` says where the upper bound comes from (shown when exceeded)."""

    kind = "int"

    def __init__(self, high: int | None = None, low: int = 1, why: str = ""):
        self.low, self.high, self.why = low, CEILING if high is None else high, why
        self.__name__ = "integer"  # argparse names the type in some messages

    def words(self) -> str:
        return {1: "a positive integer", 0: "a non-negative integer"}.get(self.low, f"an integer >= {self.low}")

    def __call__(self, text: str) -> int:
        try:
            value = int(text.strip().replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.words()}, got {text!r}") from None
        if value < self.low:
            raise argparse.ArgumentTypeError(f"expected {self.words()}, got {text!r}")
        if value > self.high:
            why = f" ({self.why})" if self.why else ""
            raise argparse.ArgumentTypeError(f"expected {self.words()} up to {self.high:,}{why}, got {text!r}")
        return value


def whole(high: int | None = None, why: str = "") -> count:
    """A non-negative integer (0 allowed: 'none', 'off' or 'the library's default', as the help says)."""
    return count(high, low=0, why=why)


SEED = count(SEED_MAX, low=0, why="the range every backend's random generator takes")


class number:  # noqa: N801 - used like a type: `type=number(0, 1)`
    """A finite float in a range; low/high may be open (excluded) or closed (included)."""

    kind = "float"

    def __init__(self, low: float = 0.0, high: float = math.inf, low_open: bool = True, high_open: bool = False):
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open
        self.__name__ = "number"

    def words(self) -> str:
        if self.high == math.inf and self.low == 0:
            return "a positive number" if self.low_open else "a non-negative number"
        if self.high == math.inf:
            return f"a finite number {'>' if self.low_open else '>='} {self.low:g}"
        return (f"a number in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                f"{')' if self.high_open else ']'}")

    def __call__(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = math.isfinite(value) and (value > self.low if self.low_open else value >= self.low) and \
            (value < self.high if self.high_open else value <= self.high)
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {self.words()}, got {text!r}")
        return value


def positive_number(high: float = math.inf) -> number:
    return number(0.0, high)


def nonneg_number(high: float = math.inf) -> number:
    return number(0.0, high, low_open=False)


def check_text(value: str, name: str = "") -> str:
    """Non-empty (not only spaces) and valid UTF-8. Python reads argv bytes that are not UTF-8 as
    lone surrogates (PEP 383); no tokenizer can take them, so they are refused here by name."""
    where = f"{name}: " if name else ""
    if not value.strip():
        raise argparse.ArgumentTypeError(f"{where}expected non-empty text, got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(value) if hasattr(os, "fsencode") else value
        raise argparse.ArgumentTypeError(f"{where}expected UTF-8 text, got bytes that are not UTF-8: {shown!r}") \
            from None
    return value


def text(value: str) -> str:
    """argparse type for text a model or a tokenizer reads: non-empty, valid UTF-8."""
    return check_text(value)


text.kind = "text"  # type: ignore[attr-defined]


def _writable_folder(path: str) -> str | None:
    """None when files can be created under `path` (a folder, or a folder to be made, under the
    nearest one that exists); otherwise why not, in words. Tries for real (a temporary file that
    vanishes): permission bits say nothing for root or for /proc-like file systems."""
    folder = os.path.abspath(path or ".")
    while not os.path.exists(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    if not os.path.isdir(folder):
        return f"{folder} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:  # /proc answers ENOENT, a read-only mount EROFS, a locked folder EACCES
        return f"cannot create a file in {folder}: {e.strerror or e}"
    return None


class Default(str):
    """An output path given as an option's default. argparse passes a string default through `type`
    too; a default is not the user's choice, so `lesson list` in a read-only folder still works and
    the folder is looked at only when something is written there."""


def output_file(value: str) -> str:
    """argparse type for a file the command writes (--html, --svg): not a folder, in a writable one.
    An existing file is replaced (atomically); commands that refuse to overwrite say so themselves."""
    if isinstance(value, Default):
        return str(value)
    if not value.strip():
        raise argparse.ArgumentTypeError(f"expected a file name, got {value!r}")
    if os.path.isdir(value) or value.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"expected a file name, got the folder {value!r}")
    why = _writable_folder(os.path.dirname(value))
    if why:
        raise argparse.ArgumentTypeError(f"expected a file name in a writable folder, got {value!r} ({why})")
    return value


output_file.kind = "output_file"  # type: ignore[attr-defined]


def output_dir(value: str) -> str:
    """argparse type for a folder the command writes into (made when missing): not a file, writable."""
    if isinstance(value, Default):
        return str(value)
    if not value.strip():
        raise argparse.ArgumentTypeError(f"expected a folder, got {value!r}")
    if os.path.exists(value) and not os.path.isdir(value):
        raise argparse.ArgumentTypeError(f"expected a folder, got the file {value!r}")
    why = _writable_folder(value)
    if why:
        raise argparse.ArgumentTypeError(f"expected a writable folder, got {value!r} ({why})")
    return value


output_dir.kind = "output_dir"  # type: ignore[attr-defined]
