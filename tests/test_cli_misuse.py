"""Misuse of any command is one line and exit code 2, refused before the command starts its work.

The command tree is read from cli.py's own parser, so a new command or option is covered without
editing this file: every numeric option must use a checked type from triptych/common/argtypes.py (a bare
`type=int` fails here), and each checked option is tried just outside its bounds (negative, zero
where it means nothing, past its upper bound, NaN and infinity), each text argument with an empty
string and bytes that are not UTF-8, each output folder with a file and each output file with a
folder, and both with a place where no file can be created (/proc).

Those sweeps run in-process against a parser whose commands are replaced by a stub, so an accepted
bad value shows up as exit 0 instead of starting a training run. The misuses reported by users run
the real commands, in-process too, except bytes that are not UTF-8 in argv, which need a real
process (Python reads them as lone surrogates, PEP 383)."""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from triptych import cli
from triptych.common import argtypes

ROOT = Path(__file__).resolve().parents[1]
NOT_UTF8 = os.fsdecode(b"\xff\xfe")  # what sys.argv holds for the bytes ff fe
UNWRITABLE_DIR = "/proc/triptych-misuse/out"  # procfs creates no files, for root neither
UNWRITABLE_FILE = "/proc/triptych-misuse.svg"


def _leaves(parser, path=()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, sub in subs[0].choices.items():
        yield from _leaves(sub, path + (name,))


def _accepted(args):
    return 0  # the stub every command is replaced with: reaching it means the bad value was accepted


_STUBBED = cli.build_parser()
for _path, _leaf in _leaves(_STUBBED):
    _leaf.set_defaults(func=_accepted)
LEAVES = dict(_leaves(_STUBBED))


def _kind(action) -> str | None:
    return getattr(action.type, "kind", None)


def _valid(action, tmp: Path) -> str:
    """A value the option accepts, for the arguments a command requires."""
    kind = _kind(action)
    if action.choices:
        return str(next(iter(action.choices)))
    if kind == "int":
        return str(max(action.type.low, 1))
    if kind == "float":
        return "0.5" if action.type.high >= 1 else str(action.type.high / 2)
    if kind == "output_dir":
        return str(tmp / "out")
    if kind == "output_file":
        return str(tmp / "report.html")
    return "hello"


def _argv(path, leaf, tmp: Path, bad_action=None, bad_value=None) -> list[str]:
    """The command's required arguments with valid values, and bad_value for bad_action."""
    options, positionals = [], []
    for action in leaf._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if action is bad_action:
            value = bad_value
        elif action.option_strings and not action.required:
            continue
        else:
            value = _valid(action, tmp)
        if action.option_strings:
            options += [action.option_strings[0], value]
        else:
            positionals.append(value)
    return [*path, *options, *positionals]


def _bad_values(action) -> list[str]:
    kind = _kind(action)
    t = action.type
    if kind == "int":
        return [str(t.low - 1), str(t.high + 1), "9" * 40, "1.5"]
    if kind == "float":
        below = t.low if t.low_open else t.low - 1
        bad = [repr(below), "nan", "inf", "-inf"]
        if math.isfinite(t.high):
            bad.append(repr(t.high if t.high_open else t.high + 1))
        return bad
    if kind == "text":
        return ["", "   ", NOT_UTF8]
    if kind == "output_dir":
        return ["FILE", UNWRITABLE_DIR, ""]
    if kind == "output_file":
        return ["DIR", UNWRITABLE_FILE, ""]
    return []


CASES = [(path, action, value) for path, leaf in LEAVES.items() for action in leaf._actions
         for value in _bad_values(action)]


def _run(argv, capsys) -> tuple[int, list[str]]:
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, (out + err).strip().splitlines()


def _assert_one_line_exit_2(code, lines, argv):
    assert code == 2, f"{argv}: exit {code}, output {lines[-3:]}"
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in lines[0], (argv, lines)


def test_every_numeric_option_uses_a_checked_type():
    raw = [f"{' '.join(path)} {a.option_strings or a.dest}" for path, leaf in LEAVES.items() for a in leaf._actions
           if a.type in (int, float)]
    assert not raw, f"use common.argtypes (count, whole, SEED, number) instead of int/float: {raw}"
    assert len(CASES) > 200  # the sweep found the options (the tree has over 30 commands)


@pytest.mark.parametrize("path, action, value", CASES,
                         ids=[f"{' '.join(p)} {(a.option_strings or [a.dest])[0]}={v!r}" for p, a, v in CASES])
def test_bad_value_is_one_line_exit_2_before_any_work(path, action, value, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "build_parser", lambda: _STUBBED)
    if value == "FILE":
        (tmp_path / "a_file").write_text("x")
        value = str(tmp_path / "a_file")
    elif value == "DIR":
        value = str(tmp_path)
    argv = _argv(path, LEAVES[path], tmp_path, action, value)
    code, lines = _run(argv, capsys)
    _assert_one_line_exit_2(code, lines, argv)
    assert not list(tmp_path.glob("out*")), "nothing is written before the arguments are checked"


def test_the_stub_accepts_the_valid_arguments(tmp_path, capsys, monkeypatch):
    """The sweep's base command lines parse, so each refusal above is the bad value's own."""
    monkeypatch.setattr(cli, "build_parser", lambda: _STUBBED)
    for path, leaf in LEAVES.items():
        argv = _argv(path, leaf, tmp_path)
        code, lines = _run(argv, capsys)
        assert code == 0, (argv, lines)


# ----------------------------------------------------------------------------------------------
# the misuses people reported, through the real commands


def _reported(tmp: Path) -> list[list[str]]:
    a_file = tmp / "a_file"
    a_file.write_text("x")
    return [
        ["tour", "--seed", "-1"],
        ["parity", "--seed", "-1"],
        ["gpt", "train", "--threads", "-1"],
        ["gpt", "bench", "--batch-size", "-1"],
        ["gpt", "train", "--steps", "0"],
        ["gpt", "experiment", "similarity", "--steps", "0"],
        ["gpt", "sample", "--temperature", "-0.5"],
        ["bench", "decode", "--prompt-tokens", "100000"],
        ["lesson", "subspace", "--out", str(a_file)],
        ["model", "attention", "x", "--layer", "0", "--head", "0", "--out", str(a_file)],
        ["tour", "--html", str(tmp)],
        ["tour", "--svg", UNWRITABLE_FILE],
        ["exercise", "new", "course-b", "--out", str(tmp), "--force"],
        ["finetune", "predict", ""],
        ["model", "embed", "", "x"],
        ["model", "generate", "   "],
        ["model", "inspect", NOT_UTF8],
        ["calc", "loss", "--logits", "1,inf", "--target", "0"],
    ]


def test_reported_misuse_is_one_line_exit_2_and_nothing_printed_before(tmp_path, capsys):
    for argv in _reported(tmp_path):
        code, lines = _run(argv, capsys)
        _assert_one_line_exit_2(code, lines, argv)


def test_the_error_names_the_argument_and_what_came(capsys):
    """The words are the same everywhere: the flag, what was expected, the value given."""
    cases = {
        ("tour", "--seed", "-1"): "argument --seed: expected a non-negative integer, got '-1'",
        ("bench", "decode", "--prompt-tokens", "100000"): "up to 8,192 (SmolLM2 has 8,192 positions), got '100000'",
        ("gpt", "train", "--steps", "0"): "argument --steps: expected a positive integer, got '0'",
        ("tour", "--svg", UNWRITABLE_FILE): "argument --svg: expected a file name in a writable folder",
        ("finetune", "predict", ""): "argument texts: expected non-empty text, got ''",
        ("model", "embed", "a", " "): "argument sentences: expected non-empty text",
    }
    for argv, fragment in cases.items():
        code, lines = _run(list(argv), capsys)
        assert code == 2 and len(lines) == 1 and fragment in lines[0], (argv, lines)


@pytest.mark.parametrize("argv", [
    ["model", "embed", "\udcff\udcfe", "x"],
    ["finetune", "predict", "--checkpoint", "runs/finetune/default/best", "\udcff\udcfe"],
])
def test_text_that_is_not_utf8_from_a_real_argv(argv):
    # os.fsencode turns the surrogates back into the raw bytes ff fe on the child's command line.
    args = [os.fsencode(sys.executable), os.fsencode(str(ROOT / "cli.py")), *(os.fsencode(a) for a in argv)]
    r = subprocess.run(args, capture_output=True, cwd=ROOT, timeout=120)
    err = r.stderr.decode("utf-8", "backslashreplace")
    assert r.returncode == 2 and r.stdout == b"", err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "expected UTF-8 text, got bytes that are not UTF-8: b'\\xff\\xfe'" in err


def test_calc_loss_is_stable_at_huge_logits(capsys):
    """Two equal logits of 1e15: p = 1/2 and the loss ln 2 (analytic, and torch's float64 cross_entropy)."""
    import json

    import torch

    assert cli.main(["calc", "loss", "--logits", "1e15,1e15", "--target", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ref = torch.nn.functional.cross_entropy(torch.tensor([[1e15, 1e15]], dtype=torch.float64), torch.tensor([0]))
    assert out["p_target"] == pytest.approx(0.5, rel=1e-12)
    assert out["cross_entropy"] == pytest.approx(math.log(2), rel=1e-12)
    assert out["cross_entropy"] == pytest.approx(ref.item(), rel=1e-12)
    # and an ordinary case against torch too: a shift of every logit changes nothing
    z = [3.0, -1.5, 0.25, 2.0]
    assert cli.main(["calc", "loss", "--logits", ",".join(str(v + 1e12) for v in z), "--target", "2", "--json"]) == 0
    shifted = json.loads(capsys.readouterr().out)
    ref = torch.nn.functional.cross_entropy(torch.tensor([z], dtype=torch.float64), torch.tensor([2])).item()
    assert shifted["cross_entropy"] == pytest.approx(ref, abs=1e-3)  # 1e12 + z rounds z to 2**-13


def test_argtypes_bounds_and_defaults():
    assert argtypes.SEED("0") == 0 and argtypes.SEED(str(2**32 - 1)) == 2**32 - 1
    with pytest.raises(argparse.ArgumentTypeError):
        argtypes.SEED(str(2**32))
    # a default output folder is not the user's choice: not looked at until something is written
    assert argtypes.output_dir(argtypes.Default(UNWRITABLE_DIR)) == UNWRITABLE_DIR


def test_gpt_sample_temperature_0_is_greedy(tmp_path, capsys):
    """gpt sample --temperature 0 takes the most likely character each time (as model generate does):
    the same text for every seed, equal to an argmax loop over numpy_impl's forward written here."""
    import numpy as np

    from triptych.training.checkpoint import load_checkpoint
    from triptych.training.data import CharTokenizer
    from numpy_impl.gpt import gpt_forward

    run = tmp_path / "run"
    assert cli.main(["gpt", "train", "--backend", "numpy", "--steps", "2", "--out", str(run), "--limit-chars", "5000",
                     "--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--block-size", "8",
                     "--eval-interval", "2", "--eval-batches", "1", "--no-progress"]) == 0
    capsys.readouterr()
    texts = []
    for seed in ("0", "7"):
        assert cli.main(["gpt", "sample", "--ckpt", str(run / "ckpt.npz"), "--temperature", "0", "--seed", seed,
                         "--length", "12", "--prompt", "It is"]) == 0
        texts.append(capsys.readouterr().out.strip().splitlines()[-1])
    params, _, meta = load_checkpoint(run / "ckpt.npz")
    tok, config = CharTokenizer(meta["chars"]), meta["config"]
    ids = list(tok.encode("It is"))
    for _ in range(12):
        logits = gpt_forward(params, np.asarray([ids[-config.block_size:]]), config)
        ids.append(int(np.argmax(logits[0, -1])))
    assert texts[0] == texts[1] == tok.decode(ids)
