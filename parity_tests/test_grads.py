"""Every hand-written NumPy backward against torch autograd, jax.grad and finite differences.

Recipe for each op: run the NumPy forward, push a random upstream gradient G through its
`*_backward`, and compare each input/parameter gradient with d sum(f(x) * G) / dx computed by
(1) torch autograd through torch_ref (torch's own ops), (2) jax.grad through jax_impl, both in
float64 under the ("grad", "float64") tolerance, and (3) central finite differences of the NumPy
forward on tiny shapes. Masks cover causal / padding with fully masked rows / none, and T_q != T_k.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jax_impl  # noqa: F401  (float64 on)
from triptych.common.checks import InputError
from triptych.common.tolerances import assert_close
from jax_impl import attention as ja, layers as jl, losses as jloss, multihead as jm, positional as jp
from numpy_impl import attention as na, layers as nl, losses as nloss, masks as nmk, multihead as nm, positional as npos
from torch_ref import attention as ta, layers as tl, losses as tloss, multihead as tm

F64 = np.float64


def _rng(seed=0):
    return np.random.default_rng(seed)


def _torch_grads(fn, inputs: dict, wrt: list[str], G) -> dict:
    """d sum(fn(**inputs) * G) / d inputs[name] by torch autograd (dict-valued inputs allowed)."""
    leaves = {}

    def conv(name, v):
        if isinstance(v, dict):
            return {k: conv(f"{name}.{k}", x) for k, x in v.items()}
        if isinstance(v, np.ndarray):
            t = torch.tensor(v, requires_grad=(name.split(".")[0] in wrt and v.dtype.kind == "f"))
            if t.requires_grad:
                leaves[name] = t
            return t
        return v

    args = {k: conv(k, v) for k, v in inputs.items()}
    out = fn(**args)
    out = out[0] if isinstance(out, tuple) else out
    (out * torch.as_tensor(G)).sum().backward()
    return {k: t.grad.numpy() for k, t in leaves.items()}


def _jax_grads(fn, inputs: dict, wrt: list[str], G) -> dict:
    fixed = {k: (jnp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in inputs.items() if k not in wrt}
    diff = {k: jax.tree.map(jnp.asarray, inputs[k]) for k in wrt}

    def objective(d):
        out = fn(**fixed, **d)
        out = out[0] if isinstance(out, tuple) else out
        return jnp.sum(out * G)

    grads = jax.grad(objective)(diff)
    flat = {}
    for k, g in grads.items():
        if isinstance(g, dict):
            flat.update({f"{k}.{n}": np.asarray(x) for n, x in g.items()})
        else:
            flat[k] = np.asarray(g)
    return flat


def _fd_grads(fn, inputs: dict, wrt: list[str], G, h=1e-6) -> dict:
    """Central differences of sum(fn(**inputs) * G), one element at a time (tiny shapes only)."""

    def objective():
        out = fn(**inputs)
        out = out[0] if isinstance(out, tuple) else out
        return float(np.sum(out * G))

    grads = {}
    for name in wrt:
        targets = inputs[name].items() if isinstance(inputs[name], dict) else [(None, inputs[name])]
        for sub, arr in targets:
            g = np.zeros_like(arr)
            for i in np.ndindex(arr.shape):
                old = arr[i]
                arr[i] = old + h
                up = objective()
                arr[i] = old - h
                down = objective()
                arr[i] = old
                g[i] = (up - down) / (2 * h)
            grads[name if sub is None else f"{name}.{sub}"] = g
    return grads


def _check_all(ours: dict, inputs: dict, wrt: list[str], G, np_fn, torch_fn, jax_fn, fd: bool = True):
    refs = {"torch": _torch_grads(torch_fn, inputs, wrt, G), "jax": _jax_grads(jax_fn, inputs, wrt, G)}
    for who, ref in refs.items():
        assert set(ref) == set(ours), (who, sorted(ref), sorted(ours))
        for k in ours:
            assert np.all(np.isfinite(ours[k])), f"NaN/inf in our grad {k}"
            assert_close(ours[k], ref[k], F64, "grad", what=f"d/d{k} vs {who}")
    if fd:
        for k, g in _fd_grads(np_fn, inputs, wrt, G).items():
            assert_close(ours[k], g, F64, "finite_difference", what=f"d/d{k} vs finite differences")


# ------------------------------------------------------------------------------------------------
# layers


def test_linear():
    r = _rng(1)
    inp = {"x": r.standard_normal((2, 3, 5)), "w": r.standard_normal((4, 5)), "b": r.standard_normal(4)}
    G = r.standard_normal((2, 3, 4))
    dx, dw, db = nm.linear_backward(G, inp["x"], inp["w"])
    _check_all({"x": dx, "w": dw, "b": db}, inp, ["x", "w", "b"], G, nm.linear, tl.linear, jl.linear)


def test_embedding_repeated_ids_accumulate():
    r = _rng(2)
    idx = np.array([[1, 3, 1], [0, 6, 1]])  # id 1 three times, ids 2, 4, 5 never
    inp = {"idx": idx, "table": r.standard_normal((7, 4))}
    G = r.standard_normal((2, 3, 4))
    _, cache = nl.embedding_forward(idx, inp["table"])
    dtable = nl.embedding_backward(G, cache)
    assert np.all(dtable[[2, 4, 5]] == 0)
    _check_all({"table": dtable}, inp, ["table"], G, nl.embedding, tl.embedding, jl.embedding)


def test_layer_norm():
    r = _rng(3)
    inp = {"x": r.standard_normal((2, 3, 6)) * 3 + 1, "weight": r.standard_normal(6), "bias": r.standard_normal(6)}
    G = r.standard_normal((2, 3, 6))
    _, cache = nl.layer_norm_forward(**inp)
    dx, dw, db = nl.layer_norm_backward(G, cache)
    _check_all({"x": dx, "weight": dw, "bias": db}, inp, ["x", "weight", "bias"], G,
               nl.layer_norm, tl.layer_norm, jl.layer_norm)


def test_gelu_tanh_approximation():
    r = _rng(4)
    inp = {"x": np.concatenate([r.standard_normal(20) * 2, [-30.0, -5.0, 0.0, 5.0, 30.0]])}
    G = r.standard_normal(25)
    _, cache = nl.gelu_forward(inp["x"])
    _check_all({"x": nl.gelu_backward(G, cache)}, inp, ["x"], G, nl.gelu, tl.gelu, jl.gelu)


def test_mlp():
    r = _rng(5)
    C = 3
    params = {"w_fc": r.standard_normal((4 * C, C)), "b_fc": r.standard_normal(4 * C),
              "w_proj": r.standard_normal((C, 4 * C)) * 0.5, "b_proj": r.standard_normal(C)}
    inp = {"x": r.standard_normal((2, 2, C)), "params": params}
    G = r.standard_normal((2, 2, C))
    _, cache = nl.mlp_forward(**inp)
    dx, g = nl.mlp_backward(G, cache)
    ours = {"x": dx, **{f"params.{k}": v for k, v in g.items()}}
    _check_all(ours, inp, ["x", "params"], G, nl.mlp, tl.mlp, jl.mlp)


def test_dropout_backward_uses_the_forward_mask():
    """No other framework shares NumPy's random stream, so the reference is the analytic gradient of
    x * keep / (1 - p) with the same mask, plus finite differences with the same seed."""
    r = _rng(6)
    x = r.standard_normal((50, 40))
    G = r.standard_normal(x.shape)
    y, keep = nl.dropout_forward(x, 0.3, np.random.default_rng(7))
    dropped = np.mean(y == 0)
    assert 0.25 < dropped < 0.35  # 2000 draws at p = 0.3
    np.testing.assert_array_equal(np.unique(keep), [0.0, 1.0 / 0.7])
    assert_close(nl.dropout_backward(G, keep), G * (y != 0) / 0.7, F64, "grad")
    small = {"x": r.standard_normal((3, 4))}
    Gs = r.standard_normal((3, 4))
    _, keep_s = nl.dropout_forward(small["x"], 0.5, np.random.default_rng(8))
    fd = _fd_grads(lambda x: nl.dropout(x, 0.5, np.random.default_rng(8)), small, ["x"], Gs)
    assert_close(nl.dropout_backward(Gs, keep_s), fd["x"], F64, "finite_difference")
    # evaluation mode: identity, and no cache
    assert nl.dropout_forward(x, 0.3, None)[1] is None and nl.dropout(x, 0.3, None) is x


@pytest.mark.parametrize("mask_kind", ["none", "causal", "causal+padding"])
def test_transformer_block(mask_kind):
    r = _rng(9)
    B, T, C, H = 2, 4, 4, 2
    params = {k: r.standard_normal((C,)) * 0.3 + (1.0 if k.endswith("weight") and "ln" in k else 0.0)
              for k in ("ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias")}
    for n in "qkvo":
        params[f"attn.w_{n}"] = r.standard_normal((C, C)) * 0.5
        params[f"attn.b_{n}"] = r.standard_normal(C) * 0.1
    params.update({"mlp.w_fc": r.standard_normal((4 * C, C)) * 0.5, "mlp.b_fc": r.standard_normal(4 * C) * 0.1,
                   "mlp.w_proj": r.standard_normal((C, 4 * C)) * 0.5, "mlp.b_proj": r.standard_normal(C) * 0.1})
    mask = {"none": None, "causal": nmk.make_causal_mask(T),
            "causal+padding": _padding_mask(B, T, T, causal=True)}[mask_kind]
    inp = {"x": r.standard_normal((B, T, C)), "params": params, "n_head": H, "mask": mask}
    G = r.standard_normal((B, T, C))
    _, cache = nl.transformer_block_forward(**inp)
    dx, g = nl.transformer_block_backward(G, cache)
    ours = {"x": dx, **{f"params.{k}": v for k, v in g.items()}}
    _check_all(ours, inp, ["x", "params"], G, nl.transformer_block, tl.transformer_block, jl.transformer_block,
               fd=mask_kind == "causal+padding")


# ------------------------------------------------------------------------------------------------
# losses


@pytest.mark.parametrize("ignored", ["none", "some", "all"])
def test_cross_entropy(ignored):
    r = _rng(10)
    logits = r.standard_normal((2, 5, 7)) * 3
    targets = r.integers(0, 7, (2, 5))
    if ignored == "some":
        targets[0, :2] = -100
        targets[1, 4] = -100
    elif ignored == "all":
        targets[:] = -100
    inp = {"logits": logits, "targets": targets}
    G = np.float64(r.standard_normal())  # the upstream gradient of a scalar loss is a scalar
    loss, cache = nloss.cross_entropy_forward(logits, targets)
    ours = {"logits": nloss.cross_entropy_backward(G, cache)}
    ref = tloss.cross_entropy(torch.tensor(logits), torch.tensor(targets))
    assert_close(loss, ref.numpy(), F64, "value", what="loss vs torch")
    _check_all(ours, inp, ["logits"], G, nloss.cross_entropy, tloss.cross_entropy, jloss.cross_entropy)
    if ignored == "all":
        assert loss == 0.0 and np.all(ours["logits"] == 0.0)
    else:
        kept = targets != -100  # independent value: mean of -log softmax at the targets
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        expected = -np.take_along_axis(logp, np.where(kept, targets, 0)[..., None], -1)[..., 0][kept].mean()
        assert_close(loss, expected, F64, "value")


def test_cross_entropy_rejects_bad_targets():
    with pytest.raises(InputError, match="targets: expected ids in \\[0, 7\\)"):
        nloss.cross_entropy(np.zeros((3, 7)), np.array([0, 7, 1]))
    with pytest.raises(InputError, match="targets: expected shape"):
        nloss.cross_entropy(np.zeros((3, 7)), np.array([0, 1]))


# ------------------------------------------------------------------------------------------------
# positions


def test_learned_positions():
    r = _rng(11)
    inp = {"x": r.standard_normal((2, 3, 4)), "table": r.standard_normal((5, 4))}
    G = r.standard_normal((2, 3, 4))
    dx, dtable = npos.learned_positional_encoding_backward(G, inp["table"])
    assert np.all(dtable[3:] == 0)  # rows beyond T unused
    _check_all({"x": dx, "table": dtable}, inp, ["x", "table"], G, npos.learned_positional_encoding,
               lambda x, table: x + table[: x.shape[1]], jp.learned_positional_encoding)


def test_sinusoidal_positions_pass_the_gradient_through():
    r = _rng(12)
    inp = {"x": r.standard_normal((2, 3, 6))}
    G = r.standard_normal((2, 3, 6))
    pe_np, pe_j = npos.PositionalEncoding(6, max_len=10), jp.PositionalEncoding(6, max_len=10)
    pe_t = torch.tensor(npos.sinusoidal_encoding(10, 6))
    _check_all({"x": pe_np.backward(G)}, inp, ["x"], G, pe_np, lambda x: x + pe_t[: x.shape[1]], pe_j)


@pytest.mark.parametrize("positions", [None, np.array([3, 7, 8, 20])])
def test_rope(positions):
    r = _rng(13)
    inp = {"x": r.standard_normal((2, 2, 4, 6))}
    G = r.standard_normal((2, 2, 4, 6))
    ours = {"x": npos.apply_rope_backward(G, positions)}
    cos, sin = (torch.tensor(a) for a in npos.rope_cos_sin(np.arange(4) if positions is None else positions, 6))

    def torch_rope(x):  # Llama's rotate_half, written with torch ops
        return x * cos + torch.cat([-x[..., 3:], x[..., :3]], dim=-1) * sin

    _check_all(ours, inp, ["x"], G, lambda x: npos.apply_rope(x, positions), torch_rope,
               lambda x: jp.apply_rope(x, positions))


# ------------------------------------------------------------------------------------------------
# attention


def _padding_mask(B, t_q, t_k, causal):
    """Key padding (sequence 1 has no valid key at all: fully masked rows), optionally AND causal."""
    lengths = np.array([t_k, 0, max(t_k - 2, 1)])[:B]
    pad = nmk.padding_to_attention_mask(nmk.make_key_padding_mask(lengths, t_k))  # (B, 1, 1, T_k)
    return nmk.combine_masks(nmk.make_causal_mask(t_q, t_k) if causal else None, pad)


def _mask(kind, B, t_q, t_k):
    return {"none": None, "causal": nmk.make_causal_mask(t_q, t_k), "padding": _padding_mask(B, t_q, t_k, False),
            "causal+padding": _padding_mask(B, t_q, t_k, True)}[kind]


def test_softmax_any_axis():
    r = _rng(14)
    for axis in (-1, 0):
        inp = {"x": r.standard_normal((3, 4, 5)) * 4}
        G = r.standard_normal((3, 4, 5))
        ours = {"x": na.softmax_backward(G, na.softmax(inp["x"], axis), axis)}
        _check_all(ours, inp, ["x"], G, lambda x: na.softmax(x, axis), lambda x: ta.softmax(x, axis),
                   lambda x: ja.softmax(x, axis))


@pytest.mark.parametrize("kind", ["none", "causal", "causal+padding"])
def test_attn_softmax_fully_masked_rows_get_zero_grad(kind):
    r = _rng(15)
    mask = _mask(kind, 3, 4, 5)
    inp = {"scores": r.standard_normal((3, 2, 4, 5)) * 2, "mask": mask}
    G = r.standard_normal((3, 2, 4, 5))
    weights = na.attn_softmax(inp["scores"], mask)
    ds = na.attn_softmax_backward(G, weights)
    if mask is not None:
        assert np.all(ds[np.broadcast_to(~mask, ds.shape)] == 0)  # masked keys: exactly zero
    _check_all({"scores": ds}, inp, ["scores"], G, na.attn_softmax, ta.attn_softmax, ja.attn_softmax)


def test_attention_steps():
    r = _rng(16)
    q, k, v = r.standard_normal((2, 3, 4)), r.standard_normal((2, 5, 4)), r.standard_normal((2, 5, 3))
    G = r.standard_normal((2, 3, 5))
    dq, dk = na.pairwise_similarities_backward(G, q, k)
    _check_all({"q": dq, "k": dk}, {"q": q, "k": k}, ["q", "k"], G, na.pairwise_similarities,
               ta.pairwise_similarities, ja.pairwise_similarities)
    w = r.random((2, 3, 5))
    Go = r.standard_normal((2, 3, 3))
    dw, dv = na.compute_outputs_backward(Go, w, v)
    _check_all({"weights": dw, "v": dv}, {"weights": w, "v": v}, ["weights", "v"], Go, na.compute_outputs,
               ta.compute_outputs, ja.compute_outputs)
    s = r.standard_normal((2, 3, 5))
    _check_all({"scores": na.attn_scaled_backward(G, 0.3)}, {"scores": s, "scale": 0.3}, ["scores"], G,
               na.attn_scaled, ta.attn_scaled, ja.attn_scaled)


@pytest.mark.parametrize("kind", ["none", "causal", "padding", "causal+padding"])
@pytest.mark.parametrize("t_q,t_k", [(4, 4), (3, 5), (5, 3)])
def test_scaled_dot_product_attention(kind, t_q, t_k):
    r = _rng(17)
    B, H, D = 3, 2, 4
    mask = _mask(kind, B, t_q, t_k)
    inp = {"q": r.standard_normal((B, H, t_q, D)), "k": r.standard_normal((B, H, t_k, D)),
           "v": r.standard_normal((B, H, t_k, D)), "mask": mask}
    G = r.standard_normal((B, H, t_q, D))
    out, weights = na.scaled_dot_product_attention(**inp)
    dq, dk, dv = na.scaled_dot_product_attention_backward(G, inp["q"], inp["k"], inp["v"], weights)
    if kind.endswith("padding"):  # sequence 1 sees no key: zero output and zero gradients
        assert np.all(out[1] == 0) and np.all(dq[1] == 0) and np.all(dk[1] == 0) and np.all(dv[1] == 0)
    _check_all({"q": dq, "k": dk, "v": dv}, inp, ["q", "k", "v"], G, na.scaled_dot_product_attention,
               ta.scaled_dot_product_attention, ja.scaled_dot_product_attention, fd=(t_q, t_k) == (3, 5))


def test_scaled_dot_product_attention_custom_scale():
    r = _rng(18)
    inp = {"q": r.standard_normal((2, 3, 4)), "k": r.standard_normal((2, 3, 4)), "v": r.standard_normal((2, 3, 2)),
           "mask": None, "scale": 0.7}
    G = r.standard_normal((2, 3, 2))
    _, w = na.scaled_dot_product_attention(**inp)
    dq, dk, dv = na.scaled_dot_product_attention_backward(G, inp["q"], inp["k"], inp["v"], w, scale=0.7)
    _check_all({"q": dq, "k": dk, "v": dv}, inp, ["q", "k", "v"], G, na.scaled_dot_product_attention,
               ta.scaled_dot_product_attention, ja.scaled_dot_product_attention, fd=False)


def test_wrong_zero_after_softmax_backward_leaks_into_masked_scores():
    r = _rng(19)
    mask = nmk.make_causal_mask(4)
    inp = {"scores": r.standard_normal((2, 4, 4)), "mask": mask}
    G = r.standard_normal((2, 4, 4))
    ds = na.wrong_zero_after_softmax_backward(G, inp["scores"], mask)
    assert np.all(np.abs(ds[:, ~mask]) > 0)  # future scores get gradient: the leak
    _check_all({"scores": ds}, inp, ["scores"], G, na.wrong_zero_after_softmax, ta.wrong_zero_after_softmax,
               ja.wrong_zero_after_softmax)


@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("kind", ["none", "causal+padding"])
def test_multihead_attention(cross, kind):
    from triptych.common.params import init_mha_params

    r = _rng(20)
    B, T_q, C, H = 3, 4, 4, 2
    T_k = 3 if cross else T_q
    inp = {"x": r.standard_normal((B, T_q, C)), "params": init_mha_params(C, seed=3),
           "n_heads": H, "kv": r.standard_normal((B, T_k, C)) if cross else None, "mask": _mask(kind, B, T_q, T_k)}
    G = r.standard_normal((B, T_q, C))
    _, weights = nm.multihead_attention(**inp)
    dx, dkv, g = nm.multihead_attention_backward(G, inp["x"], inp["params"], H, weights, kv=inp["kv"])
    ours = {"x": dx, **{f"params.{k}": v for k, v in g.items()}}
    wrt = ["x", "params"]
    if cross:
        ours["kv"] = dkv
        wrt.append("kv")
    else:
        assert dkv is None
    _check_all(ours, inp, wrt, G, nm.multihead_attention, tm.multihead_attention, jm.multihead_attention,
               fd=cross and kind != "none")
