"""Resuming a run from its folder: which flags the user typed, and how they compare with the run's.

A resumed run takes its settings from the run folder (run.json), so no flag needs repeating. A flag
the user did type must agree with the run, except the length (--steps, --epochs), which may grow:
that extends the run. Anything else is refused by name, since the checkpoint's weights and optimizer
state belong to the settings they were trained with.

argparse cannot tell "--lr 2e-3 typed" from "--lr left at its default 2e-3", so `record_given`
marks each option of a parser to note its destination in `namespace._given` when it is parsed."""
from __future__ import annotations

import argparse

from triptych.common.checks import InputError

GIVEN = "_given"


def _recording(cls: type) -> type:
    def __call__(self, parser, namespace, values, option_string=None):
        given = set(getattr(namespace, GIVEN, ()))
        given.add(self.dest)
        setattr(namespace, GIVEN, given)
        return cls.__call__(self, parser, namespace, values, option_string)

    return type(f"Given{cls.__name__}", (cls,), {"__call__": __call__})


def record_given(parser: argparse.ArgumentParser) -> None:
    """After every option of `parser` is added: parsing then leaves the typed ones' dests in
    `args._given` (see `given`)."""
    for action in parser._actions:
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            action.__class__ = _recording(type(action))


def given(args) -> set[str]:
    """The dests of the options typed on the command line (empty when `record_given` was not used)."""
    return set(getattr(args, GIVEN, ()))


def show(value) -> str:
    """A setting as a person types it: 3e-4, 64, 0.1, full."""
    if not isinstance(value, float):
        return str(value)
    plain = f"{value:g}"
    if value == 0 or abs(value) >= 1:
        return plain
    mantissa, exponent = f"{value:e}".split("e")
    short = f"{float(mantissa):g}e{int(exponent)}"
    return short if len(short) < len(plain) else plain  # 0.003 -> 3e-3, 0.01 and 0.1 stay


def flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_same(saved: dict, typed: dict, out) -> None:
    """typed: dest -> value the user gave; saved: dest -> the run's value. Any difference is an
    InputError naming the flag, both values and the way out (a new --out)."""
    for dest, value in typed.items():
        if dest not in saved:
            raise InputError(f"{flag(dest)}: the run in {out} has no such setting; drop it, or start a new --out")
        old = saved[dest]
        same = old == value or (isinstance(old, (int, float)) and isinstance(value, (int, float))
                                and not isinstance(old, bool) and float(old) == float(value))
        if not same:
            raise InputError(f"{flag(dest)}: this run was started with {show(old)}, got {show(value)}; "
                             f"start a new --out to change it")


def check_length(dest: str, value: int | None, done: int, out) -> None:
    """--steps / --epochs on a resumed run: at least what is already finished (more extends it)."""
    if value is not None and value < done:
        raise InputError(f"{flag(dest)}: the run in {out} has already finished {done} {dest}, got {value}; "
                         f"give at least {done} (more extends the run)")
