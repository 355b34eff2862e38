"""Targets that drive an object instead of calling a function once, run in the sandboxed child.

Like worker.py this file imports only the standard library, NumPy and the user's framework: the
child loads it by its path (worker._kinds), under `python -I` or the user's own interpreter.
call(kind, obj, target, live, framework) returns arrays (or a tuple of arrays) for the parent to
judge; whatever the user's object does wrong raises, and the worker turns that into a verdict.

The kinds (the target dict names input keys; `live` holds the inputs in the user's framework):
    optimizer   an optimizer class (or a function returning one, "factory"), built on fresh torch
                parameters with the case's hyperparameters, stepped once per given gradient
                -> the final parameters
    grad_clip   a function clipping .grad of torch parameters in place (some frozen: grad None)
                -> the gradients afterwards
    sampler     a batch sampler called many times on a NumPy dataset -> all x stacked, all y stacked
    sweep       a scalar function called at each value of one argument -> the results, float64
    tokenizer   a tokenizer built from (vocab, merges, special tokens), then encode, decode and
                encode_iterable on each text -> ids, decoded UTF-8 bytes, streamed ids (packed)
    train_bpe   a BPE trainer run on a corpus file written here -> vocab and merges (packed)
A target with "keywords" calls the user's function by the argument names (as the course's own tests
do), otherwise by position. Byte strings and lists of lists travel packed: one flat array and offsets (len n + 1), since the
channel carries plain arrays only (no pickle; NumPy's 'S' dtype would drop trailing NUL bytes).
"""
from __future__ import annotations

import io
import os
import sys
import tempfile

import numpy as np

KINDS: dict = {}


def call(kind: str, obj, target: dict, live: dict, framework: str):
    if kind not in KINDS:
        raise ValueError(f"target kind: expected one of {', '.join(sorted(KINDS)) or 'function, class'}, got {kind!r}")
    return KINDS[kind](obj, target, live, framework)


def _kind(name):
    def register(fn):
        KINDS[name] = fn
        return fn
    return register


# ---------------------------------------------------------------- helpers

def as_numpy(x) -> np.ndarray:
    """An input back as NumPy (the worker converted it to the user's framework), or a user's output."""
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def pack(items, dtype) -> tuple[np.ndarray, np.ndarray]:
    """A list of sequences -> (flat array, offsets): item i is flat[offsets[i]:offsets[i + 1]]."""
    lengths = [len(it) for it in items]
    offsets = np.zeros(len(items) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths, dtype=np.int64)
    flat = np.fromiter((v for it in items for v in it), dtype=dtype, count=int(offsets[-1]))
    return flat, offsets


def unpack_bytes(flat, offsets) -> list[bytes]:
    flat, offsets = as_numpy(flat).astype(np.uint8), as_numpy(offsets)
    return [flat[offsets[i]:offsets[i + 1]].tobytes() for i in range(len(offsets) - 1)]


def _invoke(obj, target: dict, named: list):
    """obj called with [(parameter name, value)]: each value goes to the user's parameter of that
    name or a synonym, the rest by position (binding.py, which the worker loaded before calling
    here), so `get_batch(tokens, batch_size, ...)` is called as readily as `get_batch(dataset, ...)`."""
    args, kwargs = sys.modules["_triptych_binding"].bind(obj, target, named, {})
    return obj(*args, **kwargs)


def _torch(framework: str, what: str):
    if framework != "torch":
        raise TypeError(f"{what} is graded on torch parameters; this file was read as {framework} code "
                        f"(--framework torch)")
    import torch
    return torch


# ---------------------------------------------------------------- optimizer, clipping

@_kind("optimizer")
def _optimizer(obj, target, live, framework):
    torch = _torch(framework, target["name"])
    cls = obj() if target.get("factory") else obj
    order = target["order"]
    params = [torch.nn.Parameter(live[target["params"]][k].clone()) for k in order]
    grads = live[target["grads"]]
    hyper = {k: (tuple(live[k]) if isinstance(live[k], list) else live[k]) for k in target.get("hyper", [])}
    opt = cls(params, **hyper)
    for t in range(int(grads[order[0]].shape[0])):
        opt.zero_grad()
        for p, k in zip(params, order):
            p.grad = grads[k][t].clone()
        opt.step()
    return tuple(p.detach() for p in params)


@_kind("grad_clip")
def _grad_clip(obj, target, live, framework):
    torch = _torch(framework, target["name"])
    params, frozen = [], set(target.get("frozen", []))
    for k in target["order"]:
        p = torch.nn.Parameter(live[target["params"]][k].clone())
        if k in frozen:
            p.requires_grad_(False)  # a frozen parameter: grad stays None
        else:
            p.grad = live[target["grads"]][k].clone()
        params.append(p)
    obj(tuple(params), *[live[a] for a in target.get("args", [])])
    out = []
    for k, p in zip(target["order"], params):
        if k in frozen:
            continue
        if p.grad is None:
            raise ValueError(f"after the call, parameter {k!r} has no .grad (clipping must scale it in place)")
        out.append(p.grad.detach())
    return tuple(out)


# ---------------------------------------------------------------- sampler, sweep

@_kind("sampler")
def _sampler(obj, target, live, framework):
    if framework == "torch":
        import torch
        torch.manual_seed(0)  # a seeded run: the same draws each time this file is checked
    np.random.seed(0)
    dataset = as_numpy(live[target["dataset"]])  # the user gets NumPy, as the course's test passes it
    named = [(target["dataset"], dataset)] + [(a, live[a]) for a in target.get("args", [])]
    xs, ys = [], []
    for _ in range(int(target["draws"])):
        got = _invoke(obj, target, named)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise TypeError(f"{target['name']} returned {type(got).__name__}, expected a pair (x, y)")
        xs.append(as_numpy(got[0]))
        ys.append(as_numpy(got[1]))
    return np.concatenate(xs), np.concatenate(ys)


@_kind("sweep")
def _sweep(obj, target, live, framework):
    over, out = target["over"], []
    for v in as_numpy(live[target["values"]]).tolist():  # Python ints, as a training loop passes them
        got = _invoke(obj, target, [(a, v if a == over else live[a]) for a in target["args"]])
        try:
            out.append(float(got))
        except (TypeError, ValueError):
            raise TypeError(f"{target['name']}({over}={v}) returned {type(got).__name__}, expected a number") from None
    return np.asarray(out, dtype=np.float64)


# ---------------------------------------------------------------- tokenizer, BPE training

def _vocab_merges(live, target):
    v, m = live[target["vocab"]], live[target["merges"]]
    ids = [int(i) for i in as_numpy(v["ids"])]
    vocab = dict(zip(ids, unpack_bytes(v["flat"], v["offsets"])))
    merges = list(zip(unpack_bytes(m["left_flat"], m["left_offsets"]), unpack_bytes(m["right_flat"], m["right_offsets"])))
    return vocab, merges


@_kind("tokenizer")
def _tokenizer(obj, target, live, framework):
    vocab, merges = _vocab_merges(live, target)
    tok = obj(vocab, merges, live.get(target["specials"]))
    ids, decoded, streamed = [], [], []
    for text in live[target["texts"]]:
        try:
            one = [int(i) for i in tok.encode(text)]
            ids.append(one)
            back = tok.decode(one)
            if not isinstance(back, str):
                raise TypeError(f"decode returned {type(back).__name__}, expected str")
            decoded.append(back.encode("utf-8", "surrogatepass"))
            streamed.append([int(i) for i in tok.encode_iterable(io.StringIO(text))])
        except Exception as exc:
            if hasattr(exc, "add_note"):  # the text it failed on, beside the user's own traceback
                exc.add_note(f"on the text {text[:40]!r}")
            raise
    return (*pack(ids, np.int64), *pack(decoded, np.uint8), *pack(streamed, np.int64))


@_kind("train_bpe")
def _train_bpe(obj, target, live, framework):
    folder = tempfile.mkdtemp(prefix="triptych-bpe-")
    path = os.path.join(folder, "corpus.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write(live[target["corpus"]])
    got = _invoke(obj, target, [(target.get("path_name", "input_path"), path)]
                  + [(a, live[a]) for a in target.get("args", [])])
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise TypeError(f"{target['name']} returned {type(got).__name__}, expected (vocab, merges)")
    vocab, merges = got
    if not isinstance(vocab, dict) or not all(isinstance(t, bytes) for t in vocab.values()):
        raise TypeError("vocab: expected a dict {int id: bytes}")
    merges = list(merges)
    if not all(isinstance(m, (tuple, list)) and len(m) == 2 and all(isinstance(x, bytes) for x in m) for m in merges):
        raise TypeError("merges: expected a list of (bytes, bytes) pairs")
    ids = sorted(vocab)
    return (np.asarray(ids, dtype=np.int64), *pack([vocab[i] for i in ids], np.uint8),
            *pack([m[0] for m in merges], np.uint8), *pack([m[1] for m in merges], np.uint8))
