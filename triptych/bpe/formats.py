"""Reading and writing tokenizer files: GPT-2's vocab.json + merges.txt, Hugging Face tokenizer.json,
and the tokenizer fields of a GGUF model file (llama.cpp's format).

Inside `bpe`, tokens are bytes. The files store them as text, and this is the one place that converts.

Why a mapping at all: a token such as b" the" or b"\\xe4\\xb8" (half of a CJK character) is not
always valid UTF-8, and bytes like space, newline or 0x00 make merges.txt ("left right" per line)
ambiguous. GPT-2's `bytes_to_unicode` gives each of the 256 bytes a printable, non-space character:
the 188 printable bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves, and the other 68
(control codes, space, 0x7f-0xa0, 0xad) get the characters U+0100, U+0101, ... in byte order. So
the space byte is 'Ġ' (U+0120), newline 'Ċ' (U+010A), and b" the" is written "Ġthe". A file token
is decoded by mapping each character back to its byte.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from triptych.common.checks import InputError

__all__ = ["bytes_to_unicode", "gguf_chat_template", "token_to_text", "text_to_token", "load_vocab_merges", "save_vocab_merges",
           "load_tokenizer_json", "load_gguf"]


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """byte value -> its printable stand-in character (GPT-2's table, see the module docstring)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@lru_cache(maxsize=1)
def _unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def token_to_text(token: bytes) -> str:
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def text_to_token(text: str, where: str = "token") -> bytes:
    table = _unicode_to_bytes()
    try:
        return bytes(table[c] for c in text)
    except KeyError as e:
        raise InputError(f"{where}: expected characters of GPT-2's byte-to-unicode table, got {e.args[0]!r} "
                         f"in {text!r}") from None


def _read_json(path, what: str):
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what}: expected an existing file, got {str(path)!r} (not found)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{what}: expected a JSON file, got {str(path)!r} ({e})") from None


def _parse_merges(lines, what: str) -> list[tuple[bytes, bytes]]:
    """Merges as 'left right' strings (merges.txt, older tokenizer.json) or [left, right] lists."""
    merges = []
    for n, m in enumerate(lines):
        parts = m.split(" ") if isinstance(m, str) else list(m)
        if len(parts) != 2 or not all(isinstance(p, str) and p for p in parts):
            raise InputError(f"{what}: expected merge {n} as 'left right', got {m!r}")
        merges.append((text_to_token(parts[0], what), text_to_token(parts[1], what)))
    return merges


def _vocab_from_text(vocab_text: dict, specials: set[str], what: str) -> dict[int, bytes]:
    """{file token: id} -> {id: bytes}; special tokens are stored as their own UTF-8 text, not mapped."""
    vocab = {}
    for tok, i in vocab_text.items():
        if not isinstance(i, int) or i < 0:
            raise InputError(f"{what}: expected non-negative integer ids, got {tok!r}: {i!r}")
        vocab[i] = tok.encode("utf-8") if tok in specials else text_to_token(tok, what)
    return vocab


def load_vocab_merges(vocab_path, merges_path, special_tokens=None):
    """GPT-2-style vocab.json ({token: id}) + merges.txt (an optional '#version' line, then 'left right').
    Returns (vocab {id: bytes}, merges [(bytes, bytes)])."""
    specials = set(special_tokens or ())
    vocab_text = _read_json(vocab_path, "vocab_path")
    if not isinstance(vocab_text, dict):
        raise InputError(f"vocab_path: expected a JSON object {{token: id}}, got {type(vocab_text).__name__}")
    path = Path(merges_path)
    if not path.is_file():
        raise InputError(f"merges_path: expected an existing file, got {str(path)!r} (not found)")
    lines = [ln for ln in path.read_text(encoding="utf-8").split("\n") if ln and not ln.startswith("#version")]
    return _vocab_from_text(vocab_text, specials, "vocab_path"), _parse_merges(lines, "merges_path")


def save_vocab_merges(vocab: dict[int, bytes], merges, folder, special_tokens=()) -> tuple[Path, Path]:
    """Write vocab.json and merges.txt (GPT-2's layout) into `folder`; returns the two paths."""
    from triptych.common.io import atomic_write_text

    folder = Path(folder)
    specials = {s.encode("utf-8") for s in special_tokens}
    text = {(t.decode("utf-8") if t in specials else token_to_text(t)): i for i, t in sorted(vocab.items())}
    atomic_write_text(folder / "vocab.json", json.dumps(text, ensure_ascii=False, indent=0))
    lines = ["#version: 0.2"] + [f"{token_to_text(a)} {token_to_text(b)}" for a, b in merges]
    atomic_write_text(folder / "merges.txt", "\n".join(lines) + "\n")
    return folder / "vocab.json", folder / "merges.txt"


def load_tokenizer_json(path):
    """A Hugging Face tokenizer.json holding a byte-level BPE. Returns (vocab, merges, special tokens):
    every added token counts as special (matched in the text before pre-tokenization)."""
    data = _read_json(path, "path")
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE":
        got = model.get("type") if isinstance(model, dict) else type(model).__name__
        raise InputError(f"path: expected a tokenizer.json with a BPE model, got model type {got!r}")
    pre = data.get("pre_tokenizer") or {}
    if pre.get("type") != "ByteLevel" or not pre.get("use_regex", True) or pre.get("add_prefix_space"):
        raise InputError("path: expected a ByteLevel pre-tokenizer with GPT-2's regex and no prefix space, "
                         f"got {json.dumps(pre)[:200]}")
    unsupported = {k: model[k] for k in ("dropout", "byte_fallback", "ignore_merges", "continuing_subword_prefix",
                                         "end_of_word_suffix") if model.get(k)}
    if unsupported:  # each changes how merges apply (ignore_merges: Llama 3 looks a whole piece up first)
        raise InputError(f"path: expected a plain byte-level BPE model, got {unsupported}")
    if data.get("normalizer"):
        raise InputError(f"path: expected no normalizer, got {json.dumps(data['normalizer'])[:200]}")
    added = data.get("added_tokens") or []
    odd = [t["content"] for t in added if t.get("lstrip") or t.get("rstrip") or t.get("single_word")]
    if odd:
        raise InputError(f"path: expected added tokens matched exactly (no lstrip, rstrip, single_word), got {odd[:3]}")
    specials = [t["content"] for t in sorted(added, key=lambda t: t["id"])]
    vocab = _vocab_from_text(model["vocab"], set(specials), "path")
    for t in added:
        vocab[t["id"]] = t["content"].encode("utf-8")
    return vocab, _parse_merges(model["merges"], "path"), specials


# tokenizer.ggml.pre values whose pre-tokenizer is GPT-2's regex (llama.cpp's llama-vocab.cpp, and HF's
# GGUF conversion, which gives these a plain ByteLevel pre-tokenizer).
GGUF_GPT2_PRE = ("gpt2", "smollm")


def gguf_chat_template(path) -> str:
    """The chat template (a Jinja string) stored in a GGUF's tokenizer.chat_template field."""
    import gguf

    fields = gguf.GGUFReader(Path(path)).fields
    if "tokenizer.chat_template" not in fields:
        raise InputError(f"path: expected a GGUF with a tokenizer.chat_template field, got {str(path)!r} without one")
    return fields["tokenizer.chat_template"].contents()


def load_gguf(path, any_pre: bool = False):
    """The tokenizer stored in a GGUF file's metadata (tokenizer.ggml.*), model 'gpt2' (byte-level BPE).
    Tokens of type 3 (control) and 4 (user-defined) are special. Returns (vocab, merges, specials).
    A pre-tokenizer other than GPT-2's (tokenizer.ggml.pre, e.g. 'llama-bpe') is an error unless
    any_pre is set (the caller then passes the right pattern to Tokenizer)."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise InputError(f"path: expected an existing .gguf file, got {str(path)!r} (not found)")
    try:
        fields = gguf.GGUFReader(path).fields
    except (ValueError, OSError) as e:
        raise InputError(f"path: expected a GGUF file, got {str(path)!r} ({e})") from None
    model = fields["tokenizer.ggml.model"].contents() if "tokenizer.ggml.model" in fields else None
    if model != "gpt2":
        raise InputError(f"path: expected tokenizer.ggml.model 'gpt2' (byte-level BPE), got {model!r}")
    pre = fields["tokenizer.ggml.pre"].contents() if "tokenizer.ggml.pre" in fields else "gpt2"
    if pre not in GGUF_GPT2_PRE and not any_pre:
        raise InputError(f"path: expected tokenizer.ggml.pre in {GGUF_GPT2_PRE} (GPT-2's regex), got {pre!r}: "
                         "pass that tokenizer's regex as pattern=")
    tokens = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    specials = [t for t, ty in zip(tokens, types) if ty in (3, 4)]
    special_set = set(specials)
    vocab = {i: (t.encode("utf-8") if t in special_set else text_to_token(t, "path")) for i, t in enumerate(tokens)}
    return vocab, _parse_merges(fields["tokenizer.ggml.merges"].contents(), "path"), specials
