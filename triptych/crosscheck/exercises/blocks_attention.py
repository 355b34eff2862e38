"""Building blocks, attention side: scaled dot-product attention forward and backward, multi-head
attention, the sinusoidal table and rotary positions (forward and backward), with the numpy_impl
signature of the same name.

A backward is judged against torch autograd and jax.vjp of each backend's forward at the same
inputs and upstream gradient (the NumPy column is numpy_impl's hand-written backward). Masks are
bool, True = may attend; a query that may attend to nothing gets all-zero weights and output.
"""
from __future__ import annotations

import numpy as np

from triptych.crosscheck.exercises._attention_maths import (  # masks, SDPA and MHA: inputs, references, variants
    _causal, _padded_causal, _attend, _sdpa_inputs, _sdpab_ref, _sdpab, _MHA_KEYS, _mha_inputs, _mha,
    _mhab_inputs, _mhab_ref, _mhab,
)
from triptych.crosscheck.exercises._conventions import masked_rows_variants, no_key_rows
from triptych.crosscheck.exercises._positions import (  # sinusoidal and rotary: inputs, references, variants
    _sinusoidal, _rope, _other, _rope_inputs, _ropeb_ref, _ropeb_cos_only,
)
from triptych.crosscheck.spec import Case, Exercise, Variant

GROUP = "blocks-attention"
TITLE = "Building blocks, attention: SDPA forward and backward, multi-head attention, sinusoidal and rotary positions"
ORDER = 52


def _fix(module, fn, text):
    return (module, fn, text)


# ---------------------------------------------------------------- the catalogue

def _v(name, says, why, compute, fix_at=None):
    return Variant(name, says, why, compute, fix_at)


_AT = "numpy_impl.attention"
_POS = "numpy_impl.positional"
_SDPA_SIG = "scaled_dot_product_attention(q, k, v, mask=None, scale=None)"


def _a(i, how):
    return _attend(i["q"], i["k"], i["v"], i["mask"], i["scale"], how)


# This group's contract defines a query that sees no key (zeros, as torch SDPA gives), so NaN there
# is a mistake, named rather than "NaN where the reference is finite"; uniform rows are sdpa_finite_fill.
_SDPA_NAN_ROWS = masked_rows_variants(lambda i: _a(i, "right"), lambda i: no_key_rows(i["mask"], i["q"].shape[:-1]),
                                      defined=True, prefix="sdpa_")[0]
_MHA_NAN_ROWS = masked_rows_variants(_mha, lambda i: no_key_rows(i["mask"], i["x"].shape[:2], i["n_heads"]),
                                     defined=True, prefix="mha_")[0]


EXERCISES = [
    Exercise(
        "scaled_dot_product_attention", GROUP, _SDPA_SIG,
        "q (..., T_q, D), k (..., T_k, D), v (..., T_k, D_v), mask bool broadcastable to (..., T_q, T_k) "
        "(True = attend) -> (out (..., T_q, D_v), weights (..., T_q, T_k))",
        "vs torch's F.scaled_dot_product_attention (and NumPy's, JAX's): T_q != T_k, fully masked rows give zeros",
        target={"name": "scaled_dot_product_attention", "args": ["q", "k", "v"], "kwargs": ["mask", "scale"]},
        reference=lambda m, i: m["attention"].scaled_dot_product_attention(i["q"], i["k"], i["v"], i["mask"], i["scale"]),
        outputs=("out", "weights"), optional_outputs=("weights",), parts=("softmax",),
        notes="Returning `out` alone is accepted (the weights are optional).",
        cases=(Case("course-sized (1, 2, 3, 4), no mask", _sdpa_inputs(1, 2, 3, 3, 4)),
               Case("causal, T_q 5 != T_k 7", _sdpa_inputs(2, 2, 5, 7, 8, mask=lambda b, q, k: _causal(q, k)), seed=1),
               Case("causal + padding, fully masked rows (float32)", _sdpa_inputs(3, 2, 6, 6, 16, mask=_padded_causal),
                    dtype="float32", seed=2),
               Case("scale=0.5 given", _sdpa_inputs(2, 1, 4, 5, 8, scale=0.5), seed=3)),
        variants=(
            _v("sdpa_no_scale", "attention WITHOUT the 1/sqrt(d) scale", "unscaled scores grow with d and "
               "saturate the softmax", lambda i: _a(i, "none"), _fix(_AT, "scaled_dot_product_attention", "math.sqrt")),
            _v("sdpa_scale_1_over_d", "attention scaled by 1/d instead of 1/sqrt(d)", "q . k of unit-variance "
               "vectors has variance d, so sqrt(d) brings it back to 1", lambda i: _a(i, "over_d"),
               _fix(_AT, "scaled_dot_product_attention", "math.sqrt")),
            _v("sdpa_scale_argument_ignored", "1/sqrt(d) where the caller passed scale=",
               "an explicit scale replaces the default", lambda i: _a(i, "default"),
               _fix(_AT, "scaled_dot_product_attention", "if scale is None")),
            _v("sdpa_softmax_over_queries", "the softmax taken over the QUERY axis (-2) instead of the keys",
               "each query's weights over the keys sum to 1: softmax along the last axis", lambda i: _a(i, "queries"),
               _fix(_AT, "attn_softmax", "np.sum(e, axis=-1")),
            _v("sdpa_mask_inverted", "the mask read as True = blocked", "here (and in torch SDPA's bool attn_mask) "
               "True means may attend", lambda i: _a(i, "inverted"), _fix(_AT, "apply_mask", "np.where(mask")),
            _v("sdpa_finite_fill", "masked scores filled with -1e9: a fully masked row attends to every key alike",
               "with -inf a query that may see nothing gets zero weights; a finite fill makes its softmax uniform",
               lambda i: _a(i, "finite"), _fix(_AT, "attn_softmax", "np.isneginf")),
            _SDPA_NAN_ROWS),
    ),
    Exercise(
        "scaled_dot_product_attention_backward", GROUP,
        "scaled_dot_product_attention_backward(dout, q, k, v, weights, scale=None)",
        "dout (..., T_q, D_v), q, k, v as the forward, weights = its second output (zeros where masked) "
        "-> (dq, dk, dv), shaped as q, k, v",
        "vs torch autograd and jax.vjp of each backend's SDPA at the same q, k, v and mask, along dout",
        target={"name": "scaled_dot_product_attention_backward", "args": ["dout", "q", "k", "v", "weights"],
                "kwargs": ["scale"]},
        reference=_sdpab_ref, tol_kind="grad", outputs=("dq", "dk", "dv"), parts=("softmax_backward",),
        cases=(Case("course-sized (1, 2, 3, 4), no mask", _sdpa_inputs(1, 2, 3, 3, 4, grads=True)),
               Case("causal, T_q 5 != T_k 7", _sdpa_inputs(2, 2, 5, 7, 8, mask=lambda b, q, k: _causal(q, k), grads=True),
                    seed=1),
               Case("causal + padding, fully masked rows (float32)",
                    _sdpa_inputs(3, 2, 6, 6, 16, mask=_padded_causal, grads=True), dtype="float32", seed=2),
               Case("scale=0.5 given", _sdpa_inputs(2, 1, 4, 5, 8, scale=0.5, grads=True), seed=3)),
        variants=(
            _v("sdpab_no_rowsum", "dscores = weights * dweights: the softmax backward without its row-sum term",
               "d softmax = diag(y) - y y^T, so dscores = y * (dweights - sum(dweights * y))",
               lambda i: _sdpab(i, rowsum=False), _fix(_AT, "softmax_backward", "np.sum(dy * y")),
            _v("sdpab_dk_dv_swapped", "(dq, dv, dk): the key and value gradients swapped",
               "dk = dscores^T q * scale; dv = weights^T dout", lambda i: _sdpab(i, swap=True),
               _fix(_AT, "scaled_dot_product_attention_backward", "return dq, dk, dv")),
            _v("sdpab_dk_no_scale", "dk WITHOUT the scale (dq has it)", "scores = q k^T * scale carries the scale "
               "to both q's and k's gradient", lambda i: _sdpab(i, scale_dk=False),
               _fix(_AT, "scaled_dot_product_attention_backward", "attn_scaled_backward")),
            _v("sdpab_no_scale", "dq and dk WITHOUT the scale", "scores are scaled after q k^T, so the gradient "
               "flowing back into q k^T is scaled too", lambda i: _sdpab(i, scale_dq=False, scale_dk=False),
               _fix(_AT, "scaled_dot_product_attention_backward", "attn_scaled_backward")),
            _v("sdpab_dv_untransposed", "dv = weights dout: the weights not transposed",
               "out = weights v, so dv = weights^T dout (T_k rows, one per value)",
               lambda i: _sdpab(i, dv_transposed=False), _fix(_AT, "compute_outputs_backward", "np.swapaxes(weights"))),
    ),
    Exercise(
        "multihead_attention", GROUP, "multihead_attention(x, params, n_heads, kv=None, mask=None)",
        "x (B, T_q, C), params {w_q, b_q, w_k, b_k, w_v, b_v, w_o, b_o} (weights (C, C) as torch's (d_out, d_in)), "
        "kv (B, T_k, C) or None -> (out (B, T_q, C), weights (B, H, T_q, T_k))",
        "vs torch's nn.MultiheadAttention (and NumPy's, JAX's): self and cross attention, fully masked rows",
        target={"name": "multihead_attention", "args": ["x", "params", "n_heads"], "kwargs": ["kv", "mask"]},
        reference=lambda m, i: m["multihead"].multihead_attention(i["x"], i["params"], i["n_heads"], i["kv"], i["mask"]),
        outputs=("out", "weights"), optional_outputs=("weights",),
        parts=("softmax", "scaled_dot_product_attention", "split_heads", "merge_heads"),
        notes="Returning `out` alone is accepted (the weights are optional).",
        cases=(Case("course-sized (1, 3, 8), 2 heads", _mha_inputs(1, 3, 8, 2)),
               Case("causal self, (2, 6, 16), 4 heads (float32)", _mha_inputs(2, 6, 16, 4, mask=lambda b, q, k: _causal(q, k)),
                    dtype="float32", seed=1),
               Case("cross T_q 5 != T_k 7 + padding, fully masked rows", _mha_inputs(3, 5, 12, 3, t_k=7, mask=_padded_causal),
                    seed=2)),
        variants=(
            _v("mha_scale_d_model", "scores scaled by 1/sqrt(d_model) instead of 1/sqrt(d_model / n_heads)",
               "each head's dot products run over its own d_head = C / H channels", lambda i: _mha(i, "d_model"),
               _fix(_AT, "scaled_dot_product_attention", "math.sqrt")),
            _v("mha_heads_without_transpose", "heads split by reshape(B, H, T, D) without the transpose",
               "(B, T, C) -> (B, T, H, D) -> transpose to (B, H, T, D): a direct reshape mixes time steps across heads",
               lambda i: _mha(i, "no_transpose"), _fix("numpy_impl.multihead", "split_heads", "transpose")),
            _v("mha_weights_untransposed", "x W + b: the projections used in (d_in, d_out) layout",
               "the weights are torch's (d_out, d_in): a linear layer computes x W^T + b",
               lambda i: _mha(i, "untransposed"), _fix("numpy_impl.multihead", "linear", "w.T")),
            _v("mha_no_out_projection", "the merged heads WITHOUT the output projection W_o",
               "the layer ends with out = merged W_o^T + b_o", lambda i: _mha(i, "no_out"),
               _fix("numpy_impl.multihead", "multihead_attention", "w_o")),
            _MHA_NAN_ROWS),
    ),
    Exercise(
        "multihead_attention_backward", GROUP, "multihead_attention_backward(dout, x, params, n_heads, weights, kv)",
        "dout (B, T_q, C), the forward's x, params, kv (B, T_k, C) and its weights output -> (dx, dkv, dw_q, db_q, "
        "dw_k, db_k, dw_v, db_v, dw_o, db_o): numpy_impl's (dx, dkv, grads) with grads unpacked in that order",
        "vs torch autograd through F.multi_head_attention_forward and jax.vjp of JAX's multihead_attention, along dout",
        target={"name": "multihead_attention_backward", "args": ["dout", "x", "params", "n_heads", "weights", "kv"]},
        reference=_mhab_ref, tol_kind="grad", outputs=("dx", "dkv") + tuple(f"d{k}" for k in _MHA_KEYS),
        parts=("scaled_dot_product_attention_backward", "softmax_backward"),
        notes="kv is always given (self-attention: pass x again and add dkv to dx); numpy_impl returns "
              "(dx, dkv, grads dict), here the dict's eight arrays follow dx, dkv as a flat tuple.",
        cases=(Case("course-sized (1, 3, 8), 2 heads, kv = another (1, 3, 8)", _mhab_inputs(1, 3, 3, 8, 2)),
               Case("cross T_q 5 != T_k 7 + padding, fully masked rows", _mhab_inputs(3, 5, 7, 12, 3, mask=_padded_causal),
                    seed=1),
               Case("causal (2, 6, 16), 4 heads (float32)", _mhab_inputs(2, 6, 6, 16, 4, mask=lambda b, q, k: _causal(q, k)),
                    dtype="float32", seed=2)),
        variants=(
            _v("mhab_no_rowsum", "the per-head softmax backward without its row-sum term",
               "dscores = y * (dweights - sum(dweights * y)) in every head", lambda i: _mhab(i, rowsum=False),
               _fix(_AT, "softmax_backward", "np.sum(dy * y")),
            _v("mhab_scale_d_model", "the scores' gradient scaled by 1/sqrt(d_model) instead of 1/sqrt(d_model / n_heads)",
               "the forward scaled each head's scores by 1/sqrt(d_head)", lambda i: _mhab(i, scale_by="d_model"),
               _fix(_AT, "scaled_dot_product_attention_backward", "attn_scaled_backward")),
            _v("mhab_weight_grads_transposed", "every weight gradient transposed (x^T dy instead of dy^T x)",
               "W is (d_out, d_in) and y = x W^T + b, so dW = dy^T x, shaped like W",
               lambda i: _mhab(i, dw_transposed=True), _fix("numpy_impl.multihead", "linear_backward", "dy2.T @ x"))),
    ),
    Exercise(
        "sinusoidal_encoding", GROUP, "sinusoidal_encoding(max_len, d_model, base=10000.0)",
        "-> (max_len, d_model) float64; row 0 is [0, 1, 0, 1, ...]",
        "vs NumPy's, JAX's and torch's tables: PE[p, 2i] = sin(p / base^(2i/d)), PE[p, 2i+1] = cos(same)",
        target={"name": "sinusoidal_encoding", "args": ["max_len", "d_model"], "kwargs": ["base"]},
        reference=lambda m, i: m["positional"].sinusoidal_encoding(i["max_len"], i["d_model"], i["base"]),
        tol_kind="positional",
        cases=(Case("(6, 8)", lambda rng, dt: {"max_len": 6, "d_model": 8, "base": 10000.0}),
               Case("(128, 64)", lambda rng, dt: {"max_len": 128, "d_model": 64, "base": 10000.0}),
               Case("(20, 16), base 100", lambda rng, dt: {"max_len": 20, "d_model": 16, "base": 100.0})),
        variants=(
            _v("sin_concatenated", "[sin | cos] in two halves instead of interleaved channels",
               "the table interleaves: even channels sin, odd channels cos", lambda i: _sinusoidal(i, "concat"),
               _fix(_POS, "sinusoidal_encoding", "pe[:, 0::2]")),
            _v("sin_cos_swapped", "cos on the even channels and sin on the odd ones", "row 0 is [0, 1, 0, 1, ...]: "
               "sin(0) = 0 comes first", lambda i: _sinusoidal(i, "swapped"),
               _fix(_POS, "sinusoidal_encoding", "pe[:, 0::2]")),
            _v("sin_exponent_i_not_2i", "frequencies base^(-i/d) where base^(-2i/d) is meant",
               "pair i uses the exponent 2i/d, so the wavelengths span 2 pi to base * 2 pi", lambda i: _sinusoidal(i, "i_not_2i"),
               _fix(_POS, "sinusoidal_encoding", "inv_freq")),
            _v("sin_positions_from_1", "positions counted from 1 instead of 0", "the first position is 0",
               lambda i: _sinusoidal(i, "from_1"), _fix(_POS, "sinusoidal_encoding", "np.arange(max_len"))),
    ),
    Exercise(
        "apply_rope", GROUP, "apply_rope(x, positions=None, base=10000.0, layout='half')",
        "x (..., T, D), positions (T,) or (B, T) ints (None: 0..T-1) -> (..., T, D); layout 'half' pairs channel i "
        "with i + D/2 (Llama, HF), 'interleaved' pairs 2i with 2i+1 (RoFormer, GPT-J)",
        "vs HF's apply_rotary_pos_emb / a complex rotation (torch), NumPy's and JAX's apply_rope",
        target={"name": "apply_rope", "args": ["x"], "kwargs": ["positions", "base", "layout"]},
        reference=lambda m, i: m["positional"].apply_rope(i["x"], i["positions"], i["base"], i["layout"]),
        cases=(Case("course-sized (1, 2, 3, 4)", _rope_inputs((1, 2, 3, 4))),
               Case("positions 10..15 (a cache offset)", _rope_inputs((2, 2, 6, 8), np.arange(10, 16)), seed=1),
               Case("interleaved layout (float32)", _rope_inputs((2, 3, 5, 8), layout="interleaved"), dtype="float32", seed=2),
               Case("(B, T) positions, one offset per sequence", _rope_inputs((3, 2, 4, 16), "per-sequence"), seed=3)),
        variants=(
            _v("rope_negative_angle", "each pair rotated by -angle: (a cos + b sin, b cos - a sin)",
               "RoPE rotates (a, b) to (a cos - b sin, b cos + a sin)",
               lambda i: _rope(i["x"], i["positions"], i["base"], i["layout"], sign=-1.0),
               _fix(_POS, "_rotate_pairs", "-x2")),
            _v("rope_wrong_pairing", "the other channel pairing (half vs interleaved)",
               "'half' pairs channel i with i + D/2; 'interleaved' pairs 2i with 2i+1: weights trained with one do not "
               "fit the other", lambda i: _rope(i["x"], i["positions"], i["base"], _other(i["layout"])),
               _fix(_POS, "_rotate_pairs", "layout ==")),
            _v("rope_exponent_i_not_2i", "frequencies base^(-i/D) where base^(-2i/D) is meant",
               "theta_i = base^(-2i/D) for i < D/2", lambda i: _rope(i["x"], i["positions"], i["base"], i["layout"],
                                                                      i_not_2i=True),
               _fix(_POS, "rope_cos_sin", "inv_freq")),
            _v("rope_positions_ignored", "positions 0..T-1 where positions were given",
               "a token at position p (after a cache of p tokens, say) is rotated by p theta",
               lambda i: _rope(i["x"], None, i["base"], i["layout"]), _fix(_POS, "_cos_sin_for", "positions = ")),
            Variant("rope_float32_tables", "RoPE with its cos/sin tables built in float32 (torch's default dtype: "
                    "`torch.arange(...).float()`, an inv_freq buffer)",
                    "float64 input deserves float64 tables: build them in x's dtype (angles up to pos * theta lose "
                    "~pos * 6e-8 in float32)",
                    lambda i: _rope(i["x"], i["positions"], i["base"], i["layout"], tables32=True),
                    _fix(_POS, "rope_cos_sin", "inv_freq"), kind="precision")),
    ),
    Exercise(
        "apply_rope_backward", GROUP, "apply_rope_backward(dout, positions=None, base=10000.0, layout='half')",
        "dout (..., T, D), positions as apply_rope -> dx (..., T, D)",
        "vs torch autograd and jax.vjp of each backend's apply_rope, along dout",
        target={"name": "apply_rope_backward", "args": ["dout"], "kwargs": ["positions", "base", "layout"]},
        reference=_ropeb_ref, tol_kind="grad",
        cases=(Case("course-sized (1, 2, 3, 4)", _rope_inputs((1, 2, 3, 4), grads=True)),
               Case("positions 10..15, interleaved", _rope_inputs((2, 2, 6, 8), np.arange(10, 16), "interleaved", grads=True),
                    seed=1),
               Case("(B, T) positions (float32)", _rope_inputs((3, 2, 4, 16), "per-sequence", grads=True),
                    dtype="float32", seed=2)),
        variants=(
            _v("ropeb_positive_angle", "dout rotated by +angle (the forward applied again)",
               "a rotation's transpose is the rotation by -angle: dx = R(-angle) dout",
               lambda i: _rope(i["dout"], i["positions"], i["base"], i["layout"]),
               _fix(_POS, "apply_rope_backward", "_rotate_pairs_transposed")),
            _v("ropeb_cos_only", "dout * cos: the rotation's sin term dropped",
               "out = x cos + R(x) sin, so dx = dout cos + R^T(dout sin)",
               _ropeb_cos_only,
               _fix(_POS, "apply_rope_backward", "dout * cos")),
            _v("ropeb_wrong_pairing", "the gradient rotated back with the other channel pairing",
               "the backward pairs channels as the forward did",
               lambda i: _rope(i["dout"], i["positions"], i["base"], _other(i["layout"]), sign=-1.0),
               _fix(_POS, "_rotate_pairs", "layout =="))),
    ),
]
