"""Caches under the data folder (common.cache): rebuilt, with one line saying why, when the source's
bytes change (even at the same size), when the code that converts it changes, and when the file is
truncated or its header is garbage; never trusted, never needing a hand to delete them.

The cache logic runs on tiny fake sources in a private data folder (no 20 s GGUF parse); the real
conversion against Hugging Face is tests/test_pretrained_smollm2.py's.
"""
from __future__ import annotations

import importlib
import json
import os
import sys

import numpy as np
import pytest

from triptych.common import cache
from triptych.pretrained import smollm2

import triptych.bpe.smollm2 as bpe_smollm2


# ------------------------------------------------------------------------------------- common.cache


def test_code_fingerprint_follows_the_source_text(tmp_path, monkeypatch):
    module = tmp_path / "convert_mod.py"
    module.write_text("def convert(w):\n    return w.T\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("convert_mod")
    first = cache.code_fingerprint(mod.convert, "lib 1.0")
    assert cache.code_fingerprint(mod.convert, "lib 1.0") == first  # stable for the same code
    assert cache.code_fingerprint(mod.convert, "lib 1.1") != first  # a library version is part of it
    module.write_text("def convert(w):\n    return w.T.copy()  # edited\n")
    os.utime(module, ns=(module.stat().st_atime_ns, module.stat().st_mtime_ns + 10**9))
    mod = importlib.reload(mod)
    assert cache.code_fingerprint(mod.convert, "lib 1.0") != first
    with pytest.raises(TypeError, match="code_fingerprint"):
        cache.code_fingerprint(len)  # a builtin has no source: refusing beats a fingerprint that never changes
    # Without a source file (an install of .pyc only) the compiled code stands in, and still tells edits apart.
    one, two = {}, {}
    exec("def convert(w):\n    return w.T\n", one)
    exec("def convert(w):\n    return w\n", two)
    assert cache.code_fingerprint(one["convert"]) != cache.code_fingerprint(two["convert"])
    sys.modules.pop("convert_mod", None)


def test_source_digest_hashes_content_once_per_version(tmp_path, monkeypatch):
    import hashlib

    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"x" * 1000)
    b.write_bytes(b"y" * 1000)
    memo = tmp_path / "digests.json"
    assert cache.source_digest(a, memo) == hashlib.sha256(b"x" * 1000).hexdigest()
    assert cache.source_digest(b, memo) != cache.source_digest(a, memo)  # same size, other bytes
    assert set(json.loads(memo.read_text())) == {str(a.resolve()), str(b.resolve())}
    # Another process (empty in-memory table) reads the digest from the memo instead of hashing.
    monkeypatch.setattr(cache, "_MEMO", {})
    monkeypatch.setattr(cache, "file_sha256", lambda p: pytest.fail(f"re-hashed {p} although it had not changed"))
    assert cache.source_digest(a, memo) == hashlib.sha256(b"x" * 1000).hexdigest()
    monkeypatch.undo()
    # Rewritten in place at the same size: the new mtime makes it hash again.
    st = a.stat()
    a.write_bytes(b"z" * 1000)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cache.source_digest(a, memo) == hashlib.sha256(b"z" * 1000).hexdigest()
    memo.write_text("not json")  # a damaged memo is ignored, then replaced
    assert cache.source_digest(b, memo) == hashlib.sha256(b"y" * 1000).hexdigest()


def test_stale_reason_names_what_changed():
    want = {"source_sha256": "a" * 64, "code": "c" * 16}
    assert cache.stale_reason(dict(want, extra="kept"), want) is None
    assert "source file changed" in cache.stale_reason(dict(want, source_sha256="b" * 64), want)
    assert "code that converts it changed" in cache.stale_reason(dict(want, code="d" * 16), want)
    assert "older version" in cache.stale_reason(None, want)


# ------------------------------------------------------------------------- pretrained.smollm2 cache


def _fake_config():
    return smollm2.SmolLM2Config(vocab_size=4, hidden_size=2, intermediate_size=3, num_hidden_layers=1,
                                 num_attention_heads=1, num_key_value_heads=1, head_dim=2,
                                 max_position_embeddings=8, rope_theta=10.0, rms_norm_eps=1e-5,
                                 tie_word_embeddings=True)


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """A private data folder and a 16-byte stand-in GGUF whose 'conversion' counts its runs."""
    monkeypatch.setenv("TRIPTYCH_DATA", str(tmp_path / "data"))
    source = tmp_path / smollm2.GGUF_NAME
    source.write_bytes(b"gguf" * 4)
    monkeypatch.setattr(smollm2, "gguf_path", lambda: source)
    built = []

    def fake_read(path):
        built.append(path)
        return {"model.norm.weight": np.array([1.0, 2.0], np.float32) * len(built)}, _fake_config()

    monkeypatch.setattr(smollm2, "read_gguf", fake_read)
    return source, built


def _rewrite_same_size(path, data):
    st = path.stat()
    assert len(data) == st.st_size
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_weights_cache_written_once_atomically(fake_gguf, capsys):
    _, built = fake_gguf
    first, config = smollm2.load()
    target = smollm2.cache_path()
    assert target.is_file() and "data" in target.parts
    assert not list(target.parent.glob("*.tmp"))  # the atomic write left no temporary
    second, config2 = smollm2.load()
    assert len(built) == 1 and config2 == config == smollm2.model_config()
    assert np.array_equal(second["model.norm.weight"], first["model.norm.weight"])
    assert capsys.readouterr().err == ""  # a first build and a cache hit say nothing


def test_weights_cache_rebuilt_when_the_source_bytes_change_at_the_same_size(fake_gguf, capsys):
    source, built = fake_gguf
    smollm2.load()
    _rewrite_same_size(source, b"GGUF" * 4)  # the old key (format and size) would have trusted the cache
    again, _ = smollm2.load()
    assert len(built) == 2 and np.array_equal(again["model.norm.weight"], [2.0, 4.0])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(smollm2.cache_path()) in err[0] and "source file changed" in err[0]


def test_weights_cache_rebuilt_when_the_converting_code_changes(fake_gguf, monkeypatch, capsys):
    _, built = fake_gguf
    smollm2.load()
    before = smollm2.conversion_fingerprint()

    def fixed_read(path):  # the conversion after a fix: another function, so another fingerprint
        built.append(path)
        return {"model.norm.weight": np.array([-1.0, -2.0], np.float32)}, _fake_config()

    monkeypatch.setattr(smollm2, "read_gguf", fixed_read)
    assert smollm2.conversion_fingerprint() != before
    fixed, _ = smollm2.load()
    assert len(built) == 2 and np.array_equal(fixed["model.norm.weight"], [-1.0, -2.0])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "code that converts it changed" in err[0]
    assert smollm2.load()[0]["model.norm.weight"].tolist() == [-1.0, -2.0] and len(built) == 2


def test_fingerprint_covers_the_unpermutation_and_the_gguf_library(monkeypatch):
    # The Q/K un-permutation lives in numpy_impl.positional, outside this module; a fix there must
    # invalidate caches too. So must another gguf (its dequantize makes the numbers).
    import importlib.metadata

    import numpy_impl.positional as positional

    before = smollm2.conversion_fingerprint()
    monkeypatch.setattr(positional, "rope_interleaved_to_half", positional.rope_half_to_interleaved)
    assert smollm2.conversion_fingerprint() != before
    monkeypatch.undo()
    assert smollm2.conversion_fingerprint() == before
    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.0" if name == "gguf" else real_version(name))
    assert smollm2.conversion_fingerprint() != before


@pytest.mark.parametrize("damage", ["truncated", "bad header", "empty", "old format"])
def test_corrupt_or_old_weights_cache_is_rebuilt(fake_gguf, capsys, damage):
    from safetensors.numpy import save_file

    _, built = fake_gguf
    good, _ = smollm2.load()
    target = smollm2.cache_path()
    data = target.read_bytes()
    if damage == "truncated":
        target.write_bytes(data[:-3])
    elif damage == "bad header":
        target.write_bytes(b"\xff" * 8 + data[8:])
    elif damage == "empty":
        target.write_bytes(b"")
    else:  # what the size-keyed version wrote: right size, no content hash, no code fingerprint
        save_file({"model.norm.weight": np.zeros(2, np.float32)}, str(target),
                  metadata={"format_version": "1", "source_bytes": "16",
                            "config": json.dumps(_fake_config().__dict__)})
    capsys.readouterr()
    assert smollm2.model_config() == _fake_config()  # the metadata-only read does not trust it either
    rebuilt, _ = smollm2.load()
    assert len(built) >= 2
    assert np.array_equal(rebuilt["model.norm.weight"], np.array([1.0, 2.0], np.float32) * len(built))
    err = capsys.readouterr().err
    assert ("unreadable" if damage != "old format" else "older version") in err
    assert smollm2._read_cache(target, smollm2._cache_key(smollm2.gguf_path()))[1] is None  # whole again
    assert good["model.norm.weight"].tolist() == [1.0, 2.0]


def test_load_without_cache_touches_no_file(fake_gguf, tmp_path):
    _, built = fake_gguf
    smollm2.load(cache=False)
    smollm2.load(cache=False)
    assert len(built) == 2 and not (tmp_path / "data").exists()


# ---------------------------------------------------------------------------- bpe.smollm2 tokenizer


@pytest.fixture
def fake_tokenizer_source(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIPTYCH_DATA", str(tmp_path / "data"))
    source = tmp_path / smollm2.GGUF_NAME
    source.write_bytes(b"gguf" * 4)
    monkeypatch.setattr(bpe_smollm2, "gguf_path", lambda: source)
    built = []

    def fake_save(out, tok=None):
        built.append(out)
        out.write_text(json.dumps({"model": {"vocab": {"a": 0}}, "build": len(built)}))

    monkeypatch.setattr(bpe_smollm2, "save_tokenizer_json", fake_save)
    return source, built


def test_tokenizer_json_rebuilt_on_source_code_or_damage(fake_tokenizer_source, monkeypatch, capsys):
    source, built = fake_tokenizer_source
    path = bpe_smollm2.tokenizer_json()
    assert bpe_smollm2.tokenizer_json() == path and len(built) == 1
    assert capsys.readouterr().err == ""

    _rewrite_same_size(source, b"GGUF" * 4)
    bpe_smollm2.tokenizer_json()
    assert len(built) == 2 and "source file changed" in capsys.readouterr().err

    path.write_text(path.read_text()[:-5])  # truncated
    bpe_smollm2.tokenizer_json()
    assert len(built) == 3 and "contents differ" in capsys.readouterr().err
    assert json.loads(path.read_text())["build"] == 3

    real_fingerprint = bpe_smollm2.conversion_fingerprint()
    monkeypatch.setattr(bpe_smollm2, "conversion_fingerprint", lambda: real_fingerprint[::-1])
    bpe_smollm2.tokenizer_json()
    assert len(built) == 4 and "code that converts it changed" in capsys.readouterr().err

    path.with_name("key.json").unlink()  # a cache from before keys were recorded
    bpe_smollm2.tokenizer_json()
    assert len(built) == 5 and "older version" in capsys.readouterr().err


# ------------------------------------------------------------------------------ corpora datasets


@pytest.fixture
def fake_brown(tmp_path, monkeypatch):
    """A private data folder and a stand-in for the Brown download whose conversion counts its runs."""
    from triptych import corpora
    from triptych.corpora import fetch

    monkeypatch.setenv("TRIPTYCH_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(fetch, "download", lambda source, on_bytes: b"tarball")
    built = []

    def fake_convert(archive, out, scratch):
        built.append(archive)
        (out / "ca01").write_text(f"The/at jury/nn build {len(built)}\n")
        return {"documents": 1}

    monkeypatch.setitem(fetch.CONVERTERS, "brown", fake_convert)
    monkeypatch.setattr(fetch, "convert_brown", fake_convert)  # what the fingerprint reads
    monkeypatch.setattr(corpora, "_WARNED", set())
    return fetch, built


def _fetch(fetch):
    return fetch.fetch_one("brown", force=False, on_stage=lambda s: None, on_bytes=lambda n: None)["status"]


def test_dataset_converted_again_when_its_converter_changes(fake_brown, monkeypatch, capsys):
    from triptych import corpora
    fetch, built = fake_brown
    assert _fetch(fetch) == "fetched" and _fetch(fetch) == "present" and len(built) == 1
    assert capsys.readouterr().err == ""
    real = fetch.converter_fingerprint
    monkeypatch.setattr(fetch, "converter_fingerprint", lambda name: real(name)[::-1])  # the converter was edited
    # A loader still reads it but says, once, that it is out of date and what rebuilds it.
    corpora.require("brown")
    corpora.require("brown")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out of date" in err[0] and "code that converts it changed" in err[0]
    assert "triptych.corpora.fetch --only brown" in err[0]
    assert _fetch(fetch) == "rebuilt" and len(built) == 2  # no --force, no deleting by hand
    assert "rebuilding" in capsys.readouterr().err
    assert _fetch(fetch) == "present"


def test_damaged_dataset_is_not_read_and_fetch_rebuilds_it(fake_brown, capsys):
    from triptych import corpora
    fetch, built = fake_brown
    _fetch(fetch)
    folder = corpora.require("brown")
    (folder / "ca01").write_text("The/at")  # cut short
    with pytest.raises(corpora.DataMissingError, match=r"damaged \(ca01 is missing or cut short\).*--only brown"):
        corpora.require("brown")
    assert _fetch(fetch) == "rebuilt" and len(built) == 2
    assert "ca01 is missing or differs" in capsys.readouterr().err
    assert (corpora.require("brown") / "ca01").read_text() == "The/at jury/nn build 2\n"
    # Same size, other bytes: require's size check passes it, fetch's sha256 check does not.
    (folder / "ca01").write_text("The/at jury/nn build 9\n")
    assert _fetch(fetch) == "rebuilt" and len(built) == 3
