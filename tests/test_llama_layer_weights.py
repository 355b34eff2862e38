"""The NumPy layer backward forms only the weight gradients asked for (llama_block.llama_layer_backward's
weights=, threaded through attention_backward and swiglu.swiglu_mlp_backward), as LoRA needs: dx and
every asked gradient are the very arrays of the full call, whose values parity_tests/test_llama_block.py
checks against torch autograd; and llama_lora asks for its targets only (every weight when full)."""
from __future__ import annotations

import numpy as np
import pytest

from numpy_impl import llama_block as nb
from numpy_impl import swiglu
from numpy_impl.llama import layer_params
from triptych.common.checks import InputError
from triptych.common.llama_config import LAYER_KEYS, LlamaConfig, init_llama_params

CONFIG = LlamaConfig(vocab_size=23, block_size=16, d_model=16, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=24)
SUBSETS = [(), ("attn.w_q", "attn.w_v"), ("mlp.w_down",), ("mlp.w_gate", "mlp.w_up", "attn_norm.weight"),
           ("attn.w_k", "attn.w_o", "mlp_norm.weight"), LAYER_KEYS]


@pytest.fixture(scope="module")
def layer():
    """(cache, dout, the full call's (dx, grads)) for one layer of a grouped-query config, float64."""
    params = init_llama_params(CONFIG, seed=3, dtype=np.float64, std=0.3, norm_jitter=0.2)
    rng = np.random.default_rng(1)
    x, dout = rng.standard_normal((2, 5, 16)), rng.standard_normal((2, 5, 16))
    _, cache = nb.llama_layer(x, layer_params(params, 0), CONFIG, np.arange(5))
    return cache, dout, nb.llama_layer_backward(dout, cache, CONFIG)


def test_default_is_every_weight(layer):
    _, _, (_, grads) = layer
    assert list(grads) == list(LAYER_KEYS)


@pytest.mark.parametrize("weights", SUBSETS, ids=lambda w: ",".join(w) or "none")
def test_subset_gives_the_full_calls_dx_and_gradients(layer, weights):
    cache, dout, (dx_all, g_all) = layer
    dx, grads = nb.llama_layer_backward(dout, cache, CONFIG, weights=weights)
    np.testing.assert_array_equal(dx, dx_all)  # the same operations in the same order: bit for bit
    assert set(grads) == set(weights)  # the unasked are absent, not zeros
    for k in weights:
        np.testing.assert_array_equal(grads[k], g_all[k], err_msg=k)


def test_swiglu_subset_gives_the_full_calls_dx_and_gradients():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 8))
    params = {"w_gate": rng.standard_normal((12, 8)), "w_up": rng.standard_normal((12, 8)),
              "w_down": rng.standard_normal((8, 12))}
    out, cache = swiglu.swiglu_mlp_forward(x, params)
    dout = rng.standard_normal(out.shape)
    dx_all, g_all = swiglu.swiglu_mlp_backward(dout, cache)
    assert sorted(g_all) == sorted(params)
    dx, grads = swiglu.swiglu_mlp_backward(dout, cache, weights=("w_up",))
    np.testing.assert_array_equal(dx, dx_all)
    assert list(grads) == ["w_up"]
    np.testing.assert_array_equal(grads["w_up"], g_all["w_up"])


@pytest.mark.parametrize("weights", [("attn.w_x",), "attn.w_q", ("w_q",)])
def test_unknown_weight_is_refused_by_name(layer, weights):
    cache, dout, _ = layer
    with pytest.raises(InputError, match="^weights: expected"):
        nb.llama_layer_backward(dout, cache, CONFIG, weights=weights)


def test_swiglu_unknown_weight_is_refused_by_name():
    rng = np.random.default_rng(0)
    params = {"w_gate": rng.standard_normal((6, 4)), "w_up": rng.standard_normal((6, 4)),
              "w_down": rng.standard_normal((4, 6))}
    _, cache = swiglu.swiglu_mlp_forward(rng.standard_normal((2, 4)), params)
    with pytest.raises(InputError, match="^weights: expected names from"):
        swiglu.swiglu_mlp_backward(np.ones((2, 4)), cache, weights=("mlp.w_up",))


@pytest.mark.parametrize("full", [False, True])
def test_lora_asks_the_layer_backward_for_its_targets_only(monkeypatch, full):
    from numpy_impl.llama_lora import init_llama_lora, llama_lora_loss_and_grads

    params = init_llama_params(CONFIG, seed=0, dtype=np.float64, std=0.3)
    adapters = init_llama_lora(params, CONFIG, r=2, targets=("v", "up", "q"), init="random", seed=1)
    real, asked = nb.llama_layer_backward, []

    def recording(dout, cache, config, weights=None):
        asked.append(weights)
        return real(dout, cache, config, weights=weights)

    monkeypatch.setattr(nb, "llama_layer_backward", recording)
    idx = np.array([[1, 5, 7, 2], [3, 3, 0, 22]])
    _, grads = llama_lora_loss_and_grads(params, adapters, idx, np.roll(idx, -1, axis=1), CONFIG, 4.0, full=full)
    expected = None if full else ("attn.w_q", "attn.w_v", "mlp.w_up")
    assert len(asked) == CONFIG.n_layers and all(w == expected for w in asked)
    assert sorted(grads) == sorted([*adapters, *(params if full else [])])
