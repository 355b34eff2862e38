"""`pip install .` works: the wheel built from the tracked files installs a `triptych` program that
runs from any folder, with no repository around it.

The slow test builds the wheel from a copy of `git ls-files` (so build/ and *.egg-info never land in
the work tree), installs it with --no-deps into a fresh venv that borrows this venv's torch, jax, ...
through a .pth file (nothing is downloaded or reinstalled), and runs the installed program from an
unrelated temporary folder. To run another installed command, use the `installed` fixture with
`run_installed(installed, "COMMAND", ...)`.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What an installed wheel adds to site-packages: the program under one name, and the three backends a
# reader imports by name. Generic names (cli, common, commands, ...) would collide with other packages.
TOP_LEVEL = {"triptych", "numpy_impl", "jax_impl", "torch_ref"}
NOT_SHIPPED = {"tests", "parity_tests", "docs"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower()


def test_pyproject_dependencies_agree_with_requirements_txt():
    # requirements.txt is what `make setup` installs; pyproject's list must not pull anything else
    # (a different torch would mean gigabytes of CUDA wheels).
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    pinned = {_name(r): r.replace(" ", "") for r in pinned if r}
    declared = project["dependencies"] + project["optional-dependencies"]["test"]
    for requirement in declared:
        assert pinned.get(_name(requirement)) == requirement.replace(" ", ""), requirement
    assert "torch==2.13.0" in project["dependencies"]


def test_every_program_package_is_in_the_wheel():
    # A new top-level package that pyproject's include misses installs a `triptych` that dies on
    # import (it happened with generation/): every folder of ours with Python in it is listed.
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    listed = {pattern.rstrip("*") for pattern in include["include"]}
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    folders = {Path(f).parts[0] for f in tracked.stdout.split() if len(Path(f).parts) > 1}
    assert folders - NOT_SHIPPED == TOP_LEVEL
    assert listed == TOP_LEVEL


@dataclass
class Installed:
    wheel: Path
    venv: Path
    elsewhere: Path  # an empty folder with no repository above it: where the program runs
    env: dict

    @property
    def triptych(self) -> Path:
        return self.venv / "bin" / "triptych"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


def run_installed(installed: Installed, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The installed `triptych ARGS...`, run from installed.elsewhere; text output captured."""
    return subprocess.run([str(installed.triptych), *args], cwd=installed.elsewhere, env=installed.env,
                          capture_output=True, text=True, timeout=timeout)


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    tracked = _run(["git", "ls-files", "-z"], cwd=ROOT).stdout.split("\0")
    for rel in filter(None, tracked):
        if (ROOT / rel).is_file():  # a tracked file deleted in the work tree is not part of this build
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)

    wheels = tmp / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, "."],
         cwd=src)
    (wheel,) = wheels.glob("triptych-*.whl")

    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False)  # pip comes from this venv (--python), which saves ensurepip's seconds
    target = Path(_run([env_dir / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
                       ).stdout.strip())
    (target / "_triptych_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", env_dir / "bin" / "python", "install", "-q", "--no-deps",
          "--no-index", wheel])

    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRIPTYCH_DATA", "VIRTUAL_ENV")}
    env.update(HOME=str(tmp / "home"), XDG_DATA_HOME=str(tmp / "xdg"), COLUMNS="150")
    return Installed(wheel, env_dir, elsewhere, env)


@pytest.mark.slow
def test_wheel_holds_the_program_and_not_the_tests(installed):
    names = zipfile.ZipFile(installed.wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == TOP_LEVEL  # exactly these four: no cli.py, no common, no commands
    for module in ("triptych/commands/tour.py", "triptych/common/console.py", "torch_ref/finetune/config.py",
                   "triptych/crosscheck/sandbox/worker.py"):
        assert module in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "triptych = triptych.cli:main" in zipfile.ZipFile(installed.wheel).read(entry_points).decode()


@pytest.mark.slow
def test_installed_triptych_help_runs_from_anywhere(installed):
    r = run_installed(installed, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: triptych") and "tour" in r.stdout and "parity" in r.stdout
    bad = run_installed(installed, "nonsense")
    assert bad.returncode == 2 and bad.stderr.startswith("error: triptych: ")


@pytest.mark.slow
def test_installed_triptych_calc_mlm_toy(installed):
    r = run_installed(installed, "calc", "mlm-toy")
    assert r.returncode == 0, r.stderr
    # Exercise G.1: logits cat 0.5, dog 0.1, mat 3, ran 0.2, sat 1; the correct word is 'mat'.
    p_mat = math.exp(3) / sum(math.exp(z) for z in (0.5, 0.1, 3, 0.2, 1))
    assert f"{p_mat:.6f}" in r.stdout and f"{-math.log(p_mat):.6f} nats" in r.stdout
    assert "cross-entropy" in r.stdout and r.stderr == ""


@pytest.mark.slow
def test_installed_copy_runs_its_own_files_and_keeps_data_per_user(installed):
    probe = "from triptych import cli, corpora; print(cli.__file__); print(corpora.data_dir())"
    out = subprocess.run([str(installed.python), "-c", probe], cwd=installed.elsewhere, env=installed.env,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert Path(out[0]).is_relative_to(installed.venv)  # the wheel's copy, not the clone's
    assert out[1] == str(Path(installed.env["XDG_DATA_HOME"]) / "triptych")
    missing = run_installed(installed, "gpt", "train", "--steps", "1")
    assert missing.returncode == 2 and "-m triptych.corpora.fetch --only austen" in missing.stderr
    assert "make data" not in missing.stderr  # there is no Makefile around an installed copy


SPLIT_HEADS = '''import numpy as np


def split_heads(x, n_heads):
    B, T, C = x.shape
    return x.reshape(B, T, n_heads, C // n_heads).transpose(0, 2, 1, 3)
'''


@pytest.mark.slow
def test_installed_triptych_checks_a_users_file(installed):
    # The checker's sandbox is a child `python -I` running triptych/crosscheck/sandbox/worker.py: installed, it
    # must find the worker and the project's packages in site-packages, not in a clone.
    mine = installed.elsewhere / "mine.py"
    mine.write_text(SPLIT_HEADS)
    r = run_installed(installed, "check", "mine.py", "--exercise", "split_heads", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert rows and all(row["exercise"] == "split_heads" and row["verdict"] == "pass" for row in rows)
    wrong = installed.elsewhere / "wrong.py"
    wrong.write_text(SPLIT_HEADS.replace(".reshape(B, T, n_heads, C // n_heads).transpose(0, 2, 1, 3)",
                                         ".reshape(B, n_heads, T, C // n_heads)"))  # the bare-reshape mistake
    bad = run_installed(installed, "check", "wrong.py", "--exercise", "split_heads")
    assert bad.returncode == 1 and "transpose" in bad.stdout
