"""Caches of derived data (converted weights, a converted tokenizer) that cannot outlive what made them.

A cache is only as good as its key. Keyed by the source's size alone, a converted-weights file
survives a fix to the conversion: the user keeps the old wrong weights and nothing says so. Every
cache under the data folder therefore records, beside its data, what the data was derived from:

    source_sha256   the content hash of the source file (not its size, not its name)
    code            code_fingerprint(...) of the functions that derive the data (their source text,
                    via inspect.getsource) and the versions of the libraries they call

A load compares both with what the current source and code give (`stale_reason`); on any
difference, or when the file cannot be read whole (truncated, bad header), the cache is rebuilt
from its source with one line on stderr saying why (`say_rebuilding`). Writes go through
common.io.atomic_path, so a crash leaves the old file or the new one, never half of one.

Hashing a 100 MB source takes a fraction of a second, but a load should not pay it every time: the
digest is remembered in a small JSON file keyed by the source's (path, size, mtime), the test make
and git use to tell a file has not changed since it was last read (`source_digest`).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import marshal
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from triptych.common.io import atomic_write_json

__all__ = ["code_fingerprint", "file_sha256", "say_rebuilding", "source_digest", "stale_reason"]

_CHUNK = 1 << 20  # 1 MiB reads: big enough that the loop costs nothing next to the hashing


def code_fingerprint(*parts) -> str:
    """A short hash of the source text of the given functions, classes or modules, and of any plain
    strings (library versions, format names). It changes whenever one of those definitions is edited,
    so a cache stamped with it is rebuilt after the code that made it changes.

    Parts are looked up when called, so a test that swaps in another function sees another fingerprint.
    """
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, str):
            text = part
        else:
            try:
                text = inspect.getsource(part)
            except (OSError, TypeError) as error:
                code = getattr(part, "__code__", None)
                if code is None:  # a builtin: refuse, rather than a fingerprint that never changes
                    raise TypeError(f"code_fingerprint: expected functions, classes, modules or str, "
                                    f"got {part!r} ({error})") from None
                # An install that ships only .pyc: the compiled code changes with the source too.
                text = marshal.dumps(code).hex()
            # The name, not the module: run as `python -m pkg.mod` the same function's module is __main__.
            text = f"{getattr(part, '__qualname__', '')}\n{text}"
        h.update(text.encode("utf-8"))
        h.update(b"\0")  # ("ab", "c") and ("a", "bc") must not hash alike
    return h.hexdigest()[:16]


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in chunks (a 100 MB GGUF never sits in memory twice)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


_MEMO: dict[tuple[str, int, int], str] = {}  # this process's digests: (path, size, mtime_ns) -> sha256


def source_digest(path: str | os.PathLike, memo: str | os.PathLike | None = None) -> str:
    """sha256 of `path`, hashed once per version of the file: remembered in this process and in the
    JSON file `memo` (when given), keyed by (resolved path, size, mtime in ns). A file rewritten in
    place gets a new mtime, so it is hashed again; an unreadable or foreign memo is simply ignored."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _MEMO:
        return _MEMO[key]
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    table: dict = {}
    if memo is not None:
        try:
            table = json.loads(Path(memo).read_text())
            if not isinstance(table, dict):
                table = {}
        except (OSError, ValueError):
            table = {}
        entry = table.get(str(path))
        if isinstance(entry, dict) and {k: entry.get(k) for k in stamp} == stamp and isinstance(entry.get("sha256"), str):
            _MEMO[key] = entry["sha256"]
            return entry["sha256"]
    digest = file_sha256(path)
    _MEMO[key] = digest
    if memo is not None:
        table[str(path)] = {**stamp, "sha256": digest}
        try:
            atomic_write_json(memo, table)
        except OSError:  # a read-only data folder costs a re-hash next time, nothing else
            pass
    return digest


# What a differing field means, in the one line the user reads.
_FIELD_MEANING = {
    "source_sha256": "its source file changed",
    "source_digest": "its source archive changed",
    "code": "the code that converts it changed",
}


def stale_reason(found: Mapping[str, str] | None, want: Mapping[str, str]) -> str | None:
    """None when the recorded key `found` matches `want` on every field of `want`; else why not."""
    if found is None:
        return "it records no key (written by an older version)"
    for field, value in want.items():
        if found.get(field) != value:
            meaning = _FIELD_MEANING.get(field, f"its {field} differs")
            was = found.get(field)
            return f"{meaning}: {field} {str(was)[:16] if was is not None else 'absent'} -> {str(value)[:16]}"
    return None


def say_rebuilding(path: str | os.PathLike, why: str) -> None:
    """The one line a rebuilt cache prints: on stderr, so a command's JSON on stdout stays clean."""
    print(f"triptych: rebuilding {path}: {why}", file=sys.stderr, flush=True)
