"""LoRA on the real SmolLM2-135M (its first 2 layers) with a batch of real Austen text: NumPy's
hand-written adapter gradients and JAX's jax.grad against the referee, Hugging Face's
LlamaForCausalLM wrapped by peft (LoraConfig on the same modules, the same A, B and alpha / r),
differentiated by torch autograd; AdamW trajectories side by side; and the merged weights (ours vs
peft's merge_and_unload) giving peft's unmerged logits.

Adapters are drawn with init="random" (B != 0, as peft's init_lora_weights=False), so no gradient
or logit can agree trivially at B = 0; one row ends in padding, whose targets are ignored."""
from __future__ import annotations

import numpy as np
import pytest

from triptych.common.llama_lora import TARGET_KEYS, causal_lm_pairs
from triptych.common.tolerances import assert_close

pytestmark = pytest.mark.usefixtures("torch_one_thread")

ALPHA = 8.0
ALL_TARGETS = tuple(TARGET_KEYS)  # q, k, v, o, gate, up, down: every projection's chain rule is checked
PAD = 0  # <|endoftext|>: never in the novels' text


@pytest.fixture(scope="module")
def tokenizer():
    from triptych.bpe.tokenizer import Tokenizer
    from triptych.pretrained import ModelMissingError, smollm2

    try:
        return Tokenizer.from_gguf(smollm2.gguf_path())
    except ModelMissingError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def austen_batch(tokenizer):
    """Two rows of 33 Austen tokens, the second padded after 25: idx, targets (2, 32)."""
    from triptych.corpora.austen import load_austen_text

    ids = np.asarray(tokenizer.encode(load_austen_text()[:2000])[:66], dtype=np.int64).reshape(2, 33)
    assert PAD not in ids
    ids[1, 25:] = PAD
    idx, targets = causal_lm_pairs(ids, pad_id=PAD)
    assert (targets == -100).sum() == 8
    return idx, targets


def _adapters(params, config, targets=ALL_TARGETS, r=4, init="random", dtype=None):
    from numpy_impl.llama_lora import init_llama_lora

    return init_llama_lora(params, config, r=r, targets=targets, init=init, seed=5, dtype=dtype)


def _as(params, dtype):
    return {k: v.astype(dtype) for k, v in params.items()}


def test_numpy_adapter_grads_equal_peft_float64(smollm2_two_layers, austen_batch):
    from numpy_impl.llama_lora import llama_lora_loss_and_grads
    from torch_ref.llama_lora import llama_lora_loss_and_grads as peft_loss_and_grads

    params, config = smollm2_two_layers
    adapters = _adapters(params, config)
    loss, grads = llama_lora_loss_and_grads(params, adapters, *austen_batch, config, ALPHA)
    ref_loss, ref = peft_loss_and_grads(params, adapters, *austen_batch, config, ALPHA)
    assert sorted(grads) == sorted(ref) == sorted(adapters) and len(ref) == 2 * 7 * config.n_layers
    assert_close(loss, ref_loss, "float64", what="loss")
    for k in ref:
        assert np.abs(ref[k]).max() > 1e-4  # every adapter is on the loss's path
        assert_close(grads[k], ref[k], "float64", kind="grad", what=k)


def test_full_grads_equal_peft_with_the_base_unfrozen(smollm2_two_layers, austen_batch):
    """full=True: every frozen weight's gradient too (the embedding tied to the head included), NumPy's
    hand-written and JAX's jax.grad vs autograd through peft's model with requires_grad on everywhere."""
    from jax_impl.llama_lora import llama_lora_loss_and_grads as jax_loss_and_grads
    from numpy_impl.llama_lora import llama_lora_loss_and_grads
    from torch_ref.llama_lora import llama_lora_loss_and_grads as peft_loss_and_grads

    params, config = smollm2_two_layers
    adapters = _adapters(params, config, targets=("q", "v"))
    _, ref = peft_loss_and_grads(params, adapters, *austen_batch, config, ALPHA, full=True)
    assert sorted(ref) == sorted([*adapters, *params])
    for name, fn in (("numpy", llama_lora_loss_and_grads), ("jax", jax_loss_and_grads)):
        _, grads = fn(params, adapters, *austen_batch, config, ALPHA, full=True)
        for k in ref:
            assert_close(np.asarray(grads[k]), ref[k], "float64", kind="grad", what=f"{name} {k}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_jax_adapter_grads_equal_peft(smollm2_two_layers, austen_batch, dtype):
    import torch

    from jax_impl.llama_lora import llama_lora_loss_and_grads
    from torch_ref.llama_lora import llama_lora_loss_and_grads as peft_loss_and_grads

    params, config = smollm2_two_layers
    params = _as(params, dtype)
    adapters = _adapters(params, config, targets=("q", "v", "up"))
    loss, grads = llama_lora_loss_and_grads(params, adapters, *austen_batch, config, ALPHA)
    torch.set_num_threads(1)
    ref_loss, ref = peft_loss_and_grads(params, adapters, *austen_batch, config, ALPHA)
    assert_close(float(loss), ref_loss, dtype, kind="grad", what="loss")
    for k in ref:
        assert np.asarray(grads[k]).dtype == np.dtype(dtype)
        assert_close(np.asarray(grads[k]), ref[k], dtype, kind="grad", what=f"jax {k}")


def test_numpy_adapter_grads_equal_peft_float32(smollm2_two_layers, austen_batch):
    from numpy_impl.llama_lora import llama_lora_loss_and_grads
    from torch_ref.llama_lora import llama_lora_loss_and_grads as peft_loss_and_grads

    params, config = smollm2_two_layers
    params = _as(params, "float32")
    adapters = _adapters(params, config)
    loss, grads = llama_lora_loss_and_grads(params, adapters, *austen_batch, config, ALPHA)
    ref_loss, ref = peft_loss_and_grads(params, adapters, *austen_batch, config, ALPHA)
    assert_close(loss, ref_loss, "float32", kind="grad", what="loss")
    for k in ref:
        assert grads[k].dtype == np.float32
        assert_close(grads[k], ref[k], "float32", kind="grad", what=k)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_merged_weights_give_peft_unmerged_logits(smollm2_two_layers, austen_batch, backend):
    """merge_llama_lora's weights equal peft's merge_and_unload's, and the plain model on them
    (numpy_impl.llama, which generation runs) gives the logits of peft's unmerged adapter branch."""
    import importlib

    from numpy_impl.llama import llama_forward
    from torch_ref.llama_lora import llama_lora_forward as peft_forward, merge_llama_lora as peft_merge

    params, config = smollm2_two_layers
    adapters = _adapters(params, config, targets=("q", "k", "o", "down"))
    merged = importlib.import_module(f"{backend}_impl.llama_lora").merge_llama_lora(params, adapters, config, ALPHA)
    ref_merged = peft_merge(params, adapters, config, ALPHA)
    for k in ("layers.0.attn.w_q", "layers.1.attn.w_k", "layers.0.attn.w_o", "layers.1.mlp.w_down"):
        assert np.abs(ref_merged[k] - params[k]).max() > 1e-3  # the adapter moved it
    for k in ref_merged:
        assert_close(np.asarray(merged[k]), ref_merged[k], "float64", what=f"merged {k}")
    logits = llama_forward({k: np.asarray(v) for k, v in merged.items()}, austen_batch[0], config)
    assert_close(logits, peft_forward(params, adapters, austen_batch[0], config, ALPHA), "float64",
                 kind="real_model", what="merged logits vs peft's adapter forward")


def _losses(backend, params, config, adapters, batches, dtype):
    from triptych.training.lora_lm import make_lora_trainer

    trainer = make_lora_trainer(backend, _as(params, dtype), config, _as(adapters, dtype), ALPHA,
                                betas=(0.9, 0.99), weight_decay=0.01)
    return np.array([trainer.step(idx, targets, 2e-3) for idx, targets in batches]), trainer.adapters()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_adamw_trajectory_numpy_vs_peft(smollm2_two_layers, tokenizer, dtype):
    """12 AdamW steps on Austen batches from peft's usual start (B = 0): NumPy (hand-written backward,
    numpy_impl.optim) and torch (peft, torch.optim.AdamW) lose the same loss at every step."""
    from triptych.training.lora_lm import austen_rows

    params, config = smollm2_two_layers
    data = austen_rows(tokenizer, block=24, train_chars=20_000, val_chars=2_000)
    batches = [data.batch(4, s, seed=0) for s in range(12)]
    adapters = _adapters(params, config, targets=("q", "v"), r=8, init="default")
    ref, ref_adapters = _losses("torch", params, config, adapters, batches, dtype)
    assert ref[-4:].mean() < ref[:4].mean() - 0.3  # it learns, so the comparison is not between constants
    losses, ours = _losses("numpy", params, config, adapters, batches, dtype)
    assert_close(losses, ref, dtype, kind="trajectory", what="numpy vs peft losses")
    if dtype == "float64":
        for k in ref_adapters:
            assert_close(ours[k], ref_adapters[k], dtype, kind="grad", what=f"{k} after 12 steps")
