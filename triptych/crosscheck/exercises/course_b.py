"""Course B ("Attention and Transformers"): attention as one-line steps, with the course's own
signatures (exercises.md B), so a student's notebook functions are called exactly as written.

Mask conventions: real, correct submissions disagree. make_causal_mask may return float tril ones
(1 = attend), bool True = attend, or bool True = blocked; each is reported, not failed. Then
apply_causal_mask is graded with the student's OWN mask (the child calls their make_causal_mask
first), and self_attention end to end decides.
"""
from __future__ import annotations

import math

import numpy as np

from triptych.crosscheck.exercises._conventions import mask_finite_fill
from triptych.crosscheck.spec import Case, Exercise, Variant

GROUP = "course-b"
TITLE = "Course B: attention decomposed into one-line steps"
ORDER = 20

COURSE_TOL = 1e-4  # the course's own test: pass when max |diff| <= 1e-4


# ---------------------------------------------------------------- inputs

def _x(shape):
    return lambda rng, dt: {"x": rng.standard_normal(shape).astype(dt)}


def _qk(b, h, t, d, t_k=None):
    def make(rng, dt):
        return {"Q": rng.standard_normal((b, h, t, d)).astype(dt),
                "K": rng.standard_normal((b, h, t_k or t, d)).astype(dt)}
    return make


def _scores(b, h, t, n_embd, n_heads, masked=False):
    def make(rng, dt):
        a = rng.standard_normal((b, h, t, t)).astype(dt) * 3
        if masked:  # scores after a causal mask: -inf above the diagonal, as the course's steps pass them
            a = np.where(np.tril(np.ones((t, t), dtype=bool)), a, -np.inf).astype(dt)
        return {"A": a, "n_embd": n_embd, "n_heads": n_heads}
    return make


def _course_test(n_heads, causal):
    """The course's own test: torch.manual_seed(447); key, value, query = torch.randn(1, 10, 6) each,
    in that order."""
    def make(rng, dt):
        import torch
        g = torch.Generator().manual_seed(447)
        key, value, query = (torch.randn(1, 10, 6, generator=g, dtype=torch.float32) for _ in range(3))
        return {"Q": query.numpy().astype(dt), "K": key.numpy().astype(dt), "V": value.numpy().astype(dt),
                "n_heads": n_heads, "causal": causal}
    return make


def _qkv_seq(b, t, c, n_heads, causal):
    def make(rng, dt):
        q, k, v = (rng.standard_normal((b, t, c)).astype(dt) for _ in range(3))
        return {"Q": q, "K": k, "V": v, "n_heads": n_heads, "causal": causal}
    return make


# ---------------------------------------------------------------- the maths, right and wrong (NumPy)

def _tril(t):
    return np.tril(np.ones((t, t), dtype=bool))


def _softmax(a, axis=-1):
    m = np.max(np.where(np.isneginf(a), -np.inf, a), axis=axis, keepdims=True)
    e = np.exp(a - np.where(np.isneginf(m), 0.0, m))
    s = e.sum(axis=axis, keepdims=True)
    return e / np.where(s == 0, 1.0, s)


def _split(x, h, transpose=True):
    b, t, c = x.shape
    y = x.reshape(b, t, h, c // h)
    return y.transpose(0, 2, 1, 3) if transpose else y.reshape(b, h, t, c // h)


def _merge(y, transpose=True):
    b, h, t, d = y.shape
    return (y.transpose(0, 2, 1, 3) if transpose else y).reshape(b, t, h * d)


def _attention(i, scale="head", mask="inf", axis=-1, post=False, diag=0, split_t=True):
    """Course B's self_attention with one knob turned: the variants below are this function."""
    q, k, v, h = i["Q"], i["K"], i["V"], i["n_heads"]
    c = q.shape[-1]
    qh, kh, vh = (_split(x, h, split_t) for x in (q, k, v))
    a = qh @ np.swapaxes(kh, -1, -2)
    a = a / {"head": math.sqrt(c / h), "none": 1.0, "embd": math.sqrt(c), "d": c / h}[scale]
    t = q.shape[1]
    keep = np.tril(np.ones((t, t), dtype=bool), k=diag)
    if i["causal"] and not post:
        a = np.where(keep, a, -np.inf) if mask == "inf" else (a * keep if mask == "zero" else np.where(keep, a, -1e9))
    w = _softmax(a, axis)
    if i["causal"] and post:
        w = w * keep
    return _merge(w @ vh, split_t)


def _fix(fn, text):
    return ("numpy_impl.attention", fn, text)


SCALE_VARIANTS = (
    Variant("no_scale", "the scores WITHOUT the 1/sqrt(head size) scale",
            "without it the scores' variance grows with the head size and the softmax saturates",
            lambda i: i["A"], _fix("attn_scaled", "scores * scale")),
    Variant("scale_1_over_d", "the scores divided by the head size d instead of sqrt(d)",
            "q.k sums d products of unit-variance terms, so its standard deviation is sqrt(d), not d",
            lambda i: i["A"] / (i["n_embd"] / i["n_heads"]), _fix("attn_scaled", "scores * scale")),
    Variant("scale_sqrt_n_embd", "the scores divided by sqrt(n_embd) instead of sqrt(n_embd / n_heads)",
            "each head's dot product runs over its own head size, not the whole embedding",
            lambda i: i["A"] / math.sqrt(i["n_embd"]), _fix("attn_scaled", "scores * scale")),
)


def _mask_grade(case, inputs, got, refs):
    """Accept the three correct conventions and say which one the student uses."""
    m, t = got[0], inputs["n_tok"]
    tril = _tril(t)
    if m.shape not in ((t, t), (1, 1, t, t), (1, t, t)):
        return None  # the default comparison reports the shape
    m = m.reshape(t, t)
    said = None
    if m.dtype == bool:
        if np.array_equal(m, tril):  # the reference's own form: a plain pass
            return {"ok": True, "verdict": "pass", "max_abs_err": 0.0, "message": "convention: bool, True = may "
                    "attend (use with masked_fill(~mask, -inf) or where(mask, A, -inf))"}
        if np.array_equal(m, ~tril):
            said = ("mask_true_blocks", "bool, True = blocked (torch nn.MultiheadAttention's convention; "
                    "use with masked_fill(mask, -inf))")
    elif np.issubdtype(m.dtype, np.number) and np.array_equal(m, tril.astype(m.dtype)):
        said = ("mask_float_ones", f"{m.dtype} ones on and below the diagonal (use with masked_fill(mask == 0, -inf))")
    if said:
        return {"ok": True, "verdict": "pass", "max_abs_err": 0.0, "message": f"convention: {said[1]}",
                "note": f"convention: {said[1]}", "convention": said[0]}
    return None


def _mask_variants():
    def shifted(k, blocked=False):
        return lambda i: (np.tril(np.ones((i["n_tok"],) * 2, dtype=bool), k=k) ^ blocked)
    return (
        Variant("mask_includes_next", "a causal mask shifted by one diagonal (each token also sees the next one)",
                "query i may attend to keys 0..i: np.tril with k=0, not k=1", shifted(1),
                ("numpy_impl.masks", "make_causal_mask", "j <= i + offset")),
        Variant("mask_excludes_self", "a causal mask shifted by one diagonal (a token cannot see itself)",
                "query i may attend to keys 0..i, itself included: np.tril with k=0, not k=-1", shifted(-1),
                ("numpy_impl.masks", "make_causal_mask", "j <= i + offset")),
        Variant("mask_upper", "the upper triangle (the future allowed, the past blocked)",
                "np.triu keeps j >= i: a causal mask keeps j <= i (np.tril)",
                lambda i: np.triu(np.ones((i["n_tok"],) * 2, dtype=bool)),
                ("numpy_impl.masks", "make_causal_mask", "j <= i + offset")),
    )


def _masked(i, fill=-np.inf, keep=None):
    a = i["A"]
    keep = _tril(a.shape[-1]) if keep is None else keep
    return np.where(keep, a, fill)


APPLY_MASK_VARIANTS = (
    Variant("mask_times_scores", "A * mask: masked scores set to 0 instead of -inf",
            "a score of 0 still gets weight exp(0) in the softmax, so masked (future) keys keep attention",
            lambda i: i["A"] * _tril(i["A"].shape[-1]), _fix("apply_mask", "-np.inf")),
    # -1e9 (or finfo.min) where -inf is asked: the softmax that follows is the same, so it passes, named.
    mask_finite_fill(lambda i: _masked(i)),
    Variant("mask_convention_mismatch", "the mask applied with the opposite convention (-inf where tokens may attend)",
            "your make_causal_mask and apply_causal_mask disagree on what True (or 1) means",
            lambda i: np.where(_tril(i["A"].shape[-1]), -np.inf, i["A"]), _fix("apply_mask", "np.where(mask")),
    Variant("apply_mask_shifted", "a causal mask shifted by one diagonal",
            "query i may attend to keys 0..i: the diagonal stays visible, the one above it does not",
            lambda i: _masked(i, keep=np.tril(np.ones((i["A"].shape[-1],) * 2, dtype=bool), k=1)),
            ("numpy_impl.masks", "make_causal_mask", "j <= i + offset")),
)

SELF_ATTENTION_VARIANTS = (
    Variant("sa_no_scale", "attention WITHOUT the 1/sqrt(head size) scale",
            "without it the scores grow with the head size and the softmax saturates",
            lambda i: _attention(i, scale="none"), _fix("scaled_dot_product_attention", "scale")),
    Variant("sa_scale_embd", "attention scaled by 1/sqrt(n_embd) instead of 1/sqrt(n_embd / n_heads)",
            "each head's dot product runs over its head size", lambda i: _attention(i, scale="embd"),
            _fix("scaled_dot_product_attention", "scale")),
    Variant("sa_scale_d", "attention scaled by 1/d instead of 1/sqrt(d)",
            "the dot product's standard deviation is sqrt(d)", lambda i: _attention(i, scale="d"),
            _fix("scaled_dot_product_attention", "scale")),
    Variant("sa_softmax_query_axis", "attention with the softmax over the QUERY axis",
            "each query's weights over the keys must sum to 1: softmax over the last axis (keys)",
            lambda i: _attention(i, axis=-2), _fix("attn_softmax", "axis=-1")),
    Variant("sa_zero_after_softmax", "attention with the future zeroed AFTER the softmax",
            "the future keys still sit in the softmax's denominator: rows no longer sum to 1 and a future "
            "token changes the past's outputs", lambda i: _attention(i, post=True),
            _fix("attn_softmax", "apply_mask(scores, mask)")),
    Variant("sa_mask_zero", "attention with masked scores set to 0 (A * mask) instead of -inf",
            "a score of 0 still gets weight, so masked keys keep attention", lambda i: _attention(i, mask="zero"),
            _fix("apply_mask", "-np.inf")),
    Variant("sa_mask_shifted", "attention with the causal mask shifted by one diagonal",
            "query i may attend to keys 0..i", lambda i: _attention(i, diag=1),
            ("numpy_impl.masks", "make_causal_mask", "j <= i + offset")),
    Variant("sa_split_no_transpose", "attention with split_heads/merge_heads done by reshape WITHOUT the transpose",
            "(B, T, C) -> (B, T, H, D) must be transposed to (B, H, T, D); a bare reshape mixes tokens into heads",
            lambda i: _attention(i, split_t=False), ("numpy_impl.multihead", "split_heads", "transpose")),
)


def _sa_reference(m, i):
    at, mh = m["attention"], m["multihead"]
    h, t = i["n_heads"], i["Q"].shape[1]
    mask = m["masks"].make_causal_mask(t) if i["causal"] else None
    out, _ = at.scaled_dot_product_attention(*(mh.split_heads(i[n], h) for n in "QKV"), mask)
    return mh.merge_heads(out)


EXERCISES = [
    Exercise(
        "pairwise_similarities", GROUP, "pairwise_similarities(Q, K)", "Q (..., T_q, D), K (..., T_k, D) -> (..., T_q, T_k)",
        "Q K^T over the last two axes vs each backend's pairwise_similarities",
        target={"name": "pairwise_similarities", "args": ["Q", "K"]},
        reference=lambda m, i: m["attention"].pairwise_similarities(i["Q"], i["K"]),
        cases=(Case("course setting (1, 2, 3, 4)", _qk(1, 2, 3, 4), course_tol=COURSE_TOL),
               Case("square T = D = 5 (float32)", _qk(2, 3, 5, 5), dtype="float32"),
               Case("T_q != T_k (2, 4, 7, 8) x 9 keys", _qk(2, 4, 7, 8, 9))),
        variants=(Variant("k_untransposed", "Q @ K with K NOT transposed",
                          "each score is a query row dotted with a key row: Q @ K^T (swap K's last two axes)",
                          lambda i: i["Q"] @ i["K"], _fix("pairwise_similarities", "swapaxes")),),
    ),
    Exercise(
        "attn_scaled", GROUP, "attn_scaled(A, n_embd, n_heads)", "A (..., T_q, T_k) -> same, divided by sqrt(n_embd / n_heads)",
        "the scaled scores vs attn_scaled(A, 1/sqrt(n_embd / n_heads)) in each backend",
        target={"name": "attn_scaled", "args": ["A", "n_embd", "n_heads"]},
        reference=lambda m, i: m["attention"].attn_scaled(i["A"], 1.0 / math.sqrt(i["n_embd"] / i["n_heads"])),
        cases=(Case("course setting, 2 heads of 4", _scores(1, 2, 3, 8, 2), course_tol=COURSE_TOL),
               Case("12 heads of 64 (float32)", _scores(2, 12, 6, 768, 12), dtype="float32"),
               Case("3 heads of 2", _scores(1, 3, 10, 6, 3))),
        variants=SCALE_VARIANTS,
    ),
    Exercise(
        "attn_softmax", GROUP, "attn_softmax(A)", "A (..., T_q, T_k) -> weights, each row summing to 1 over the keys",
        "softmax over the last axis (keys), masked -inf scores included, vs each backend's attn_softmax",
        target={"name": "attn_softmax", "args": ["A"]},
        reference=lambda m, i: m["attention"].attn_softmax(i["A"]),
        cases=(Case("course setting", _scores(1, 2, 3, 8, 2), course_tol=COURSE_TOL),
               Case("causally masked scores (-inf above the diagonal)", _scores(2, 3, 6, 6, 3, masked=True)),
               Case("large scores (float32)", lambda rng, dt: {"A": (rng.standard_normal((2, 4, 5, 5)) * 50).astype(dt)},
                    dtype="float32")),
        variants=(Variant("softmax_query_axis", "the softmax taken over the QUERY axis (dim=-2)",
                          "each query's weights over the keys must sum to 1: softmax over the last axis",
                          lambda i: _softmax(i["A"], axis=-2), _fix("attn_softmax", "axis=-1")),),
    ),
    Exercise(
        "compute_outputs", GROUP, "compute_outputs(A, V)", "A (..., T_q, T_k), V (..., T_k, D) -> (..., T_q, D)",
        "the weighted sum of values A V vs each backend's compute_outputs",
        target={"name": "compute_outputs", "args": ["A", "V"]},
        reference=lambda m, i: m["attention"].compute_outputs(i["A"], i["V"]),
        cases=(Case("course setting", lambda rng, dt: {"A": rng.random((1, 2, 3, 3)).astype(dt),
                                                       "V": rng.standard_normal((1, 2, 3, 4)).astype(dt)},
                    course_tol=COURSE_TOL),
               Case("T_q != T_k (float32)", lambda rng, dt: {"A": rng.random((2, 3, 4, 7)).astype(dt),
                                                             "V": rng.standard_normal((2, 3, 7, 5)).astype(dt)},
                    dtype="float32")),
        variants=(Variant("weights_transposed", "A^T V: the weights transposed (keys and queries swapped)",
                          "row i of A holds query i's weights over the keys, so the output is A @ V as it stands",
                          lambda i: np.swapaxes(i["A"], -1, -2) @ i["V"], _fix("compute_outputs", "weights @ v")),),
    ),
    Exercise(
        "make_causal_mask", GROUP, "make_causal_mask(n_tok)", "-> (n_tok, n_tok) lower-triangular mask",
        "the mask's pattern; float 1/0, bool True = attend and bool True = blocked are all accepted and named",
        target={"name": "make_causal_mask", "args": ["n_tok"]},
        reference=lambda m, i: m["masks"].make_causal_mask(i["n_tok"]),
        cases=(Case("n_tok = 3", lambda rng, dt: {"n_tok": 3}), Case("n_tok = 10", lambda rng, dt: {"n_tok": 10})),
        variants=_mask_variants(), grade=_mask_grade,
        notes="Accepted: float tril ones, bool True = may attend, bool True = blocked (torch MHA's convention).",
    ),
    Exercise(
        "apply_causal_mask", GROUP, "apply_causal_mask(mask, A)", "mask from YOUR make_causal_mask(T), A (..., T, T) -> A with -inf where blocked",
        "called with your own make_causal_mask(T), so any consistent convention passes; masked scores must be -inf",
        target={"name": "apply_causal_mask", "args": [{"call": "make_causal_mask", "args": ["n_tok"]}, "A"]},
        reference=lambda m, i: m["attention"].apply_mask(i["A"], m["masks"].make_causal_mask(i["n_tok"])),
        cases=(Case("course setting (1, 2, 3, 3)", lambda rng, dt: {"A": rng.standard_normal((1, 2, 3, 3)).astype(dt),
                                                                    "n_tok": 3}, course_tol=COURSE_TOL),
               Case("10 tokens, 3 heads", lambda rng, dt: {"A": rng.standard_normal((2, 3, 10, 10)).astype(dt),
                                                           "n_tok": 10})),
        variants=APPLY_MASK_VARIANTS, scores=("out",), parts=("make_causal_mask",),
        notes="Needs make_causal_mask in the same file: apply_causal_mask is graded with your own mask. A finite "
              "fill (-1e9, finfo.min) passes, named: its softmax is the same.",
    ),
    Exercise(
        "split_heads", GROUP, "split_heads(x, n_heads)", "x (B, T, C) -> (B, n_heads, T, C // n_heads)",
        "the head split vs each backend's split_heads (heads are contiguous channel slices)",
        target={"name": "split_heads", "args": ["x", "n_heads"]},
        reference=lambda m, i: m["multihead"].split_heads(i["x"], i["n_heads"]),
        cases=(Case("course setting (1, 3, 8), 2 heads", lambda rng, dt: {**_x((1, 3, 8))(rng, dt), "n_heads": 2},
                    course_tol=COURSE_TOL),
               Case("(2, 5, 12), 3 heads (float32)", lambda rng, dt: {**_x((2, 5, 12))(rng, dt), "n_heads": 3},
                    dtype="float32")),
        variants=(Variant("split_reshape_only", "a reshape to (B, n_heads, T, D) WITHOUT the transpose",
                          "(B, T, C) must first become (B, T, H, D), then heads move before time; a direct "
                          "reshape to (B, H, T, D) mixes tokens into heads",
                          lambda i: _split(i["x"], i["n_heads"], transpose=False),
                          ("numpy_impl.multihead", "split_heads", "transpose")),
                  Variant("split_no_transpose", "(B, T, n_heads, D): the reshape done, the heads never moved before time",
                          "split_heads returns (B, H, T, D): transpose axes 1 and 2 after the reshape",
                          lambda i: i["x"].reshape(*i["x"].shape[:2], i["n_heads"], -1),
                          ("numpy_impl.multihead", "split_heads", "transpose"))),
    ),
    Exercise(
        "merge_heads", GROUP, "merge_heads(y)", "y (B, n_heads, T, D) -> (B, T, n_heads * D)",
        "the inverse of split_heads vs each backend's merge_heads",
        target={"name": "merge_heads", "args": ["y"]},
        reference=lambda m, i: m["multihead"].merge_heads(i["y"]),
        cases=(Case("course setting (1, 2, 3, 4)", lambda rng, dt: {"y": rng.standard_normal((1, 2, 3, 4)).astype(dt)},
                    course_tol=COURSE_TOL),
               Case("(2, 3, 5, 4) (float32)", lambda rng, dt: {"y": rng.standard_normal((2, 3, 5, 4)).astype(dt)},
                    dtype="float32")),
        variants=(Variant("merge_no_transpose", "a reshape to (B, T, C) WITHOUT moving the heads back after time",
                          "(B, H, T, D) must be transposed to (B, T, H, D) before the reshape, or heads and tokens mix",
                          lambda i: _merge(i["y"], transpose=False), ("numpy_impl.multihead", "merge_heads", "transpose")),),
    ),
    Exercise(
        "split_heads_qkv", GROUP, "split_heads_qkv(Q, K, V, n_heads)", "Q, K, V (B, T, C) -> three (B, n_heads, T, C // n_heads)",
        "split_heads applied to each of Q, K and V",
        target={"name": "split_heads_qkv", "args": ["Q", "K", "V", "n_heads"]},
        reference=lambda m, i: tuple(m["multihead"].split_heads(i[n], i["n_heads"]) for n in "QKV"),
        outputs=("Q", "K", "V"),
        cases=(Case("course setting, 2 heads", _qkv_seq(1, 3, 8, 2, False), course_tol=COURSE_TOL),
               Case("(2, 6, 12), 4 heads (float32)", _qkv_seq(2, 6, 12, 4, False), dtype="float32")),
        variants=(Variant("qkv_reshape_only", "each split by a reshape to (B, n_heads, T, D) without the transpose",
                          "(B, T, C) -> (B, T, H, D), then move heads before time",
                          lambda i: tuple(_split(i[n], i["n_heads"], transpose=False) for n in "QKV"),
                          ("numpy_impl.multihead", "split_heads", "transpose")),),
    ),
    Exercise(
        "self_attention", GROUP, "self_attention(Q, K, V, n_heads=1, causal=True)",
        "Q, K, V (B, n_tok, n_embd), already projected -> (B, n_tok, n_embd)",
        "end to end vs each backend's scaled_dot_product_attention on split heads; includes the course's own test "
        "(seed 447, 10 tokens, 6 dims, heads 1 and 3)",
        target={"name": "self_attention", "args": ["Q", "K", "V"], "kwargs": ["n_heads", "causal"]},
        reference=_sa_reference,
        cases=(Case("course test: 1 head, no mask", _course_test(1, False), course_tol=COURSE_TOL),
               Case("course test: 1 head, causal", _course_test(1, True), course_tol=COURSE_TOL),
               Case("course test: 3 heads, causal", _course_test(3, True), course_tol=COURSE_TOL),
               Case("(2, 7, 12), 4 heads, causal (float32)", _qkv_seq(2, 7, 12, 4, True), dtype="float32"),
               Case("(2, 5, 8), 2 heads, no mask", _qkv_seq(2, 5, 8, 2, False))),
        variants=SELF_ATTENTION_VARIANTS,
        parts=("pairwise_similarities", "attn_scaled", "attn_softmax", "make_causal_mask", "apply_causal_mask",
               "compute_outputs", "split_heads", "merge_heads", "split_heads_qkv"),
    ),
]
