"""Files a user made must survive a crash or Ctrl-C: write to a temporary file beside the target,
fsync, then os.replace (atomic on POSIX), so the old file stays intact until the new one is whole."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path


def _new_file_mode() -> int:
    """The permissions open() would give a new file (0o666 less the umask). mkstemp makes its file
    0o600, private to us; without this, every checkpoint and plot would lose group/other read."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_NEW_FILE_MODE = _new_file_mode()


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path in the target's folder; on success it replaces `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _NEW_FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save(path: str | os.PathLike, save: Callable[[Path], None]) -> None:
    """save(tmp_path) writes the file by any library (np.savez, safetensors, fig.savefig, ...)."""
    with atomic_path(path) as tmp:
        save(tmp)
