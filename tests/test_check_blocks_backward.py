"""blocks-backward and blocks-attention: a correct submission passes (NumPy in process, torch in the
sandbox, and the whole NumPy file through `cli.py check`), and every named mistake, planted on top
of the correct file one at a time, is named by crosscheck.api.check(...).mistakes.

The references are torch autograd, jax.vjp, peft and torch.optim.AdamW (triptych/crosscheck/exercises), so
nothing here compares against numbers copied from our own output.
"""
from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest

from triptych.common.tolerances import tolerance
from triptych.crosscheck import check
from triptych.crosscheck.exercises import get_group
from triptych.crosscheck.grade import compare, reference_outputs
from triptych.crosscheck.session import check_file
from triptych.crosscheck.skeleton import render

HERE = os.path.dirname(os.path.abspath(__file__))
GOOD_PATH = os.path.join(HERE, "submissions", "blocks_backward_numpy.py")
TORCH_PATH = os.path.join(HERE, "submissions", "blocks_backward_torch.py")
GROUPS = ("blocks-backward", "blocks-attention")

with open(GOOD_PATH, encoding="utf-8") as f:
    GOOD = f.read()

# variant name -> (exercise, a replacement definition with that one mistake). Each is what a person
# plausibly writes, not the variant's own formula.
PLANTED = {
    "lnb_no_mean_terms": ("layer_norm_backward", """
        def layer_norm_backward(dout, x, weight, bias, eps=1e-5):
            xhat = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
            lead = tuple(range(x.ndim - 1))
            return dout * weight / np.sqrt(x.var(-1, keepdims=True) + eps), (dout * xhat).sum(lead), dout.sum(lead)
        """),
    "lnb_no_variance_term": ("layer_norm_backward", """
        def layer_norm_backward(dout, x, weight, bias, eps=1e-5):
            rstd = 1 / np.sqrt(x.var(-1, keepdims=True) + eps)
            xhat = (x - x.mean(-1, keepdims=True)) * rstd
            g = dout * weight
            lead = tuple(range(x.ndim - 1))
            return rstd * (g - g.mean(-1, keepdims=True)), (dout * xhat).sum(lead), dout.sum(lead)
        """),
    "lnb_unbiased_variance": ("layer_norm_backward", """
        def layer_norm_backward(dout, x, weight, bias, eps=1e-5):
            rstd = 1 / np.sqrt(x.var(-1, ddof=1, keepdims=True) + eps)
            xhat = (x - x.mean(-1, keepdims=True)) * rstd
            g = dout * weight
            lead = tuple(range(x.ndim - 1))
            dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
            return dx, (dout * xhat).sum(lead), dout.sum(lead)
        """),
    "lnb_dweight_dbias_swapped": ("layer_norm_backward", """
        _right_lnb = layer_norm_backward
        def layer_norm_backward(dout, x, weight, bias, eps=1e-5):
            dx, dw, db = _right_lnb(dout, x, weight, bias, eps)
            return dx, db, dw
        """),
    "gelub_erf_not_tanh": ("gelu_backward", """
        from math import erf
        def gelu_backward(dout, x):
            return dout * (0.5 * (1 + np.vectorize(erf)(x / math.sqrt(2))) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi))
        """),
    "gelub_no_product_rule": ("gelu_backward", """
        def gelu_backward(dout, x):
            return dout * 0.5 * (1 + np.tanh(C * (x + 0.044715 * x ** 3)))
        """),
    "gelub_du_without_cubic": ("gelu_backward", """
        def gelu_backward(dout, x):
            t = np.tanh(C * (x + 0.044715 * x ** 3))
            return dout * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * C)
        """),
    "ceb_no_mean": ("cross_entropy_backward", """
        _right_ceb = cross_entropy_backward
        def cross_entropy_backward(dloss, logits, targets, ignore_index=-100):
            return _right_ceb(dloss, logits, targets, ignore_index) * max((targets != ignore_index).sum(), 1)
        """),
    "ceb_divided_by_all": ("cross_entropy_backward", """
        _right_ceb = cross_entropy_backward
        def cross_entropy_backward(dloss, logits, targets, ignore_index=-100):
            keep = targets != ignore_index
            return _right_ceb(dloss, logits, targets, ignore_index) * (keep.sum() / keep.size)
        """),
    "ceb_ignores_dloss": ("cross_entropy_backward", """
        _right_ceb = cross_entropy_backward
        def cross_entropy_backward(dloss, logits, targets, ignore_index=-100):
            return _right_ceb(1.0, logits, targets, ignore_index)
        """),
    "lora_no_scaling": ("lora_linear", """
        def lora_linear(x, w, b, lora, alpha, use_rslora=False, dropout_mask=None):
            xd = x if dropout_mask is None else x * dropout_mask
            y = x @ w.T + (xd @ lora["lora_A"].T) @ lora["lora_B"].T
            return y if b is None else y + b
        """),
    "lora_scale_inverted": ("lora_linear", """
        def lora_linear(x, w, b, lora, alpha, use_rslora=False, dropout_mask=None):
            xd = x if dropout_mask is None else x * dropout_mask
            y = x @ w.T + (1 / _s(lora, alpha, use_rslora)) * (xd @ lora["lora_A"].T) @ lora["lora_B"].T
            return y if b is None else y + b
        """),
    "lora_rslora_ignored": ("lora_linear", """
        _right_lora = lora_linear
        def lora_linear(x, w, b, lora, alpha, use_rslora=False, dropout_mask=None):
            return _right_lora(x, w, b, lora, alpha, False, dropout_mask)
        """),
    "lora_dropout_on_base": ("lora_linear", """
        _right_lora = lora_linear
        def lora_linear(x, w, b, lora, alpha, use_rslora=False, dropout_mask=None):
            xd = x if dropout_mask is None else x * dropout_mask
            return _right_lora(xd, w, b, lora, alpha, use_rslora)
        """),
    "lorab_no_scaling": ("lora_linear_backward", """
        _right_lorab = lora_linear_backward
        def lora_linear_backward(dy, x, w, b, lora, alpha, use_rslora=False, dropout_mask=None):
            r = lora["lora_A"].shape[0]  # alpha = r gives s = 1: the scale forgotten
            return _right_lorab(dy, x, w, b, lora, float(r), False, dropout_mask)
        """),
    "lorab_dx_base_only": ("lora_linear_backward", """
        _right_lorab = lora_linear_backward
        def lora_linear_backward(dy, x, w, b, lora, alpha, use_rslora=False, dropout_mask=None):
            da, db, _ = _right_lorab(dy, x, w, b, lora, alpha, use_rslora, dropout_mask)
            return da, db, dy @ w
        """),
    "lorab_dropout_ignored": ("lora_linear_backward", """
        _right_lorab = lora_linear_backward
        def lora_linear_backward(dy, x, w, b, lora, alpha, use_rslora=False, dropout_mask=None):
            return _right_lorab(dy, x, w, b, lora, alpha, use_rslora)
        """),
    "merge_no_scaling": ("merge_lora", """
        def merge_lora(w, lora, alpha, use_rslora=False):
            return w + lora["lora_B"] @ lora["lora_A"]
        """),
    "merge_subtracts": ("merge_lora", """
        def merge_lora(w, lora, alpha, use_rslora=False):
            return w - _s(lora, alpha, use_rslora) * lora["lora_B"] @ lora["lora_A"]
        """),
    "merge_rslora_ignored": ("merge_lora", """
        def merge_lora(w, lora, alpha, use_rslora=False):
            return w + alpha / lora["lora_A"].shape[0] * lora["lora_B"] @ lora["lora_A"]
        """),
    "unmerge_no_scaling": ("unmerge_lora", """
        def unmerge_lora(w_merged, lora, alpha, use_rslora=False):
            return w_merged - lora["lora_B"] @ lora["lora_A"]
        """),
    "unmerge_adds": ("unmerge_lora", "unmerge_lora = merge_lora\n"),
    "adamw_l2_in_gradient": ("adamw_step", """
        def adamw_step(p, g, m, v, step, lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
            g = g + weight_decay * p  # Adam's L2 penalty, as torch.optim.Adam(weight_decay=...) does
            b1, b2 = betas
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            return p - lr * (m / (1 - b1 ** step)) / (np.sqrt(v / (1 - b2 ** step)) + eps), m, v
        """),
    "adamw_no_bias_correction": ("adamw_step", """
        def adamw_step(p, g, m, v, step, lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
            b1, b2 = betas
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            return p * (1 - lr * weight_decay) - lr * m / (np.sqrt(v) + eps), m, v
        """),
    "adamw_decay_without_lr": ("adamw_step", """
        _right_adamw = adamw_step
        def adamw_step(p, g, m, v, step, lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
            return _right_adamw(p, g, m, v, step, lr, betas, eps, weight_decay / lr)
        """),
    "adamw_no_weight_decay": ("adamw_step", """
        _right_adamw = adamw_step
        def adamw_step(p, g, m, v, step, lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
            return _right_adamw(p, g, m, v, step, lr, betas, eps, 0.0)
        """),
    # ---------------------------------------------------------------- attention side
    "sdpa_no_scale": ("scaled_dot_product_attention", """
        _right_sdpa = scaled_dot_product_attention
        def scaled_dot_product_attention(q, k, v, mask=None, scale=None):
            return _right_sdpa(q, k, v, mask, 1.0)
        """),
    "sdpa_scale_1_over_d": ("scaled_dot_product_attention", """
        _right_sdpa = scaled_dot_product_attention
        def scaled_dot_product_attention(q, k, v, mask=None, scale=None):
            return _right_sdpa(q, k, v, mask, 1 / q.shape[-1])
        """),
    "sdpa_scale_argument_ignored": ("scaled_dot_product_attention", """
        _right_sdpa = scaled_dot_product_attention
        def scaled_dot_product_attention(q, k, v, mask=None, scale=None):
            return _right_sdpa(q, k, v, mask)
        """),
    "sdpa_softmax_over_queries": ("scaled_dot_product_attention", """
        def scaled_dot_product_attention(q, k, v, mask=None, scale=None):
            s = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1]) if scale is None else q @ np.swapaxes(k, -1, -2) * scale
            if mask is not None:
                s = np.where(mask, s, -np.inf)
            w = np.swapaxes(_softmax(np.swapaxes(s, -1, -2)), -1, -2)
            return w @ v, w
        """),
    "sdpa_mask_inverted": ("scaled_dot_product_attention", """
        _right_sdpa = scaled_dot_product_attention
        def scaled_dot_product_attention(q, k, v, mask=None, scale=None):
            return _right_sdpa(q, k, v, None if mask is None else ~mask, scale)
        """),
    "sdpa_finite_fill": ("scaled_dot_product_attention", """
        def scaled_dot_product_attention(q, k, v, mask=None, scale=None):
            s = q @ np.swapaxes(k, -1, -2) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
            if mask is not None:
                s = np.where(mask, s, -1e9)
            w = _softmax(s)
            return w @ v, w
        """),
    "sdpab_no_rowsum": ("scaled_dot_product_attention_backward", """
        def scaled_dot_product_attention_backward(dout, q, k, v, weights, scale=None):
            scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
            ds = weights * (dout @ np.swapaxes(v, -1, -2)) * scale
            return ds @ k, np.swapaxes(ds, -1, -2) @ q, np.swapaxes(weights, -1, -2) @ dout
        """),
    "sdpab_dk_dv_swapped": ("scaled_dot_product_attention_backward", """
        _right_sdpab = scaled_dot_product_attention_backward
        def scaled_dot_product_attention_backward(dout, q, k, v, weights, scale=None):
            dq, dk, dv = _right_sdpab(dout, q, k, v, weights, scale)
            return dq, dv, dk
        """),
    "sdpab_dk_no_scale": ("scaled_dot_product_attention_backward", """
        _right_sdpab = scaled_dot_product_attention_backward
        def scaled_dot_product_attention_backward(dout, q, k, v, weights, scale=None):
            dq, dk, dv = _right_sdpab(dout, q, k, v, weights, scale)
            return dq, dk / (1 / math.sqrt(q.shape[-1]) if scale is None else scale), dv
        """),
    "sdpab_no_scale": ("scaled_dot_product_attention_backward", """
        _right_sdpab = scaled_dot_product_attention_backward
        def scaled_dot_product_attention_backward(dout, q, k, v, weights, scale=None):
            return _right_sdpab(dout, q, k, v, weights, 1.0)
        """),
    "sdpab_dv_untransposed": ("scaled_dot_product_attention_backward", """
        _right_sdpab = scaled_dot_product_attention_backward
        def scaled_dot_product_attention_backward(dout, q, k, v, weights, scale=None):
            dq, dk, _ = _right_sdpab(dout, q, k, v, weights, scale)
            return dq, dk, weights @ dout
        """),
    "mha_scale_d_model": ("multihead_attention", """
        def multihead_attention(x, params, n_heads, kv=None, mask=None):
            kv = x if kv is None else kv
            B, T, C = x.shape
            def proj(t, n):
                y = t @ params["w_" + n].T + params["b_" + n]
                return y.reshape(B, t.shape[1], n_heads, C // n_heads).transpose(0, 2, 1, 3)
            out, w = scaled_dot_product_attention(proj(x, "q"), proj(kv, "k"), proj(kv, "v"), mask, 1 / math.sqrt(C))
            return out.transpose(0, 2, 1, 3).reshape(B, T, C) @ params["w_o"].T + params["b_o"], w
        """),
    "mha_heads_without_transpose": ("multihead_attention", """
        def multihead_attention(x, params, n_heads, kv=None, mask=None):
            kv = x if kv is None else kv
            B, T, C = x.shape
            def proj(t, n):
                return (t @ params["w_" + n].T + params["b_" + n]).reshape(B, n_heads, t.shape[1], C // n_heads)
            out, w = scaled_dot_product_attention(proj(x, "q"), proj(kv, "k"), proj(kv, "v"), mask)
            return out.transpose(0, 2, 1, 3).reshape(B, T, C) @ params["w_o"].T + params["b_o"], w
        """),
    "mha_weights_untransposed": ("multihead_attention", """
        _right_mha = multihead_attention
        def multihead_attention(x, params, n_heads, kv=None, mask=None):
            flipped = {k: (p.T if k.startswith("w") else p) for k, p in params.items()}
            return _right_mha(x, flipped, n_heads, kv, mask)
        """),
    # A plain softmax (no guard): a query that sees no key gets NaN, where this group's contract says zeros.
    "sdpa_masked_rows_nan": ("scaled_dot_product_attention", """
        def scaled_dot_product_attention(q, k, v, mask=None, scale=None):
            s = q @ np.swapaxes(k, -1, -2) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
            if mask is not None:
                s = np.where(mask, s, -np.inf)
            e = np.exp(s - s.max(-1, keepdims=True))
            w = e / e.sum(-1, keepdims=True)
            return w @ v, w
        """),
    "mha_masked_rows_nan": ("multihead_attention", """
        def _softmax(s):
            e = np.exp(s - s.max(-1, keepdims=True))
            return e / e.sum(-1, keepdims=True)
        """),
    "mha_no_out_projection": ("multihead_attention", """
        def multihead_attention(x, params, n_heads, kv=None, mask=None):
            kv = x if kv is None else kv
            B, T, C = x.shape
            def proj(t, n):
                y = t @ params["w_" + n].T + params["b_" + n]
                return y.reshape(B, t.shape[1], n_heads, C // n_heads).transpose(0, 2, 1, 3)
            out, w = scaled_dot_product_attention(proj(x, "q"), proj(kv, "k"), proj(kv, "v"), mask)
            return out.transpose(0, 2, 1, 3).reshape(B, T, C), w
        """),
    "mhab_no_rowsum": ("multihead_attention_backward", """
        def scaled_dot_product_attention_backward(dout, q, k, v, weights, scale=None):
            ds = weights * (dout @ np.swapaxes(v, -1, -2)) / math.sqrt(q.shape[-1])
            return ds @ k, np.swapaxes(ds, -1, -2) @ q, np.swapaxes(weights, -1, -2) @ dout
        """),
    "mhab_scale_d_model": ("multihead_attention_backward", """
        _right_sdpab = scaled_dot_product_attention_backward
        def scaled_dot_product_attention_backward(dout, q, k, v, weights, scale=None):
            return _right_sdpab(dout, q, k, v, weights, 1 / math.sqrt(q.shape[1] * q.shape[-1]))
        """),
    "mhab_weight_grads_transposed": ("multihead_attention_backward", """
        _right_mhab = multihead_attention_backward
        def multihead_attention_backward(dout, x, params, n_heads, weights, kv):
            out = list(_right_mhab(dout, x, params, n_heads, weights, kv))
            return tuple(g.T if g.ndim == 2 and i >= 2 else g for i, g in enumerate(out))
        """),
    "sin_concatenated": ("sinusoidal_encoding", """
        def sinusoidal_encoding(max_len, d_model, base=10000.0):
            ang = np.arange(max_len)[:, None] / base ** (np.arange(0, d_model, 2) / d_model)
            return np.concatenate([np.sin(ang), np.cos(ang)], axis=1)
        """),
    "sin_cos_swapped": ("sinusoidal_encoding", """
        def sinusoidal_encoding(max_len, d_model, base=10000.0):
            ang = np.arange(max_len)[:, None] / base ** (np.arange(0, d_model, 2) / d_model)
            return np.stack([np.cos(ang), np.sin(ang)], axis=-1).reshape(max_len, d_model)
        """),
    "sin_exponent_i_not_2i": ("sinusoidal_encoding", """
        def sinusoidal_encoding(max_len, d_model, base=10000.0):
            ang = np.arange(max_len)[:, None] / base ** (np.arange(d_model // 2) / d_model)
            return np.stack([np.sin(ang), np.cos(ang)], axis=-1).reshape(max_len, d_model)
        """),
    "sin_positions_from_1": ("sinusoidal_encoding", """
        def sinusoidal_encoding(max_len, d_model, base=10000.0):
            ang = np.arange(1, max_len + 1)[:, None] / base ** (np.arange(0, d_model, 2) / d_model)
            return np.stack([np.sin(ang), np.cos(ang)], axis=-1).reshape(max_len, d_model)
        """),
    "rope_negative_angle": ("apply_rope", """
        def apply_rope(x, positions=None, base=10000.0, layout="half"):
            cos, sin = _cos_sin(x, positions, base, layout)
            return x * cos - _turn(x, layout) * sin
        """),
    "rope_wrong_pairing": ("apply_rope", """
        def apply_rope(x, positions=None, base=10000.0, layout="half"):
            cos, sin = _cos_sin(x, positions, base, "half")
            return x * cos + _turn(x, "half") * sin
        """),
    "rope_exponent_i_not_2i": ("apply_rope", """
        _right_cos_sin = _cos_sin
        def apply_rope(x, positions=None, base=10000.0, layout="half"):
            cos, sin = _right_cos_sin(x, positions, base ** 0.5, layout)  # base^(-i/D) = sqrt(base)^(-2i/D)
            return x * cos + _turn(x, layout) * sin
        """),
    "rope_positions_ignored": ("apply_rope", """
        _right_rope = apply_rope
        def apply_rope(x, positions=None, base=10000.0, layout="half"):
            return _right_rope(x, None, base, layout)
        """),
    "ropeb_positive_angle": ("apply_rope_backward", "apply_rope_backward = apply_rope\n"),
    "ropeb_cos_only": ("apply_rope_backward", """
        def apply_rope_backward(dout, positions=None, base=10000.0, layout="half"):
            return dout * _cos_sin(dout, positions, base, layout)[0]
        """),
    "ropeb_wrong_pairing": ("apply_rope_backward", """
        def apply_rope_backward(dout, positions=None, base=10000.0, layout="half"):
            other = "interleaved" if layout == "half" else "half"
            cos, sin = _cos_sin(dout, positions, base, other)
            return dout * cos - _turn(dout * sin, other)
        """),
}


def _ns(source: str = "") -> dict:
    ns: dict = {}
    exec(compile(GOOD + "\n" + textwrap.dedent(source), "<planted>", "exec"), ns)
    return ns


def _exercises():
    return [ex for g in GROUPS for ex in get_group(g)]


def test_every_variant_has_a_planted_test():
    """Every named mistake; conventions and precision variants pass and are tested in
    tests/test_check_verdicts.py."""
    assert {v.name for ex in _exercises() for v in ex.variants if v.kind == "mistake"} == set(PLANTED)


def _failures(report):
    return [(r["exercise"], r["case"], r["verdict"], r["message"]) for r in report.rows if not r["ok"]]


def test_correct_numpy_file_passes_in_the_sandbox():
    # Through the child process: None (no bias, no mask), lists (betas), nested dicts (lora, params),
    # bool masks and int targets all have to survive the npz + JSON transport.
    report = check_file(GOOD_PATH)
    assert report.framework == "numpy" and len(report.rows) == sum(len(ex.cases) for ex in _exercises())
    assert report.ok, _failures(report)


def test_correct_torch_file_passes_in_the_sandbox():
    report = check_file(TORCH_PATH)
    graded = {r["exercise"] for r in report.rows}
    assert report.framework == "torch" and {"layer_norm_backward", "lora_linear_backward", "adamw_step",
                                            "scaled_dot_product_attention_backward", "apply_rope"} <= graded
    assert report.ok, _failures(report)


def test_the_three_references_agree():
    # The NumPy column of a backward is numpy_impl's hand-written backward; torch's is autograd (or
    # peft, or torch.optim.AdamW) and JAX's is jax.vjp. A case whose references disagree would grade
    # users against an arbitrary one of them.
    for ex in _exercises():
        for case in ex.cases:
            inputs = case.inputs(np.random.default_rng(case.seed), np.dtype(case.dtype))
            refs = reference_outputs(ex, inputs)
            assert set(refs) == {"numpy", "jax", "torch"}
            tol = tolerance(case.dtype, ex.tol_kind)
            for name in ("numpy", "jax"):
                for got, want in zip(refs[name], refs["torch"], strict=True):
                    ok, err = compare(got, want, tol)
                    assert ok, f"{ex.name} / {case.name}: {name} vs torch, max |err| {err:.2e}"


def _case(exercise, name_start):
    ex = next(e for e in _exercises() if e.name == exercise)
    case = next(c for c in ex.cases if c.name.startswith(name_start))
    inputs = case.inputs(np.random.default_rng(case.seed), np.dtype(case.dtype))
    return inputs, reference_outputs(ex, inputs)


def test_golden_values_by_hand():
    # Checkable without any backend: row 0 of the sinusoidal table is sin(0), cos(0), ... =
    # [0, 1, 0, 1, ...]; a fresh adapter (B = 0) merges to the weight itself; a single key and a
    # value row v give attention output v whatever the query.
    _, refs = _case("sinusoidal_encoding", "(6, 8)")
    for tables in refs.values():
        assert np.array_equal(tables[0][0], [0, 1] * 4)
    inputs, refs = _case("merge_lora", "a fresh adapter")
    for merged in refs.values():
        assert np.array_equal(merged[0], inputs["w"])
    ex = next(e for e in _exercises() if e.name == "scaled_dot_product_attention")
    rng = np.random.default_rng(0)
    one = {"q": rng.standard_normal((1, 1, 3, 4)), "k": rng.standard_normal((1, 1, 1, 4)),
           "v": np.array([[[[1.0, -2.0, 3.0, 0.5]]]]), "mask": None, "scale": None}
    for out, weights in reference_outputs(ex, one).values():
        assert np.allclose(out, np.broadcast_to(one["v"], (1, 1, 3, 4)), atol=1e-15) and np.all(weights == 1.0)


@pytest.mark.parametrize("framework", ["numpy", "torch", "jax"])
def test_skeletons_compile_and_define_every_exercise(framework):
    for group in GROUPS:
        source = render(group, group, get_group(group), framework)
        compile(source, f"<{group} {framework}>", "exec")
        for ex in get_group(group):
            assert f"def {ex.defines}(" in source


@pytest.mark.parametrize("variant", sorted(PLANTED))
def test_planted_mistake_is_named(variant):
    exercise, source = PLANTED[variant]
    report = check(exercise, _ns(source)[exercise], framework="numpy")
    assert not report.ok and variant in report.mistakes, str(report)
