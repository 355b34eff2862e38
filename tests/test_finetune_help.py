"""`finetune ... --help` states the defaults that run: the numbers are read from
torch_ref/finetune/config.py, never typed into the help a second time (they had drifted apart)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from triptych import cli
from torch_ref.finetune import config

ROOT = Path(__file__).resolve().parents[1]


def help_text(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args([*argv, "--help"])
    assert info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse's line wrapping undone


def lr_by_method(text: str) -> dict[str, float]:
    """'by method: full 5e-5, lora 2e-3, head/prefix 1e-2)' -> {'full': 5e-5, ...}"""
    listing = re.search(r"by method: ([^)]*)\)", text).group(1)
    rates = {}
    for group in listing.split(", "):
        methods, number = group.split(" ")
        rates.update({m: float(number) for m in methods.split("/")})
    return rates


@pytest.mark.parametrize("command", [("finetune", "train"), ("finetune", "study", "grid")])
def test_lr_help_shows_default_lr(capsys, command):
    assert lr_by_method(help_text(capsys, *command)) == config.DEFAULT_LR


def test_lr_help_follows_the_constant_when_it_changes(capsys, monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_LR", {"full": 3e-5, "lora": 1e-3, "head": 1e-3, "prefix": 7e-3})
    text = help_text(capsys, "finetune", "train")
    assert lr_by_method(text) == config.DEFAULT_LR
    assert "lora/head 1e-3" in text  # equal rates are grouped, in DEFAULT_LR's order


def test_study_help_shows_the_study_defaults(capsys):
    text = help_text(capsys, "finetune", "study", "grid")
    lrs = re.search(r"--lrs LRS grid: learning rates \(default ([^)]*)\)", text).group(1)
    assert tuple(float(x) for x in lrs.split(",")) == config.GRID_LRS
    epochs = re.search(r"grid: epoch counts \(default ([^)]*)\)", text).group(1)
    assert tuple(int(x) for x in epochs.split(",")) == config.GRID_EPOCHS
    assert f"optimizers: comma list (default {','.join(config.STUDY_OPTIMIZERS)})" in text
    assert f"methods: comma list (default {','.join(config.METHODS)})" in text


def test_train_help_shows_train_config_defaults(capsys):
    base = config.TrainConfig()
    text = help_text(capsys, "finetune", "train")
    assert f"dataset (default {base.task};" in text
    assert f"warming the lr up (default {base.warmup:g})" in text
    assert f"'{config.DEFAULT_MODEL}' (offline default)" in text
    assert f"(default {base.out}/best" in help_text(capsys, "finetune", "predict")



def test_config_is_plain_data_and_imports_no_model_code():
    # The help above is built from config.py at every CLI start, so it must stay free of torch; and
    # models.py imports config.py, never the other way round (that was a circle).
    probe = ("import sys, torch_ref.finetune.config; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.endswith('finetune.models')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
