"""Course A ("Transformer mechanics"): multi-head attention from parts, then as one class, and the
sinusoidal positional encoding (exercises.md A). Setting: batch 1, T 3, d_model 8, 2 heads.

The signatures are the tour's (`triptych tour` shows `get_multihead_qkv(x, params, n_heads=2)` just
before it points to `exercise new course-a`), so a student who followed it writes these:
- params is a dict w_q, b_q, w_k, b_k, w_v, b_v (w_o, b_o unused here), weights in torch's
  (d_out, d_in) layout, applied as x @ W.T + b;
- masks are boolean, True = may attend (F.scaled_dot_product_attention's and the project's
  convention, not nn.MultiheadAttention's); no case has a fully masked row, so a plain softmax is fine;
- MultiHeadAttention(d_model, n_heads)(query, key, value, mask=None) returns (out, weights) with the
  weights PER HEAD, (B, H, T_q, T_k), as calculate_multihead_attention returns them (nn.MultiheadAttention
  averages them unless average_attn_weights=False; "averaged" is a named mistake here).
The classes' weights live under the names the skeleton fixes (torch: nn.Linear W_q, W_k, W_v, W_o;
NumPy/JAX: W_q, b_q, ..., in (d_out, d_in) layout); the checker loads the reference weights there.
"""
from __future__ import annotations

import ast
import math

import numpy as np

from triptych.common.params import init_mha_params
from triptych.crosscheck.exercises._course_a_skeletons import SKELETONS
from triptych.crosscheck.spec import Case, Exercise, Variant

GROUP = "course-a"
TITLE = "Course A: multi-head attention from parts, as a class, and positional encoding"
ORDER = 10

COURSE_TOL = 1e-3  # the course accepts error <= 1e-3 against the PyTorch reference
FORBIDDEN_IN_CLASS = ("get_multihead_qkv", "calculate_multihead_attention")
WEIGHT_KEYS = ("w_q", "b_q", "w_k", "b_k", "w_v", "b_v", "w_o", "b_o")


# ---------------------------------------------------------------- inputs

def _causal(t):
    return np.tril(np.ones((t, t), dtype=bool))


def _random_mask(rng, t_q, t_k):
    """Every row keeps at least one key and blocks at least one, so neither the mask nor its inverse
    has a fully masked row (the inverted-mask mistake is then finite and nameable)."""
    m = rng.random((t_q, t_k)) < 0.5
    for row in m:
        keep, block = rng.choice(t_k, 2, replace=False)
        row[keep], row[block] = True, False
    return m


def _mask_for(kind, rng, t_q, t_k):
    return None if kind is None else _causal(t_q) if kind == "causal" else _random_mask(rng, t_q, t_k)


def _seq_inputs(b, t_q, d, h, t_k=None, mask=None, flat=False):
    """x (and kv for cross-attention) with MHA weights; flat=True puts the weights at top level,
    where a class's weight list can name them."""
    def make(rng, dt):
        x = rng.standard_normal((b, t_q, d)).astype(dt)
        kv = None if t_k is None else rng.standard_normal((b, t_k, d)).astype(dt)
        params = init_mha_params(d, seed=int(rng.integers(1 << 30)), dtype=dt)
        m = _mask_for(mask, rng, t_q, t_k or t_q)
        if flat:
            return {"query": x, "key": x if kv is None else kv, "value": x if kv is None else kv, "mask": m,
                    "d_model": d, "n_heads": h, **params}
        return {"x": x, "kv": kv, "params": params, "n_heads": h}  # w_o, b_o ride along unused
    return make


def _heads_inputs(b, h, t_q, d, t_k=None, mask=None):
    def make(rng, dt):
        q = rng.standard_normal((b, h, t_q, d)).astype(dt)
        k, v = (rng.standard_normal((b, h, t_k or t_q, d)).astype(dt) for _ in range(2))
        return {"q": q, "k": k, "v": v, "mask": _mask_for(mask, rng, t_q, t_k or t_q)}
    return make


# ---------------------------------------------------------------- the maths, right and wrong (NumPy)

def _softmax(s, axis=-1):
    """A plain softmax, as students write it: a fully masked row gives NaN, as theirs would."""
    with np.errstate(invalid="ignore"):
        e = np.exp(s - s.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)


def _project(x, w, b, bias=True, w_t=True):
    return x @ (w.T if w_t else w) + (b if bias else 0.0)


def _split(y, h, transpose=True):
    B, T, C = y.shape
    return y.reshape(B, T, h, C // h).transpose(0, 2, 1, 3) if transpose else y.reshape(B, h, T, C // h)


def _merge(y, transpose=True):
    B, H, T, D = y.shape
    return (y.transpose(0, 2, 1, 3) if transpose else y).reshape(B, T, H * D)


def _attend(q, k, v, mask, scale="head", axis=-1, mask_mode="where", avg=False):
    """Per-head attention with one knob turned: (out (B, H, T_q, D), weights)."""
    D, H = q.shape[-1], q.shape[1]
    s = q @ np.swapaxes(k, -1, -2) / {"head": math.sqrt(D), "model": math.sqrt(H * D), "none": 1.0}[scale]
    if mask is not None and mask_mode in ("where", "inverted"):
        s = np.where(mask if mask_mode == "where" else ~mask, s, -np.inf)
    w = _softmax(s, axis)
    if mask is not None and mask_mode == "after":
        w = w * mask
    return w @ v, (w.mean(axis=1) if avg else w)


def _qkv(i, bias=True, w_t=True, split_t=True, cross_from_x=False):
    p, h = i["params"], i["n_heads"]
    x = i["x"]
    kv = x if i["kv"] is None or cross_from_x else i["kv"]
    return tuple(_split(_project(src, p[f"w_{n}"], p[f"b_{n}"], bias, w_t), h, split_t)
                 for n, src in (("q", x), ("k", kv), ("v", kv)))


def _mha(i, scale="head", split_t=True, merge_t=True, axis=-1, avg=False, bias=True, out_proj=True,
         mask_mode="where", cross_from_query=False, w_t=True):
    """The course's MultiHeadAttention class with one knob turned: (out, weights)."""
    h = i["n_heads"]
    kv = i["query"] if cross_from_query else i["key"]
    vv = i["query"] if cross_from_query else i["value"]
    q, k, v = (_split(_project(src, i[f"w_{n}"], i[f"b_{n}"], bias, w_t), h, split_t)
               for n, src in (("q", i["query"]), ("k", kv), ("v", vv)))
    heads, w = _attend(q, k, v, i["mask"], scale, axis, mask_mode, avg)
    merged = _merge(heads, merge_t)
    return (_project(merged, i["w_o"], i["b_o"], bias, w_t) if out_proj else merged), w


def _fix(qualname, text, module="numpy_impl.multihead"):
    return (module, qualname, text)


_MHA_CALL = "MultiHeadAttention.__call__"

QKV_VARIANTS = (
    Variant("qkv_split_no_transpose", "q, k, v split by a reshape to (B, H, T, D) WITHOUT the transpose",
            "(B, T, C) must become (B, T, H, D) and then move heads before time; a bare reshape mixes tokens into heads",
            lambda i: _qkv(i, split_t=False), _fix("split_heads", "transpose")),
    Variant("qkv_not_split", "the projections x W^T + b, never split into heads",
            "get_multihead_qkv returns (B, H, T, C / H): reshape to (B, T, H, D) and transpose axes 1 and 2",
            lambda i: tuple(_merge(t) for t in _qkv(i)), _fix("split_heads", "transpose")),
    Variant("qkv_no_bias", "the projections WITHOUT their biases b_q, b_k, b_v",
            "each projection is a Linear with bias: x @ W.T + b", lambda i: _qkv(i, bias=False),
            _fix("linear", "y + b")),
    Variant("qkv_weight_untransposed", "x @ W instead of x @ W.T",
            "the weights are stored (d_out, d_in) as torch's Linear stores them, so a row of x meets W.T",
            lambda i: _qkv(i, w_t=False), _fix("linear", "@ w.T")),
    Variant("qkv_cross_from_x", "k and v projected from x instead of from kv",
            "in cross-attention the queries come from x and the keys and values from the other sequence, kv",
            lambda i: _qkv(i, cross_from_x=True), _fix("get_multihead_qkv", "k = split_heads(linear(kv")),
)

_SDPA = ("numpy_impl.attention", "scaled_dot_product_attention")
ATTENTION_VARIANTS = (
    Variant("cma_no_scale", "attention WITHOUT the 1/sqrt(head size) scale",
            "without it the scores' variance grows with the head size and the softmax saturates",
            lambda i: _attend(i["q"], i["k"], i["v"], i["mask"], scale="none"), (*_SDPA, "math.sqrt(q.shape[-1])")),
    Variant("cma_scale_d_model", "attention scaled by 1/sqrt(d_model) (all heads' width) instead of 1/sqrt(head size)",
            "each head's dot product runs over its own D = d_model / H channels",
            lambda i: _attend(i["q"], i["k"], i["v"], i["mask"], scale="model"), (*_SDPA, "math.sqrt(q.shape[-1])")),
    Variant("cma_softmax_query_axis", "attention with the softmax over the QUERY axis",
            "each query's weights over the keys must sum to 1: softmax over the last axis",
            lambda i: _attend(i["q"], i["k"], i["v"], i["mask"], axis=-2), ("numpy_impl.attention", "attn_softmax", "axis=-1")),
    Variant("cma_mask_inverted", "attention with the mask inverted (True treated as BLOCKED)",
            "here True = may attend (as in F.scaled_dot_product_attention); nn.MultiheadAttention's attn_mask "
            "uses the opposite convention", lambda i: _attend(i["q"], i["k"], i["v"], i["mask"], mask_mode="inverted"),
            ("numpy_impl.attention", "apply_mask", "np.where(mask")),
    Variant("cma_zero_after_softmax", "attention with the blocked weights zeroed AFTER the softmax",
            "blocked keys still sit in the softmax's denominator, so rows no longer sum to 1",
            lambda i: _attend(i["q"], i["k"], i["v"], i["mask"], mask_mode="after"),
            ("numpy_impl.attention", "attn_softmax", "apply_mask(scores, mask)")),
    Variant("cma_weights_averaged", "the right output with the weights AVERAGED over heads",
            "calculate_multihead_attention returns one (T_q, T_k) weight matrix per head: (B, H, T_q, T_k)",
            lambda i: _attend(i["q"], i["k"], i["v"], i["mask"], avg=True), _fix(_MHA_CALL, "weights.mean(axis=1)")),
)

MHA_VARIANTS = (
    Variant("mha_no_scale", "multi-head attention WITHOUT the 1/sqrt(head size) scale",
            "without it the scores grow with the head size and the softmax saturates",
            lambda i: _mha(i, scale="none"), _fix(_MHA_CALL, "math.sqrt(D)")),
    Variant("mha_scale_d_model", "multi-head attention scaled by 1/sqrt(d_model) instead of 1/sqrt(d_model / n_heads)",
            "each head's dot product runs over its own head size", lambda i: _mha(i, scale="model"),
            _fix(_MHA_CALL, "math.sqrt(D)")),
    Variant("mha_split_no_transpose", "heads split (and merged) by bare reshapes, WITHOUT the transposes",
            "(B, T, C) -> (B, T, H, D) -> transpose to (B, H, T, D); a direct view mixes tokens into heads",
            lambda i: _mha(i, split_t=False, merge_t=False), _fix(_MHA_CALL, "reshape(B, T_q, H, D).transpose")),
    Variant("mha_merge_no_transpose", "heads merged by a bare reshape WITHOUT moving them back after time",
            "(B, H, T, D) must be transposed to (B, T, H, D) before the reshape to (B, T, C)",
            lambda i: _mha(i, merge_t=False), _fix(_MHA_CALL, "heads.transpose(0, 2, 1, 3)")),
    Variant("mha_softmax_query_axis", "multi-head attention with the softmax over the QUERY axis",
            "each query's weights over the keys must sum to 1: softmax over the last axis",
            lambda i: _mha(i, axis=-2), _fix(_MHA_CALL, "max(axis=-1")),
    Variant("mha_weights_averaged", "the right output with the weights AVERAGED over heads",
            "this course's class returns per-head weights (B, H, T_q, T_k), as calculate_multihead_attention does",
            lambda i: _mha(i, avg=True), _fix(_MHA_CALL, "weights.mean(axis=1)")),
    Variant("mha_no_bias", "multi-head attention with every bias forgotten (b_q, b_k, b_v, b_o)",
            "the four projections are Linear layers with bias: x @ W.T + b", lambda i: _mha(i, bias=False),
            _fix(_MHA_CALL, 'p["b_q"]')),
    Variant("mha_no_out_proj", "the merged heads WITHOUT the output projection W_o",
            "after merging, the heads are mixed by out = merged @ W_o.T + b_o", lambda i: _mha(i, out_proj=False),
            _fix(_MHA_CALL, 'p["w_o"].T')),
    Variant("mha_mask_inverted", "multi-head attention with the mask inverted (True treated as BLOCKED)",
            "here True = may attend; nn.MultiheadAttention's attn_mask uses the opposite convention",
            lambda i: _mha(i, mask_mode="inverted"), _fix(_MHA_CALL, "np.where(mask, scores")),
    Variant("mha_cross_from_query", "keys and values projected from the QUERY sequence instead of key/value",
            "in cross-attention k = key @ W_k.T + b_k and v = value @ W_v.T + b_v come from the other sequence",
            lambda i: _mha(i, cross_from_query=True), _fix(_MHA_CALL, 'k = (key @ p["w_k"]')),
    Variant("mha_weight_untransposed", "every projection as x @ W instead of x @ W.T",
            "the weights are stored (d_out, d_in), as torch's Linear stores them", lambda i: _mha(i, w_t=False),
            _fix(_MHA_CALL, 'query @ p["w_q"].T')),
)


def _table(t, d, concat=False, start=0, swap=False, exponent=2):
    """The sinusoidal table in float64 (semantics.md), with one knob turned."""
    pos = np.arange(start, start + t, dtype=np.float64)[:, None]
    angles = pos * 10000.0 ** (-exponent * np.arange(d // 2, dtype=np.float64) / d)
    first, second = (np.cos(angles), np.sin(angles)) if swap else (np.sin(angles), np.cos(angles))
    if concat:
        return np.concatenate([first, second], axis=-1)
    pe = np.empty((t, d))
    pe[:, 0::2], pe[:, 1::2] = first, second
    return pe


def _pe(i, **knobs):
    x = i["x"]
    return x + _table(x.shape[1], x.shape[2], **knobs).astype(x.dtype)


_PE = ("numpy_impl.positional", "sinusoidal_encoding")
PE_VARIANTS = (
    Variant("pe_concatenated", "sin and cos CONCATENATED ([sin ... | cos ...]) instead of interleaved",
            "PE[pos, 2i] = sin and PE[pos, 2i+1] = cos: even channels sin, odd channels cos",
            lambda i: _pe(i, concat=True), (*_PE, "pe[:, 0::2]")),
    Variant("pe_sin_cos_swapped", "cos on the even channels and sin on the odd ones",
            "position 0 must read [0, 1, 0, 1, ...]: sin on even channels, cos on odd", lambda i: _pe(i, swap=True),
            (*_PE, "pe[:, 0::2]")),
    Variant("pe_positions_from_1", "positions counted from 1 instead of 0",
            "the first token has position 0, so row 0 of the table is [0, 1, 0, 1, ...]",
            lambda i: _pe(i, start=1), (*_PE, "np.arange(max_len")),
    Variant("pe_exponent_4i", "frequencies 10000^(-4i/d): the 2 of 2i counted twice",
            "channel pair i uses 10000^(-2i/d); with arange(0, d, 2) the 2 is already in the index",
            lambda i: _pe(i, exponent=4), (*_PE, "base ** (-np.arange(0, d_model, 2")),
    Variant("pe_batch_axis", "the table added along the BATCH axis (x + pe[:B] broadcast over time)",
            "a (max_len, 1, d) table is the seq-first tutorial's layout: for batch-first x add pe[:T] along axis 1",
            lambda i: i["x"] + _table(i["x"].shape[0], i["x"].shape[2])[:, None, :].astype(i["x"].dtype),
            ("numpy_impl.positional", "PositionalEncoding.__call__", "self.pe[: x.shape[1]]")),
)


# ---------------------------------------------------------------- references (each backend's own code)

def _qkv_reference(m, i):
    return m["multihead"].get_multihead_qkv(i["x"], i["params"], i["n_heads"], kv=i["kv"])


def _mha_reference(m, i):
    params = {k: i[k] for k in WEIGHT_KEYS}
    layer = m["multihead"].MultiHeadAttention(i["d_model"], i["n_heads"], params=params)
    return layer(i["query"], i["key"], i["value"], mask=i["mask"], average_attn_weights=False)


def _class_must_not_call(tree: ast.Module, source: str) -> list[str]:
    """The course demands the class do the whole computation itself: any use of the standalone
    functions inside `class MultiHeadAttention` fails it, even when the numbers are right."""
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "MultiHeadAttention":
            for sub in ast.walk(node):
                name = sub.id if isinstance(sub, ast.Name) else sub.attr if isinstance(sub, ast.Attribute) else None
                if name in FORBIDDEN_IN_CLASS:
                    problems.append(f"MultiHeadAttention uses {name} (line {sub.lineno}): the course asks the "
                                    f"class to implement the whole computation itself")
    return problems


_LINEARS = ("W_q", "W_k", "W_v", "W_o")
MHA_WEIGHTS = {
    "torch": [(f"{n}.{part}", f"{'w' if part == 'weight' else 'b'}_{n[-1]}") for n in _LINEARS
              for part in ("weight", "bias")],
    "numpy": [(f"{kind}_{n[-1]}", f"{kind.lower()}_{n[-1]}") for n in _LINEARS for kind in ("W", "b")],
}
MHA_WEIGHTS["jax"] = MHA_WEIGHTS["numpy"]

EXERCISES = [
    Exercise(
        "get_multihead_qkv", GROUP, "get_multihead_qkv(x, params, n_heads, kv=None)",
        "x (B, T_q, C), kv (B, T_k, C) or None (= x), params {w_q, b_q, w_k, b_k, w_v, b_v} (weights (C, C), "
        "x @ W.T + b) -> q (B, H, T_q, C/H), k, v (B, H, T_k, C/H)",
        "the three projections split into heads vs each backend's get_multihead_qkv",
        target={"name": "get_multihead_qkv", "args": ["x", "params", "n_heads"], "kwargs": ["kv"]},
        reference=_qkv_reference, outputs=("q", "k", "v"),
        cases=(Case("course setting (1, 3, 8), 2 heads", _seq_inputs(1, 3, 8, 2), course_tol=COURSE_TOL),
               Case("(2, 6, 12), 3 heads (float32)", _seq_inputs(2, 6, 12, 3), dtype="float32"),
               Case("cross: T_q 4, T_k 7, batch 3, 4 heads", _seq_inputs(3, 4, 16, 4, t_k=7))),
        variants=QKV_VARIANTS,
    ),
    Exercise(
        "calculate_multihead_attention", GROUP, "calculate_multihead_attention(q, k, v, mask=None)",
        "q (B, H, T_q, D), k, v (B, H, T_k, D), mask bool (T_q, T_k) True = may attend, or None "
        "-> out (B, H, T_q, D), weights (B, H, T_q, T_k)",
        "per-head softmax(q k^T / sqrt(D)) v and its weights vs each backend's calculate_multihead_attention",
        target={"name": "calculate_multihead_attention", "args": ["q", "k", "v"], "kwargs": ["mask"]},
        reference=lambda m, i: m["multihead"].calculate_multihead_attention(i["q"], i["k"], i["v"], i["mask"]),
        outputs=("out", "weights"),
        cases=(Case("course setting (1, 2, 3, 4)", _heads_inputs(1, 2, 3, 4), course_tol=COURSE_TOL),
               Case("course setting, causal mask", _heads_inputs(1, 2, 3, 4, mask="causal"), course_tol=COURSE_TOL),
               Case("T_q 4 != T_k 7, random mask (float32)", _heads_inputs(2, 3, 4, 5, t_k=7, mask="random"),
                    dtype="float32"),
               Case("batch 3, 4 heads, causal", _heads_inputs(3, 4, 6, 8, mask="causal"))),
        variants=ATTENTION_VARIANTS,
        notes="mask: bool, True = may attend (F.scaled_dot_product_attention's convention).",
    ),
    Exercise(
        "MultiHeadAttention", GROUP, "MultiHeadAttention(d_model, n_heads)(query, key, value, mask=None)",
        "query (B, T_q, C), key/value (B, T_k, C), mask bool (T_q, T_k) True = may attend -> "
        "out (B, T_q, C), weights per head (B, H, T_q, T_k)",
        "the class with the reference weights loaded into W_q, W_k, W_v, W_o vs each backend's MultiHeadAttention "
        "(torch: nn.MultiheadAttention) on self, masked self and cross-attention; it must not call the standalone functions",
        target={"kind": "class", "name": "MultiHeadAttention", "init": ["d_model", "n_heads"], "weights": MHA_WEIGHTS,
                "args": ["query", "key", "value"], "kwargs": ["mask"]},
        reference=_mha_reference, outputs=("out", "weights"),
        cases=(Case("course setting: self (1, 3, 8), 2 heads", _seq_inputs(1, 3, 8, 2, flat=True), course_tol=COURSE_TOL),
               Case("course setting: masked self", _seq_inputs(1, 3, 8, 2, mask="causal", flat=True),
                    course_tol=COURSE_TOL),
               Case("course setting: cross, T_k 5", _seq_inputs(1, 3, 8, 2, t_k=5, flat=True), course_tol=COURSE_TOL),
               Case("(2, 6, 12), 3 heads, causal (float32)", _seq_inputs(2, 6, 12, 3, mask="causal", flat=True),
                    dtype="float32"),
               Case("cross T_q 4, T_k 7, batch 3, random mask", _seq_inputs(3, 4, 16, 4, t_k=7, mask="random", flat=True))),
        variants=MHA_VARIANTS, static=_class_must_not_call, skeleton=SKELETONS["MultiHeadAttention"],
        notes="Weights: torch nn.Linear attributes W_q, W_k, W_v, W_o; NumPy/JAX attributes W_q, b_q, ..., W_o, b_o "
              "in (d_out, d_in) layout. Returns per-head weights. Must not call get_multihead_qkv or "
              "calculate_multihead_attention.",
    ),
    Exercise(
        "PositionalEncoding", GROUP, "PositionalEncoding(d_model, max_len=5000)(x)",
        "x (B, T, d_model), batch-first -> x + PE[:T], PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...)",
        "the encoded input vs each backend's PositionalEncoding (a table built in float64, semantics.md); a table "
        "built in float32 passes (tolerance kind 'positional')",
        target={"kind": "class", "name": "PositionalEncoding", "init": ["d_model"], "args": ["x"]},
        reference=lambda m, i: m["positional"].PositionalEncoding(i["d_model"])(i["x"]),
        cases=(Case("course setting (1, 3, 8)", lambda rng, dt: {"x": rng.standard_normal((1, 3, 8)).astype(dt),
                                                                 "d_model": 8}, course_tol=COURSE_TOL),
               Case("(4, 50, 16)", lambda rng, dt: {"x": rng.standard_normal((4, 50, 16)).astype(dt), "d_model": 16}),
               Case("(2, 128, 32) (float32)", lambda rng, dt: {"x": rng.standard_normal((2, 128, 32)).astype(dt),
                                                               "d_model": 32}, dtype="float32")),
        variants=PE_VARIANTS, tol_kind="positional", skeleton=SKELETONS["PositionalEncoding"],
        notes="No dropout (the eval-mode layer). Return x's dtype.",
    ),
]
