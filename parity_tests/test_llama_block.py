"""llama_block (one pre-norm decoder layer, RoPE self-attention) and schedule.lr_cosine_schedule in the
three backends: forward against torch_ref and against Hugging Face's own LlamaDecoderLayer (layer 0 of
LlamaForCausalLM), the hand-written NumPy backward against torch autograd, the schedule against the
CS336 handout's published learning rates and torch's CosineAnnealingLR, and the same refusals."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import jax_impl  # noqa: F401  (float64 on)
from triptych.common.checks import InputError
from triptych.common.llama_config import LlamaConfig, init_llama_params
from triptych.common.tolerances import assert_close
from jax_impl import llama_block as jb
from jax_impl import schedule as js
from numpy_impl import llama_block as nb
from numpy_impl import schedule as ns
from torch_ref import llama as tl
from torch_ref import llama_block as tb
from torch_ref import schedule as ts

pytestmark = pytest.mark.usefixtures("torch_one_thread")

B, T, C, H, F = 2, 7, 32, 4, 40


def _layer(rng, dt):
    def w(r, c):
        return (rng.standard_normal((r, c)) / math.sqrt(c)).astype(dt)
    return {"attn_norm.weight": (1 + 0.2 * rng.standard_normal(C)).astype(dt), "attn.w_q": w(C, C),
            "attn.w_k": w(C, C), "attn.w_v": w(C, C), "attn.w_o": w(C, C),
            "mlp_norm.weight": (1 + 0.2 * rng.standard_normal(C)).astype(dt), "mlp.w_gate": w(F, C),
            "mlp.w_up": w(F, C), "mlp.w_down": w(C, F)}


def _attn(p):
    return {k[len("attn."):]: v for k, v in p.items() if k.startswith("attn.")}


def _torch(d):
    return {k: torch.from_numpy(v) for k, v in d.items()}


POSITIONS = {"default": None, "(T,) from 5": 5 + np.arange(T),
             "(B, T) per sequence": np.stack([np.arange(T), 11 + 2 * np.arange(T)])}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("layout", ["interleaved", "half"])
@pytest.mark.parametrize("where", list(POSITIONS))
def test_three_backends_agree(dtype, layout, where):
    rng = np.random.default_rng(0)
    p, x, pos = _layer(rng, dtype), rng.standard_normal((B, T, C)).astype(dtype), POSITIONS[where]
    tpos = None if pos is None else torch.from_numpy(pos)
    ref_block = tb.llama_block(torch.from_numpy(x), _torch(p), H, tpos, 500.0, layout, 1e-5)
    ref_attn = tb.rope_self_attention(torch.from_numpy(x), _torch(_attn(p)), H, tpos, 500.0, layout)
    for mod in (nb, jb):
        assert_close(mod.llama_block(x, p, H, pos, 500.0, layout, 1e-5), ref_block, dtype, what=f"{mod.__name__} block")
        assert_close(mod.rope_self_attention(x, _attn(p), H, pos, 500.0, layout), ref_attn, dtype,
                     what=f"{mod.__name__} attention")


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_block_is_hugging_face_decoder_layer(layout):
    """Layer 0 of HF's LlamaForCausalLM (float64 RMSNorm and rotary, see torch_ref/llama.py) on the
    embeddings equals llama_block on them; the interleaved layout reaches HF through its converter."""
    config = LlamaConfig(vocab_size=50, block_size=16, d_model=C, n_layers=2, n_heads=H, n_kv_heads=H, d_ff=F,
                         rope_layout=layout, tie_embeddings=False)
    params = init_llama_params(config, seed=3, dtype=np.float64, std=0.2, norm_jitter=0.2)
    idx = np.random.default_rng(1).integers(0, 50, size=(B, T))
    model = tl.hf_model(params, config, exact_float64=True)
    with torch.no_grad():
        hf = model(torch.from_numpy(idx), output_hidden_states=True).hidden_states[1]
    layer0 = {k[len("layers.0."):]: v for k, v in params.items() if k.startswith("layers.0.")}
    x = params["embed.weight"][idx]
    assert_close(nb.llama_block(x, layer0, H, None, config.rope_base, layout, config.norm_eps), hf, "float64",
                 what="numpy block vs HF layer 0")


def test_numpy_backward_is_torch_autograd():
    rng = np.random.default_rng(2)
    p, x = _layer(rng, np.float64), rng.standard_normal((B, T, C))
    pos = POSITIONS["(B, T) per sequence"]
    dout = rng.standard_normal((B, T, C))
    xt = torch.from_numpy(x).requires_grad_(True)
    pt = {k: v.requires_grad_(True) for k, v in _torch(p).items()}
    (tb.llama_block(xt, pt, H, torch.from_numpy(pos)) * torch.from_numpy(dout)).sum().backward()
    _, cache = nb.llama_block_forward(x, p, H, pos)
    dx, grads = nb.llama_block_backward(dout, cache)
    assert_close(dx, xt.grad, "float64", "grad", "dx")
    assert sorted(grads) == sorted(p)
    for k in p:
        assert_close(grads[k], pt[k].grad, "float64", "grad", k)
    # The attention alone (its own forward/backward pair).
    at = {k: v.detach().clone().requires_grad_(True) for k, v in _torch(_attn(p)).items()}
    xt = torch.from_numpy(x).requires_grad_(True)
    (tb.rope_self_attention(xt, at, H) * torch.from_numpy(dout)).sum().backward()
    _, cache = nb.rope_self_attention_forward(x, _attn(p), H)
    dx, grads = nb.rope_self_attention_backward(dout, cache)
    assert_close(dx, xt.grad, "float64", "grad", "attention dx")
    for k in at:
        assert_close(grads[k], at[k].grad, "float64", "grad", k)


def test_missing_weight_is_named():
    rng = np.random.default_rng(0)
    p = _layer(rng, np.float64)
    del p["mlp.w_up"]
    x = rng.standard_normal((B, T, C))
    for mod, xx, pp in ((nb, x, p), (jb, x, p), (tb, torch.from_numpy(x), _torch(p))):
        with pytest.raises(InputError, match=r"params: expected keys .* missing \['mlp.w_up'\]"):
            mod.llama_block(xx, pp, H)


# ---------------------------------------------------------------- the schedule

# The CS336 handout's test_get_lr_cosine_schedule: max 1, min 0.1, warmup 7, cycle 21, it = 0..24.
HANDOUT = [0, 0.14285714285714285, 0.2857142857142857, 0.42857142857142855, 0.5714285714285714,
           0.7142857142857143, 0.8571428571428571, 1.0, 0.9887175604818206, 0.9554359905560885, 0.9018241671106134,
           0.8305704108364301, 0.7452476826029011, 0.6501344202803414, 0.55, 0.44986557971965857,
           0.3547523173970989, 0.26942958916356996, 0.19817583288938662, 0.14456400944391146,
           0.11128243951817937, 0.1, 0.1, 0.1, 0.1]


@pytest.mark.parametrize("mod", [ns, js, ts], ids=["numpy", "jax", "torch"])
def test_schedule_is_the_handouts(mod):
    got = np.asarray(mod.lr_cosine_schedule(np.arange(25), 1.0, 0.1, 7, 21))
    np.testing.assert_allclose(got, HANDOUT, rtol=1e-14, atol=1e-15)
    assert float(np.asarray(mod.lr_cosine_schedule(3, 1.0, 0.1, 0, 10))) == pytest.approx(0.1 + 0.45 * (1 + math.cos(0.3 * math.pi)))


def test_schedule_cosine_is_torch_stepped_scheduler():
    """The cosine piece against torch's CosineAnnealingLR stepped one epoch at a time (its recursive
    form, not the closed form torch_ref uses), from it = warmup on."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=6e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=90, eta_min=6e-5)
    stepped = []
    for _ in range(91):
        stepped.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours = ns.lr_cosine_schedule(np.arange(10, 101), 6e-4, 6e-5, 10, 100)
    np.testing.assert_allclose(ours, stepped, rtol=1e-12)


@pytest.mark.parametrize("args, word", [((1.0, 0.1, 10, 10), "cosine_cycle_iters"), ((1.0, 0.1, -1, 10), "warmup_iters"),
                                        ((float("nan"), 0.1, 1, 10), "max_learning_rate")])
def test_schedule_refusals(args, word):
    for mod in (ns, js, ts):
        with pytest.raises(InputError, match=word):
            mod.lr_cosine_schedule(np.arange(3), *args)
