"""triptych.common.io: a failed write leaves the old file whole, a good one replaces it, and the new file has
the permissions an ordinary open() would have given it."""
from __future__ import annotations

import json

import pytest

from triptych.common.io import atomic_save, atomic_write_json, atomic_write_text


def test_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "results.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["results.json"]


def test_a_crash_mid_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "ckpt.bin"
    atomic_write_text(target, "old, complete")

    def half_then_crash(tmp):
        tmp.write_text("new, half writ")
        raise KeyboardInterrupt  # what Ctrl-C raises in the middle of a save

    with pytest.raises(KeyboardInterrupt):
        atomic_save(target, half_then_crash)
    assert target.read_text() == "old, complete"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.bin"]


def test_new_files_get_the_same_mode_as_open_gives(tmp_path):
    reference = tmp_path / "plain.txt"
    reference.write_text("x")  # open(): 0o666 less the umask
    atomic_write_text(tmp_path / "atomic.txt", "x")
    assert (tmp_path / "atomic.txt").stat().st_mode == reference.stat().st_mode
