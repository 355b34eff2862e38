#!/usr/bin/env python3
"""Triptych: transformer maths written three times (NumPy, JAX, PyTorch) and checked against each other.

Usage: python cli.py COMMAND ...       (in a clone; python cli.py --help lists the commands)
       triptych COMMAND ...            (the same program, after `pip install .` or `pip install -e .`)
       python -m triptych COMMAND ...  (the same again)

Errors a user can fix (bad arguments, bad shapes, missing data) print one line and exit 2;
Ctrl-C exits 130 after whatever was being written has been finished or left untouched.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

# Quiet the libraries before they are imported anywhere: no hub access, no TF/JAX banners.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")



class _Parser(argparse.ArgumentParser):
    """argparse prints a usage block on error; misuse is one line and exit code 2 everywhere in this CLI."""

    json_errors = False  # set by main() when --json was asked for: errors go out as JSON on stdout

    def error(self, message):  # noqa: D401 - argparse API
        if _Parser.json_errors:
            import json

            sys.stdout.write(json.dumps({"error": f"{self.prog}: {message}"}) + "\n")
            sys.exit(2)
        sys.stderr.write(f"error: {self.prog}: {message} (see --help)\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from triptych import commands
    # Usage lines and one-line errors name the program the way the user started it.
    prog = "cli.py" if os.path.basename(sys.argv[0]) == "cli.py" else "triptych"
    parser = _Parser(prog=prog, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    modules = []
    for info in pkgutil.iter_modules(commands.__path__):
        if info.name.startswith("_"):
            continue
        modules.append(importlib.import_module(f"triptych.commands.{info.name}"))
    for mod in sorted(modules, key=lambda m: getattr(m, "ORDER", 100)):
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from triptych.common.checks import InputError

    parser = build_parser()
    # An autograder calling `check --json` reads stdout as JSON, even for a bad option value.
    _Parser.json_errors = "--json" in (sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    except FileNotFoundError as e:
        sys.stderr.write(f"error: file not found: {e.filename or e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: files already written are complete (atomic writes); resume where supported\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
