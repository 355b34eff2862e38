"""The straight GPT and its plug-in variants.

numpy_impl.gpt's blocks ARE numpy_impl.layers.transformer_block: its logits equal a hand loop of
layers.transformer_block over the layers (exactly, same arithmetic), and its gradients equal a hand
loop of transformer_block_backward. Every variant of numpy_impl.gpt_variants plugs into that block
and agrees with torch_ref.gpt_variants (torch's own kernels and autograd) and jax_impl.gpt_variants.
The three gpt.py refuse bad token ids in the same words (one check, triptych/common/gpt_config.py).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jax_impl  # noqa: F401  (float64 on)
from triptych.common.checks import InputError
from triptych.common.gpt_config import GPTConfig, init_gpt_params, straight_attention
from triptych.common.tolerances import assert_close
from jax_impl import gpt as jgpt
from jax_impl import gpt_variants as jv
from numpy_impl import gpt as ngpt
from numpy_impl import gpt_variants as nv
from numpy_impl import layers
from numpy_impl.losses import cross_entropy_backward, cross_entropy_forward
from numpy_impl.masks import make_causal_mask
from torch_ref import gpt as tgpt
from torch_ref import gpt_variants as tv

pytestmark = pytest.mark.usefixtures("torch_one_thread")

F64 = np.float64
VARIANTS = {
    "rope": dict(positions="rope"), "alibi": dict(positions="alibi"),
    "neg_sq_dist": dict(similarity="neg_sq_dist"), "cosine": dict(similarity="cosine"),
    "Q=K": dict(share_qkv="qk"), "K=V": dict(share_qkv="kv"), "Q=K=V": dict(share_qkv="qkv"),
    "post_softmax_mask": dict(post_softmax_mask=True), "qkv_mlp": dict(qkv_mlp=True),
    "aft_simple": dict(attention="aft_simple"),
    "mlp+Q=K+cosine+rope": dict(qkv_mlp=True, share_qkv="qk", similarity="cosine", positions="rope"),
}


def _setup(kw, seed=0, T=7):
    cfg = GPTConfig(**{**dict(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=8), **kw})
    r = np.random.default_rng(seed)
    # perturb the init so LayerNorm gains, biases and temperatures are not at special values
    p = {k: v + r.standard_normal(v.shape) * 0.1 for k, v in init_gpt_params(cfg, seed, F64).items()}
    return cfg, p, r.integers(0, 13, (3, T)), r.integers(0, 13, (3, T))


def _layer(p, i):
    return {k[len(f"h.{i}."):]: v for k, v in p.items() if k.startswith(f"h.{i}.")}


def test_straight_gpt_forward_is_a_loop_of_layers_transformer_block():
    cfg, p, idx, _ = _setup({})
    x = p["wte.weight"][idx] + p["wpe.weight"][:idx.shape[1]]
    for i in range(cfg.n_layer):
        x = layers.transformer_block(x, _layer(p, i), cfg.n_head, make_causal_mask(idx.shape[1]))
    logits = layers.layer_norm(x, p["ln_f.weight"], p["ln_f.bias"]) @ p["wte.weight"].T
    np.testing.assert_array_equal(ngpt.gpt_forward(p, idx, cfg), logits)


def test_straight_gpt_grads_are_transformer_block_backward():
    cfg, p, idx, targets = _setup({})
    T = idx.shape[1]
    x0 = p["wte.weight"][idx] + p["wpe.weight"][:T]
    x, caches = x0, []
    for i in range(cfg.n_layer):
        x, c = layers.transformer_block_forward(x, _layer(p, i), cfg.n_head, make_causal_mask(T))
        caches.append(c)
    xf, ln_f = layers.layer_norm_forward(x, p["ln_f.weight"], p["ln_f.bias"])
    loss, ce = cross_entropy_forward(xf @ p["wte.weight"].T, targets)
    dx, _, _ = layers.layer_norm_backward(cross_entropy_backward(1.0, ce) @ p["wte.weight"], ln_f)
    by_hand = {}
    for i in reversed(range(cfg.n_layer)):
        dx, g = layers.transformer_block_backward(dx, caches[i])
        by_hand.update({f"h.{i}.{k}": v for k, v in g.items()})
    ours_loss, ours = ngpt.gpt_loss_and_grads(p, idx, targets, cfg)
    assert ours_loss == float(loss)
    for k, g in by_hand.items():
        np.testing.assert_array_equal(ours[k], g, err_msg=k)
    # and against torch autograd, the independent reference
    _, ref = tgpt.gpt_loss_and_grads(p, idx, targets, cfg)
    for k in p:
        assert_close(ours[k], ref[k], F64, "grad", what=k)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_variant_plugs_into_the_block_and_matches_torch_and_jax(name):
    cfg, p, idx, targets = _setup(VARIANTS[name])
    assert nv.block_attention(cfg) is not None and tv.block_attention(cfg) is not None
    T = idx.shape[1]
    attn = {k[len("h.0.attn."):]: v for k, v in p.items() if k.startswith("h.0.attn.")}
    h = np.random.default_rng(1).standard_normal((3, T, cfg.n_embd))
    ours = nv.attention(h, attn, cfg)
    ref = tv.attention(torch.tensor(h), {k: torch.tensor(v) for k, v in attn.items()}, cfg)
    assert_close(ours, ref.numpy(), F64, what=f"{name}: attention vs torch")
    assert_close(ours, np.asarray(jv.attention(jnp.asarray(h), attn, cfg)), F64, what=f"{name}: attention vs jax")
    # the whole model, with the variant in the block's attention slot: loss and every gradient
    loss, grads = ngpt.gpt_loss_and_grads(p, idx, targets, cfg)
    ref_loss, ref_grads = tgpt.gpt_loss_and_grads(p, idx, targets, cfg)
    assert_close(loss, ref_loss, F64, what=f"{name}: loss")
    for k in p:
        assert_close(grads[k], ref_grads[k], F64, "grad", what=f"{name}: d/d{k} vs torch autograd")


@pytest.mark.parametrize("kw", [dict(positions="learned"), dict(positions="sinusoidal"), dict(positions="none"),
                                dict(positions="sinusoidal", scale_embeddings=True),
                                dict(positions="learned", scale_embeddings=True)])
def test_add_positions_agrees_in_the_three_backends(kw):
    cfg, p, idx, _ = _setup(kw)
    tok = p["wte.weight"][idx]
    ours = nv.add_positions(tok, p, cfg)
    assert_close(ours, tv.add_positions(torch.tensor(tok), {k: torch.tensor(v) for k, v in p.items()}, cfg).numpy(), F64)
    assert_close(ours, np.asarray(jv.add_positions(jnp.asarray(tok), p, cfg)), F64)


def test_similarities_agree_in_the_three_backends():
    r = np.random.default_rng(2)
    q, k, v = r.standard_normal((2, 2, 5, 4)), r.standard_normal((2, 2, 6, 4)), r.standard_normal((2, 5, 3))
    temp = r.random((2, 1, 1)) + 1
    tq, tk, tt = torch.tensor(q), torch.tensor(k), torch.tensor(temp)
    assert_close(nv.neg_sq_distance(q, k, 0.5), tv.neg_sq_distance(tq, tk, 0.5).numpy(), F64)
    assert_close(nv.neg_sq_distance(q, k, 0.5), np.asarray(jv.neg_sq_distance(q, k, 0.5)), F64)
    assert_close(nv.cosine_similarity(q, k, temp), tv.cosine_similarity(tq, tk, tt).numpy(), F64)
    assert_close(nv.cosine_similarity(q, k, temp), np.asarray(jv.cosine_similarity(q, k, temp)), F64)
    a = (r.standard_normal((2, 5, 3)), r.standard_normal((2, 5, 3)) * 10, v)
    assert_close(nv.aft_simple(*a), tv.aft_simple(*map(torch.tensor, a)).numpy(), F64)
    assert_close(nv.aft_simple(*a), np.asarray(jv.aft_simple(*a)), F64)


def test_block_attention_is_none_exactly_for_the_straight_attention():
    for kw in [{}, dict(positions="sinusoidal"), dict(positions="none"), dict(scale_embeddings=True), dict(dropout=0.1)]:
        cfg = GPTConfig(**kw)
        assert straight_attention(cfg) and nv.block_attention(cfg) is None
        assert jv.block_attention(cfg) is None and tv.block_attention(cfg) is None
    for kw in VARIANTS.values():
        assert nv.block_attention(GPTConfig(**kw)) is not None and jv.block_attention(GPTConfig(**kw)) is not None


@pytest.mark.parametrize("idx, words", [
    (np.zeros((2, 0), np.int64), "idx: expected at least one position, got shape (2, 0)"),
    (np.zeros((2, 3), np.float32), "idx: expected integer token ids, got dtype float32"),
    (np.zeros((2, 3), bool), "idx: expected integer token ids, got dtype bool"),
    (np.zeros(3, np.int64), "idx: expected a 2-D array (B, T) token ids, got shape (3,)"),
    (np.zeros((1, 9), np.int64), "idx: expected at most block_size=8 positions with learned positions"),
])
def test_the_three_backends_refuse_bad_token_ids_in_the_same_words(idx, words):
    cfg, p, _, _ = _setup({})
    calls = {"numpy": lambda: ngpt.gpt_forward(p, idx, cfg), "jax": lambda: jgpt.gpt_forward(p, idx, cfg),
             "torch": lambda: tgpt.gpt_forward(tgpt.params_to_torch(p), torch.from_numpy(idx), cfg)}
    for backend, call in calls.items():
        with pytest.raises(InputError) as err:
            call()
        assert words in str(err.value), (backend, str(err.value))

