"""Read objects out of an R package's lazy-load database (data/Rdata.rdx + data/Rdata.rdb) without R.

The .rdx index is a gzip-compressed serialized R list: `variables` maps each object's name to an
(offset, length) slice of the .rdb, and `compressed` says how every slice is packed. A slice is a
4-byte big-endian uncompressed length, then either zlib data (compressed = TRUE) or one type byte
and the payload (compressed = 2 or 3: b"Z" = raw LZMA2, b"2" = bzip2, b"0" = stored). The unpacked
bytes are an R serialization stream, which the `rdata` package parses and converts to Python
(data frames become pandas DataFrames, character vectors NumPy arrays).
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import warnings
import zlib
from pathlib import Path

# R writes LZMA chunks with xz preset 9|extreme and no container header (src/main/serialize.c).
_LZMA2_RAW = {"format": lzma.FORMAT_RAW, "filters": [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]}


def _unserialize(data: bytes):
    import rdata

    with warnings.catch_warnings():
        # rdata has no tibble constructor and says so, then falls back to data.frame, which is what we want.
        warnings.filterwarnings("ignore", message="Missing constructor for R class", category=UserWarning)
        parsed = rdata.parser.parse_data(data, extension=".rds")
        return rdata.conversion.convert(parsed)


def _unpack(chunk: bytes, compressed) -> bytes:
    (expected,) = struct.unpack(">I", chunk[:4])
    body = chunk[4:]
    if compressed is True or compressed == 1:
        data = zlib.decompress(body)
    else:
        kind, payload = body[:1], body[1:]
        if kind == b"Z":
            data = lzma.decompress(payload, **_LZMA2_RAW)
        elif kind == b"2":
            data = bz2.decompress(payload)
        elif kind == b"0":
            data = payload
        else:
            raise ValueError(f"unknown R lazy-load chunk type {kind!r}")
    if len(data) != expected:
        raise ValueError(f"R lazy-load chunk unpacked to {len(data)} bytes, header says {expected}")
    return data


class LazyLoadDB:
    """`LazyLoadDB(pkg_dir / "data")["name"]` returns one R object, converted by rdata."""

    def __init__(self, folder: str | Path, stem: str = "Rdata"):
        folder = Path(folder)
        self.rdb = folder / f"{stem}.rdb"
        index = _unserialize(gzip.decompress((folder / f"{stem}.rdx").read_bytes()))
        self.variables = {str(k): (int(v[0]), int(v[1])) for k, v in index["variables"].items()}
        flag = index["compressed"][0]
        self.compressed = bool(flag) if flag in (True, False) else int(flag)

    def names(self) -> list[str]:
        return list(self.variables)

    def __getitem__(self, name: str):
        offset, length = self.variables[name]
        with open(self.rdb, "rb") as f:
            f.seek(offset)
            chunk = f.read(length)
        return _unserialize(_unpack(chunk, self.compressed))
