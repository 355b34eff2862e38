"""The NumPy GPT's hand-written gradients and its AdamW, against torch autograd and finite differences.

The torch model here is written independently with torch's functional ops (F.embedding,
F.layer_norm, F.linear, F.scaled_dot_product_attention(is_causal=True), F.gelu(tanh),
F.cross_entropy) from the same weight dict, so a shared mistake in our NumPy pieces cannot hide.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from triptych.common.checks import InputError
from triptych.common.gpt_config import GPTConfig, init_gpt_params
from triptych.common.tolerances import assert_close
from numpy_impl.gpt import gpt_forward, gpt_loss, gpt_loss_and_grads
from numpy_impl.optim import adamw_init, adamw_step, clip_grad_norm


def torch_gpt_logits(p: dict, idx: torch.Tensor, cfg: GPTConfig, head: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (B, T, V), including the attention experiments; `head` replaces the tied wte in the
    output projection when given."""
    B, T = idx.shape
    C, H = cfg.n_embd, cfg.n_head
    D = C // H
    share, sim = cfg.share_qkv, cfg.similarity
    src = {"q": "q", "k": "q" if share in ("qk", "qkv") else "k", "v": {"kv": "k", "qkv": "q"}.get(share, "v")}
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    x = F.embedding(idx, p["wte.weight"])
    if cfg.scale_embeddings:
        x = x * math.sqrt(C)
    pos = torch.arange(T, dtype=torch.float64)
    if cfg.positions == "learned":
        x = x + p["wpe.weight"][:T]
    elif cfg.positions == "sinusoidal":
        angles = pos[:, None] * 10000.0 ** (-torch.arange(0, C, 2, dtype=torch.float64) / C)
        x = x + torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(T, C).to(x.dtype)
    angles = pos[:, None] * 10000.0 ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    cos, sin = torch.cat([angles, angles], -1).cos().to(x.dtype), torch.cat([angles, angles], -1).sin().to(x.dtype)
    # ALiBi from the paper's definition (H a power of two here): slope m_h = 2^(-8h/H), h = 1..H, and
    # query i's score with key j gets -m_h (i - j). Written out again, not through our masks module.
    slopes = 2.0 ** (-8.0 * torch.arange(1, H + 1, dtype=torch.float64) / H)
    alibi = (-slopes[:, None, None] * (pos[:, None] - pos[None, :])).to(x.dtype)  # (H, T, T)
    for i in range(cfg.n_layer):
        def g(name):
            return p[f"h.{i}.{name}"]

        h = F.layer_norm(x, (C,), g("ln_1.weight"), g("ln_1.bias"))

        def proj(n):
            if cfg.qkv_mlp:
                hidden = F.gelu(F.linear(h, g(f"attn.mlp_{n}.w_fc"), g(f"attn.mlp_{n}.b_fc")), approximate="tanh")
                return F.linear(hidden, g(f"attn.mlp_{n}.w_proj"), g(f"attn.mlp_{n}.b_proj"))
            return F.linear(h, g(f"attn.w_{n}"), g(f"attn.b_{n}"))

        q, k, v = (proj(src[n]) for n in "qkv")
        if cfg.attention == "aft_simple":
            scores = k.transpose(1, 2)[:, :, None, :].expand(-1, -1, T, -1)  # (B, C, t, s) = k_s
            w = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
            a = torch.sigmoid(q) * torch.einsum("bcts,bsc->btc", w, v)
        else:
            q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))
            if cfg.positions == "rope":
                q, k = (t * cos + torch.cat([-t[..., D // 2:], t[..., : D // 2]], -1) * sin for t in (q, k))
            if sim == "dot":
                s = q @ k.transpose(-1, -2) / math.sqrt(D)
            elif sim == "neg_sq_dist":
                s = -torch.cdist(q, k) ** 2 / math.sqrt(D)
            else:
                s = g("attn.log_temp").exp()[:, None, None] * (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2))
            if cfg.positions == "alibi":
                s = s + alibi
            if cfg.post_softmax_mask:
                w = torch.softmax(s, dim=-1) * causal
            else:
                w = torch.softmax(s.masked_fill(~causal, float("-inf")), dim=-1)
            a = (w @ v).transpose(1, 2).reshape(B, T, C)
        x = x + F.linear(a, g("attn.w_o"), g("attn.b_o"))
        h = F.layer_norm(x, (C,), g("ln_2.weight"), g("ln_2.bias"))
        x = x + F.linear(F.gelu(F.linear(h, g("mlp.w_fc"), g("mlp.b_fc")), approximate="tanh"),
                         g("mlp.w_proj"), g("mlp.b_proj"))
    x = F.layer_norm(x, (C,), p["ln_f.weight"], p["ln_f.bias"])
    return F.linear(x, p["wte.weight"] if head is None else head)


def _setup(positions, dtype=np.float64, seed=0, T=8, B=3, **cfg_kw):
    # 4 heads with ALiBi so the slopes differ by more than one factor (1/4, 1/16, 1/64, 1/256)
    heads = 4 if positions == "alibi" else 2
    cfg = GPTConfig(**{**dict(vocab_size=11, block_size=8, n_layer=2, n_head=heads, n_embd=8, positions=positions), **cfg_kw})
    rng = np.random.default_rng(seed)
    # Perturb the GPT-2 init (zero biases, unit gains) so every parameter's gradient path is exercised.
    params = {k: (v + rng.standard_normal(v.shape) * 0.1).astype(dtype) for k, v in init_gpt_params(cfg, seed, dtype).items()}
    idx = rng.integers(0, cfg.vocab_size, (B, T))
    targets = rng.integers(0, cfg.vocab_size, (B, T))
    targets[0, :3] = -100  # some ignored positions
    return cfg, params, idx, targets


def _torch_loss_and_grads(params, idx, targets, cfg):
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    logits = torch_gpt_logits(tp, torch.from_numpy(idx), cfg)
    loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), torch.from_numpy(targets).reshape(-1))
    loss.backward()
    return logits.detach().numpy(), loss.item(), {k: t.grad.numpy() for k, t in tp.items()}


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rope", "alibi", "none", "sinusoidal*sqrt(C)"])
def test_gpt_grads_match_torch_autograd_float64(positions):
    kw = {"scale_embeddings": True} if positions.endswith("*sqrt(C)") else {}
    cfg, params, idx, targets = _setup(positions.removesuffix("*sqrt(C)"), **kw)
    ref_logits, ref_loss, ref_grads = _torch_loss_and_grads(params, idx, targets, cfg)
    assert_close(gpt_forward(params, idx, cfg), ref_logits, np.float64, "value", what="logits")
    loss, grads = gpt_loss_and_grads(params, idx, targets, cfg)
    assert_close(loss, ref_loss, np.float64, "value", what="loss")
    assert_close(gpt_loss(params, idx, targets, cfg), ref_loss, np.float64, "value", what="gpt_loss")
    assert list(grads) == list(params)
    for k in params:
        assert grads[k].shape == params[k].shape
        assert_close(grads[k], ref_grads[k], np.float64, "grad", what=f"d loss / d {k}")


@pytest.mark.parametrize("positions", ["learned", "alibi"])
def test_gpt_grads_float32_stay_float32_and_match_torch(positions):
    cfg, params, idx, targets = _setup(positions, dtype=np.float32)
    loss, grads = gpt_loss_and_grads(params, idx, targets, cfg)
    _, ref_loss, ref_grads = _torch_loss_and_grads(params, idx, targets, cfg)
    assert isinstance(loss, float)
    for k in params:
        assert grads[k].dtype == np.float32, k
        assert_close(grads[k], ref_grads[k], np.float32, "grad", what=f"d loss / d {k}")


def _fd_check(params, loss_fn, grads, n_per_param=3, h=1e-6, seed=0):
    """Central differences on a few random entries of every parameter."""
    rng = np.random.default_rng(seed)
    for k, p in params.items():
        flat = p.reshape(-1)  # a view: perturbing flat perturbs params[k]
        for j in rng.choice(flat.size, size=min(n_per_param, flat.size), replace=False):
            old = flat[j]
            flat[j] = old + h
            up = loss_fn()
            flat[j] = old - h
            down = loss_fn()
            flat[j] = old
            assert_close(grads[k].reshape(-1)[j], (up - down) / (2 * h), np.float64, "finite_difference",
                         what=f"d loss / d {k}[{j}] vs finite differences")


@pytest.mark.parametrize("positions", ["learned", "rope", "alibi", "none"])
def test_gpt_grads_match_finite_differences(positions):
    cfg, params, idx, targets = _setup(positions, T=5, B=2, scale_embeddings=positions == "none")
    _, grads = gpt_loss_and_grads(params, idx, targets, cfg)
    _fd_check(params, lambda: gpt_loss(params, idx, targets, cfg), grads)


def test_gpt_with_dropout_grads_match_finite_differences():
    """Dropout draws from the rng passed in: the same seed gives the same masks, so the loss is a
    deterministic function of the weights and finite differences apply."""
    cfg, params, idx, targets = _setup("learned", T=5, B=2, dropout=0.3)
    seed = 5
    loss, grads = gpt_loss_and_grads(params, idx, targets, cfg, rng=np.random.default_rng(seed))
    assert loss != gpt_loss(params, idx, targets, cfg)  # dropout really was on...
    assert loss == gpt_loss(params, idx, targets, cfg, rng=np.random.default_rng(seed))  # ...and reproducible
    _fd_check(params, lambda: gpt_loss(params, idx, targets, cfg, rng=np.random.default_rng(seed)), grads)


def test_gpt_weight_tying_sums_both_uses():
    """wte's gradient = (gradient through the lookup) + (gradient through the head): torch computes the
    two separately when the head is given its own copy of the matrix."""
    cfg, params, idx, targets = _setup("learned")
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    head = torch.tensor(params["wte.weight"], requires_grad=True)
    logits = torch_gpt_logits(tp, torch.from_numpy(idx), cfg, head=head)
    F.cross_entropy(logits.reshape(-1, cfg.vocab_size), torch.from_numpy(targets).reshape(-1)).backward()
    lookup_part, head_part = tp["wte.weight"].grad.numpy(), head.grad.numpy()
    assert np.abs(lookup_part).max() > 1e-3 and np.abs(head_part).max() > 1e-3
    _, grads = gpt_loss_and_grads(params, idx, targets, cfg)
    assert_close(grads["wte.weight"], lookup_part + head_part, np.float64, "grad")


def test_all_ignored_targets_give_zero_loss_and_zero_grads():
    cfg, params, idx, targets = _setup("learned")
    loss, grads = gpt_loss_and_grads(params, idx, np.full_like(targets, -100), cfg)
    assert loss == 0.0 and all(np.all(g == 0) for g in grads.values())


def test_sinusoidal_rope_alibi_none_run_beyond_block_size_but_learned_refuses():
    for positions in ("sinusoidal", "rope", "alibi", "none"):
        cfg, params, _, _ = _setup(positions)
        idx = np.random.default_rng(1).integers(0, cfg.vocab_size, (1, 3 * cfg.block_size))
        logits = gpt_forward(params, idx, cfg)
        assert logits.shape == (1, 3 * cfg.block_size, cfg.vocab_size) and np.all(np.isfinite(logits))
        # causal: the first block's logits do not depend on what comes after
        assert_close(logits[:, : cfg.block_size], gpt_forward(params, idx[:, : cfg.block_size], cfg), np.float64)
    cfg, params, _, _ = _setup("learned")
    with pytest.raises(InputError, match="idx: expected at most block_size=8"):
        gpt_forward(params, np.zeros((1, 9), dtype=np.int64), cfg)
    with pytest.raises(InputError, match="idx: expected token ids in \\[0, 11\\)"):
        gpt_forward(params, np.full((1, 4), 11), cfg)


# ------------------------------------------------------------------------------------------------
# optimiser


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adamw_matches_torch_adamw_with_two_param_groups(dtype):
    cfg, params, idx, targets = _setup("learned", dtype=dtype)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    groups = [{"params": [t for t in tp.values() if t.ndim >= 2], "weight_decay": 0.1},
              {"params": [t for t in tp.values() if t.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=3e-3, betas=(0.9, 0.95), eps=1e-8)
    state = adamw_init(params)
    rng = np.random.default_rng(3)
    for _ in range(10):
        grads = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in params.items()}
        for k, t in tp.items():
            t.grad = torch.tensor(grads[k])
        opt.step()
        params, state = adamw_step(params, grads, state, lr=3e-3)
    assert state["step"] == 10
    for k in params:
        assert params[k].dtype == dtype
        assert_close(params[k], tp[k].detach().numpy(), dtype, "value", what=k)
        assert_close(state["m"][k], opt.state[tp[k]]["exp_avg"].numpy(), dtype, "value", what=f"m[{k}]")
        assert_close(state["v"][k], opt.state[tp[k]]["exp_avg_sq"].numpy(), dtype, "value", what=f"v[{k}]")


def test_adamw_decays_matrices_only():
    params = {"w": np.ones((2, 2)), "b": np.ones(2)}
    zero = {"w": np.zeros((2, 2)), "b": np.zeros(2)}
    new, _ = adamw_step(params, zero, adamw_init(params), lr=0.1, weight_decay=0.5)
    assert_close(new["w"], np.full((2, 2), 1 - 0.1 * 0.5), np.float64)  # p <- p (1 - lr wd); m = 0
    assert_close(new["b"], np.ones(2), np.float64)


@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_torch(max_norm):
    rng = np.random.default_rng(4)
    grads = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    ts = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads.values()]
    for t, g in zip(ts, grads.values()):
        t.grad = torch.tensor(g)
    ref_norm = torch.nn.utils.clip_grad_norm_(ts, max_norm)
    clipped, norm = clip_grad_norm(grads, max_norm)
    assert_close(norm, ref_norm.numpy(), np.float64, "value")
    assert_close(norm, math.sqrt(sum((g ** 2).sum() for g in grads.values())), np.float64, "value")
    for t, k in zip(ts, grads):
        assert_close(clipped[k], t.grad.numpy(), np.float64, "value", what=k)


def test_numpy_training_reduces_the_loss():
    """A few AdamW steps on one batch must fit it better (the gradients point downhill)."""
    cfg, params, idx, targets = _setup("rope", seed=2)
    state = adamw_init(params)
    first, _ = gpt_loss_and_grads(params, idx, targets, cfg)
    for _ in range(15):
        loss, grads = gpt_loss_and_grads(params, idx, targets, cfg)
        grads, _ = clip_grad_norm(grads, 1.0)
        params, state = adamw_step(params, grads, state, lr=1e-2)
    assert gpt_loss(params, idx, targets, cfg) < 0.7 * first


# ------------------------------------------------------------------------------------------------
# the attention experiments


VARIANTS = {
    "neg_sq_dist": dict(similarity="neg_sq_dist"),
    "cosine": dict(similarity="cosine"),
    "share_qk": dict(share_qkv="qk"),
    "share_kv": dict(share_qkv="kv"),
    "share_qkv": dict(share_qkv="qkv"),
    "post_softmax_mask": dict(post_softmax_mask=True),
    "qkv_mlp": dict(qkv_mlp=True),
    "aft_simple": dict(attention="aft_simple"),
    "cosine+rope+share_qk": dict(similarity="cosine", positions="rope", share_qkv="qk"),
    "cosine+alibi": dict(similarity="cosine", positions="alibi"),
    "neg_sq_dist+alibi": dict(similarity="neg_sq_dist", positions="alibi"),
    "post_softmax_mask+alibi": dict(post_softmax_mask=True, positions="alibi"),
}


def _variant_setup(name, T=6, B=2):
    kw = dict(VARIANTS[name])
    return _setup(kw.pop("positions", "learned"), T=T, B=B, **kw)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_grads_match_torch_autograd_and_finite_differences(name):
    cfg, params, idx, targets = _variant_setup(name)
    ref_logits, ref_loss, ref_grads = _torch_loss_and_grads(params, idx, targets, cfg)
    assert_close(gpt_forward(params, idx, cfg), ref_logits, np.float64, "value", what="logits")
    loss, grads = gpt_loss_and_grads(params, idx, targets, cfg)
    assert_close(loss, ref_loss, np.float64, "value", what="loss")
    assert set(grads) == set(params)
    for k in params:
        assert_close(grads[k], ref_grads[k], np.float64, "grad", what=f"{name}: d loss / d {k}")
    _fd_check(params, lambda: gpt_loss(params, idx, targets, cfg), grads, n_per_param=1)


def test_post_softmax_masking_leaks_the_future():
    """With the naive mask, position t's logits change when a LATER token changes: the future
    leaks through the softmax denominator. The correct mask keeps the prefix untouched."""
    for naive in (False, True):
        cfg, params, idx, _ = _variant_setup("post_softmax_mask" if naive else "share_qk")
        changed = idx.copy()
        changed[:, -1] = (changed[:, -1] + 1) % cfg.vocab_size
        diff = np.abs(gpt_forward(params, idx, cfg)[:, :-1] - gpt_forward(params, changed, cfg)[:, :-1]).max()
        assert (diff > 1e-6) if naive else (diff == 0.0)


def test_unused_projection_keys_get_zero_grads():
    """With Q = K, a params dict that still holds w_k / b_k trains the same; their gradient is 0."""
    cfg, params, idx, targets = _variant_setup("share_qk")
    loss, grads = gpt_loss_and_grads(params, idx, targets, cfg)
    extra = {**params, "h.0.attn.w_k": np.ones((cfg.n_embd, cfg.n_embd)), "h.0.attn.b_k": np.ones(cfg.n_embd)}
    loss2, grads2 = gpt_loss_and_grads(extra, idx, targets, cfg)
    assert loss2 == loss and np.all(grads2["h.0.attn.w_k"] == 0) and np.all(grads2["h.0.attn.b_k"] == 0)
    assert all(np.array_equal(grads[k], grads2[k]) for k in grads)


def _jax_gpt_loss(p, idx, targets, cfg):
    """The standard model again, in jax.numpy, for a jax.grad reference of the whole GPT."""
    import jax
    import jax.numpy as jnp

    B, T = idx.shape
    C, H = cfg.n_embd, cfg.n_head
    D = C // H

    def ln(x, w, b):
        mu = x.mean(-1, keepdims=True)
        return (x - mu) / jnp.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5) * w + b

    def rope(t):
        ang = jnp.arange(T)[:, None] * 10000.0 ** (-jnp.arange(0, D, 2) / D)
        ang = jnp.concatenate([ang, ang], -1)
        return t * jnp.cos(ang) + jnp.concatenate([-t[..., D // 2:], t[..., : D // 2]], -1) * jnp.sin(ang)

    x = p["wte.weight"][idx]
    if cfg.positions == "learned":
        x = x + p["wpe.weight"][:T]
    elif cfg.positions == "sinusoidal":
        ang = jnp.arange(T)[:, None] * 10000.0 ** (-jnp.arange(0, C, 2) / C)
        x = x + jnp.stack([jnp.sin(ang), jnp.cos(ang)], -1).reshape(T, C)
    causal = jnp.tril(jnp.ones((T, T), dtype=bool))
    # ALiBi as Bloom writes it, +m_h * j: it differs from the paper's -m_h (i - j) by a per-row constant,
    # which the softmax ignores, so this reference also checks that our bias may be shifted per row.
    m = 2.0 ** (-8.0 * jnp.arange(1, H + 1) / H)
    alibi = m[:, None, None] * jnp.arange(T)[None, None, :] if cfg.positions == "alibi" else 0.0
    for i in range(cfg.n_layer):
        g = {k[len(f"h.{i}."):]: v for k, v in p.items() if k.startswith(f"h.{i}.")}
        h = ln(x, g["ln_1.weight"], g["ln_1.bias"])
        q, k, v = ((h @ g[f"attn.w_{n}"].T + g[f"attn.b_{n}"]).reshape(B, T, H, D).transpose(0, 2, 1, 3) for n in "qkv")
        if cfg.positions == "rope":
            q, k = rope(q), rope(k)
        w = jax.nn.softmax(jnp.where(causal, q @ k.transpose(0, 1, 3, 2) / jnp.sqrt(D) + alibi, -jnp.inf), axis=-1)
        x = x + (w @ v).transpose(0, 2, 1, 3).reshape(B, T, C) @ g["attn.w_o"].T + g["attn.b_o"]
        h = ln(x, g["ln_2.weight"], g["ln_2.bias"])
        x = x + jax.nn.gelu(h @ g["mlp.w_fc"].T + g["mlp.b_fc"], approximate=True) @ g["mlp.w_proj"].T + g["mlp.b_proj"]
    logits = ln(x, p["ln_f.weight"], p["ln_f.bias"]) @ p["wte.weight"].T
    logp = jax.nn.log_softmax(logits, -1)
    keep = targets != -100
    nll = -jnp.take_along_axis(logp, jnp.where(keep, targets, 0)[..., None], -1)[..., 0]
    return jnp.sum(nll * keep) / keep.sum()


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rope", "alibi", "none"])
def test_gpt_grads_match_jax_grad_float64(positions):
    import jax

    import jax_impl  # noqa: F401  (float64 on)

    cfg, params, idx, targets = _setup(positions)
    ref_loss, ref_grads = jax.value_and_grad(_jax_gpt_loss)(params, idx, targets, cfg)
    loss, grads = gpt_loss_and_grads(params, idx, targets, cfg)
    assert_close(loss, np.asarray(ref_loss), np.float64, "value", what="loss")
    for k in params:
        assert_close(grads[k], np.asarray(ref_grads[k]), np.float64, "grad", what=f"d loss / d {k} vs jax.grad")


# ------------------------------------------------------------------------------------------------
# positions without parameters: ALiBi and none


def test_alibi_is_not_a_no_op_and_none_ignores_token_order():
    """Without positions a one-layer model's last output is a function of the SET of earlier tokens:
    attention averages them with weights that do not know where each sits, so permuting the prefix
    leaves it unchanged (up to rounding). ALiBi, and learned positions, break that symmetry."""
    idx = np.array([[1, 2, 3, 4, 5, 6]])
    swapped = np.array([[3, 5, 1, 4, 2, 6]])  # the first five permuted, the last token kept
    for positions, invariant in (("none", True), ("alibi", False), ("learned", False)):
        cfg, params, _, _ = _setup(positions, n_layer=1)
        a, b = gpt_forward(params, idx, cfg)[0, -1], gpt_forward(params, swapped, cfg)[0, -1]
        if invariant:
            assert_close(a, b, np.float64, "value", what=f"{positions}: last logits after permuting the prefix")
        else:
            assert np.abs(a - b).max() > 1e-4, positions
    cfg, params, idx, _ = _setup("alibi")
    none = GPTConfig(**{**cfg.to_dict(), "positions": "none"})
    assert np.abs(gpt_forward(params, idx, cfg) - gpt_forward(params, idx, none)).max() > 1e-3


def test_scale_embeddings_multiplies_the_token_rows_by_sqrt_n_embd():
    """With positions "none" and one token, the model's input is wte[idx] * sqrt(C): the same model
    without the option fed wte * sqrt(C) for the lookup (the head keeps the unscaled wte) agrees."""
    cfg, params, idx, _ = _setup("none", scale_embeddings=True)
    plain = GPTConfig(**{**cfg.to_dict(), "scale_embeddings": False})
    ref = torch_gpt_logits({k: torch.tensor(v) for k, v in {**params, "wte.weight": params["wte.weight"] * math.sqrt(8)}.items()},
                           torch.from_numpy(idx), plain, head=torch.tensor(params["wte.weight"]))
    assert_close(gpt_forward(params, idx, cfg), ref.numpy(), np.float64, "value")
    assert np.abs(gpt_forward(params, idx, cfg) - gpt_forward(params, idx, plain)).max() > 1e-3
    with pytest.raises(InputError, match="scale_embeddings"):
        GPTConfig(scale_embeddings=1)
    with pytest.raises(InputError, match="aft_simple"):
        GPTConfig(positions="alibi", attention="aft_simple")
