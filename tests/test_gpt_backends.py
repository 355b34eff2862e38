"""jax_impl.gpt (jax.grad) and torch_ref.gpt (torch autograd) written independently: the same loss
and gradients for the base model and every attention experiment (float64), the config's weight
keys, and the JAX / torch optimizers against each other."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import jax_impl  # noqa: F401  (x64)
from triptych.common.checks import InputError
from triptych.common.gpt_config import GPTConfig, init_gpt_params
from triptych.common.tolerances import assert_close
from jax_impl import gpt as jgpt
from numpy_impl import gpt as ngpt
from jax_impl import optim as joptim
from torch_ref import gpt as tgpt
from torch_ref import optim as toptim

VARIANTS = {
    "base": {}, "sinusoidal": dict(positions="sinusoidal"), "rope": dict(positions="rope"),
    "neg_sq_dist": dict(similarity="neg_sq_dist"), "cosine": dict(similarity="cosine"),
    "Q=K": dict(share_qkv="qk"), "K=V": dict(share_qkv="kv"), "Q=K=V": dict(share_qkv="qkv"),
    "post_softmax_mask": dict(post_softmax_mask=True), "qkv_mlp": dict(qkv_mlp=True),
    "aft_simple": dict(attention="aft_simple"),
    "mlp+Q=K+cosine+rope": dict(qkv_mlp=True, share_qkv="qk", similarity="cosine", positions="rope"),
    "alibi": dict(positions="alibi"), "none": dict(positions="none"),
    "sinusoidal*sqrt(C)": dict(positions="sinusoidal", scale_embeddings=True),
    "alibi+neg_sq_dist": dict(positions="alibi", similarity="neg_sq_dist"),
}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _setup(kw, seed=0, n_layer=2):
    cfg = GPTConfig(**{**dict(vocab_size=13, block_size=8, n_layer=n_layer, n_head=2, n_embd=8), **kw})
    rng = np.random.default_rng(seed)
    # perturb the init so LayerNorm gains, biases and temperatures are not at special values
    p = {k: v + rng.standard_normal(v.shape) * 0.1 for k, v in init_gpt_params(cfg, seed, np.float64).items()}
    idx = rng.integers(0, 13, (3, 8))
    targets = rng.integers(0, 13, (3, 8))
    targets[1, :3] = -100
    return cfg, p, idx, targets


@pytest.mark.parametrize("name", list(VARIANTS))
def test_jax_grad_equals_torch_autograd(name):
    # one layer for the variants (each is a fresh JAX compilation); two for the base model
    cfg, p, idx, targets = _setup(VARIANTS[name], n_layer=2 if name == "base" else 1)
    loss_t, grads_t = tgpt.gpt_loss_and_grads(p, idx, targets, cfg)
    loss_j, grads_j = jgpt.gpt_loss_and_grads(p, idx, targets, cfg)
    assert_close(float(loss_j), loss_t, "float64", what=f"{name} loss")
    assert set(grads_j) == set(grads_t) == set(p)
    for k in p:
        assert_close(np.asarray(grads_j[k]), grads_t[k], "float64", kind="grad", what=f"{name} d{k}")
    if name == "base":
        logits = np.asarray(jgpt.gpt_forward(p, idx, cfg))
        assert_close(logits, tgpt.gpt_forward(tgpt.params_to_torch(p), torch.tensor(idx), cfg), "float64")


NEW_POSITIONS = {"alibi": dict(positions="alibi"), "none": dict(positions="none"),
                 "sinusoidal*sqrt(C)": dict(positions="sinusoidal", scale_embeddings=True)}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(NEW_POSITIONS))
def test_three_backends_logits_agree_for_the_new_positions(name, dtype):
    """NumPy, JAX and torch logits on a window longer than block_size (these positions have no table),
    torch's SDPA with ALiBi as a float attn_mask being the referee."""
    cfg, p, _, _ = _setup({**NEW_POSITIONS[name], "n_head": 4}, n_layer=2)
    p = {k: v.astype(dtype) for k, v in p.items()}
    idx = np.random.default_rng(2).integers(0, 13, (2, 2 * cfg.block_size))
    ref = tgpt.gpt_forward(tgpt.params_to_torch(p), torch.tensor(idx), cfg).detach().numpy()
    assert ref.dtype == dtype
    for label, got in (("numpy", ngpt.gpt_forward(p, idx, cfg)), ("jax", np.asarray(jgpt.gpt_forward(p, idx, cfg)))):
        assert got.dtype == dtype, label
        assert_close(got, ref, dtype, what=f"{name} {label} vs torch logits ({dtype})")


def test_weight_keys_follow_the_config():
    def attn_keys(**kw):
        return {k[len("h.0.attn."):] for k in init_gpt_params(GPTConfig(n_layer=1, **kw)) if k.startswith("h.0.attn.")}
    assert attn_keys() == {"w_q", "b_q", "w_k", "b_k", "w_v", "b_v", "w_o", "b_o"}
    assert attn_keys(share_qkv="qk") == {"w_q", "b_q", "w_v", "b_v", "w_o", "b_o"}
    assert attn_keys(share_qkv="kv") == {"w_q", "b_q", "w_k", "b_k", "w_o", "b_o"}
    assert attn_keys(share_qkv="qkv") == {"w_q", "b_q", "w_o", "b_o"}
    assert "log_temp" in attn_keys(similarity="cosine")
    mlp = attn_keys(qkv_mlp=True)
    assert "w_q" not in mlp and {"mlp_q.w_fc", "mlp_k.b_proj", "mlp_v.w_proj"} <= mlp
    for positions in ("sinusoidal", "rope", "alibi", "none"):  # only learned positions own weights
        assert not any(k.startswith("wpe") for k in init_gpt_params(GPTConfig(n_layer=1, positions=positions)))
    base = init_gpt_params(GPTConfig(), 0)  # the experiment fields' defaults leave the base model alone
    same = init_gpt_params(GPTConfig(similarity="dot", share_qkv="none", attention="softmax"), 0)
    assert all(np.array_equal(base[k], same[k]) for k in base)
    with pytest.raises(InputError, match="similarity"):
        GPTConfig(similarity="l1")
    with pytest.raises(InputError, match="qkv_mlp"):
        GPTConfig(qkv_mlp="yes")


def test_learned_positions_refuse_longer_inputs_in_jax_and_torch():
    cfg, p, _, _ = _setup({})
    long = np.zeros((1, 9), dtype=np.int64)
    for fwd in (lambda: jgpt.gpt_forward(p, long, cfg), lambda: tgpt.gpt_forward(tgpt.params_to_torch(p), long, cfg)):
        with pytest.raises(InputError, match="block_size"):
            fwd()


def test_jax_and_torch_optimizers_agree():
    _, p, _, _ = _setup({})
    rng = np.random.default_rng(1)
    sj, st, pj, pt = joptim.adamw_init(p), toptim.adamw_init(p), p, p
    for step in range(4):
        g = {k: rng.standard_normal(v.shape) * (3.0 if step % 2 else 0.01) for k, v in p.items()}  # clip, then not
        gj, nj = joptim.clip_grad_norm(g, 1.0)
        gt, nt = toptim.clip_grad_norm(g, 1.0)
        assert_close(float(nj), nt, "float64")
        pj, sj = joptim.adamw_step(pj, gj, sj, lr=1e-2, weight_decay=0.1)
        pt, st = toptim.adamw_step(pt, gt, st, lr=1e-2, weight_decay=0.1)
        for k in p:
            assert_close(np.asarray(pj[k]), pt[k], "float64", what=f"step {step} {k}")
            assert_close(np.asarray(sj["v"][k]), st["v"][k], "float64", what=f"step {step} v[{k}]")
    assert sj["step"] == st["step"] == 4
