"""Memory formulas against the bytes torch really allocates (tensor nbytes, optimizer state after a
real step, the KV cache a Hugging Face model returns), and the loss calculator against torch's
softmax and cross-entropy."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from triptych.calculators import Architecture, attention_scores_bytes, kv_cache_bytes, optimizer_state_bytes, ratio
from triptych.calculators.loss import target_probability_and_loss
from triptych.calculators.quantity import GB, GiB, fmt_bytes
from triptych.common.checks import InputError


@pytest.mark.parametrize("dtype, nbytes", [(torch.float16, 2), (torch.bfloat16, 2), (torch.float32, 4)])
@pytest.mark.parametrize("batch, t_q, t_k", [(1, 7, 7), (3, 5, 9)])
def test_attention_scores_bytes_equal_the_score_tensor_nbytes(dtype, nbytes, batch, t_q, t_k):
    h, d = 4, 8
    q = torch.randn(batch, h, t_q, d, dtype=dtype)
    k = torch.randn(batch, h, t_k, d, dtype=dtype)
    scores = q @ k.transpose(-2, -1)  # what a naive attention materialises: (B, h, T_q, T_k)
    assert attention_scores_bytes(h, t_q, nbytes, context_k=t_k, batch=batch).value == scores.nbytes


def test_aether_score_memory_equals_a_meta_tensor_of_that_shape():
    from triptych.calculators.scenarios import aether

    _, qs = aether()
    q = next(q for q in qs if q.key == "attention_scores_bytes")
    scores = torch.empty(48, 16384, 16384, dtype=torch.float16, device="meta")  # shape only, no storage
    assert q.value == scores.nbytes
    assert "48*16,384*16,384*2" in q.formula
    # units: decimal gigabytes and binary gibibytes
    assert q.to_json()["GB"] == scores.nbytes / 1e9 and q.to_json()["GiB"] == scores.nbytes / 1024 ** 3


def _state_nbytes(opt) -> int:
    """Bytes of per-parameter optimizer state; torch's scalar `step` counter is one per tensor, not per
    parameter, and is not part of the formula (see calculators.memory)."""
    return sum(v.nbytes for state in opt.state.values() for name, v in state.items()
               if torch.is_tensor(v) and name != "step")


def _one_step(model, opt):
    loss = model(torch.randn(5, 12, dtype=next(model.parameters()).dtype)).pow(2).sum()
    loss.backward()
    opt.step()


@pytest.mark.parametrize("name, make, dtype, bytes_per_state", [
    ("adam", lambda p: torch.optim.Adam(p), torch.float32, 4),
    ("adam", lambda p: torch.optim.Adam(p), torch.float64, 8),
    ("adamw", lambda p: torch.optim.AdamW(p), torch.float32, 4),
    ("sgd-momentum", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), torch.float32, 4),
    ("sgd", lambda p: torch.optim.SGD(p, lr=0.1), torch.float32, 4),
])
def test_optimizer_state_bytes_equal_torch_state_after_one_step(name, make, dtype, bytes_per_state):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 20), nn.GELU(), nn.Linear(20, 3)).to(dtype)
    opt = make(model.parameters())
    _one_step(model, opt)
    n = sum(p.numel() for p in model.parameters())
    assert optimizer_state_bytes(n, name, bytes_per_state).value == _state_nbytes(opt)


def test_adam_state_for_a_subset_and_the_ratio_between_two_subsets():
    """Frozen parameters get no state: Adam over a peft model's trainable LoRA part only, vs over the
    FFN-like full layer; the ratio of the two measured states equals the formula's ratio."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(12, 20), nn.GELU(), nn.Linear(20, 3))
    full_opt = torch.optim.Adam(base.parameters())
    _one_step(base, full_opt)
    full_n = sum(p.numel() for p in base.parameters())

    lora_model = get_peft_model(nn.Sequential(nn.Linear(12, 20), nn.GELU(), nn.Linear(20, 3)),
                                LoraConfig(r=2, target_modules=["0", "2"]))
    trainable = [p for p in lora_model.parameters() if p.requires_grad]
    lora_opt = torch.optim.Adam(trainable)
    _one_step(lora_model, lora_opt)
    lora_n = sum(p.numel() for p in trainable)
    assert lora_n == 2 * (12 + 20) + 2 * (20 + 3)

    lora_q = optimizer_state_bytes(lora_n, "adam", 4)
    full_q = optimizer_state_bytes(full_n, "adam", 4)
    assert lora_q.value == _state_nbytes(lora_opt)
    assert full_q.value == _state_nbytes(full_opt)
    assert ratio(lora_q, full_q, "r", "r").value == pytest.approx(_state_nbytes(lora_opt) / _state_nbytes(full_opt),
                                                                 rel=1e-15)


def _hf_cache_nbytes(model, ids) -> int:
    """Bytes of the keys and values a Hugging Face causal LM caches for `ids` (B, T)."""
    with torch.no_grad():
        cache = model(ids, use_cache=True, logits_to_keep=1).past_key_values
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)


@pytest.mark.parametrize("dtype, nbytes", [(torch.float32, 4), (torch.bfloat16, 2)])
def test_kv_cache_bytes_equal_hf_llama_cache_with_gqa_and_a_free_head_dim(dtype, nbytes):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                         num_attention_heads=4, num_key_value_heads=2, head_dim=12,
                                         bos_token_id=None, eos_token_id=None)).to(dtype)
    a = Architecture(n_layers=3, d_model=32, n_heads=4, n_kv_heads=2, head_dim=12, context=7, vocab_size=50,
                     d_ff=48, ffn="swiglu", norm="rmsnorm", positions="rope", bias=False)
    per_token, total = kv_cache_bytes(a, context=7, batch=2, bytes_per_value=nbytes)
    assert total.value == _hf_cache_nbytes(model, torch.randint(0, 50, (2, 7)))
    assert per_token.value * 2 * 7 == total.value
    assert "2*3*2*12*" in per_token.formula


def test_kv_cache_bytes_equal_hf_gpt2_cache():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                                       bos_token_id=None, eos_token_id=None))
    a = Architecture(n_layers=2, d_model=32, n_heads=4, context=9, vocab_size=50)
    cached = _hf_cache_nbytes(model, torch.zeros(3, 9, dtype=torch.long))
    assert kv_cache_bytes(a, 9, batch=3, bytes_per_value=4)[1].value == cached


def test_kv_cache_of_llama_3_8b_at_8192_tokens_is_one_gib():
    """The real config (meta-llama/Meta-Llama-3-8B), run on the meta device in bf16: HF's cache
    holds 2 * 32 layers of (1, 8, 8192, 128); grouped-query attention makes it 4x smaller than 32
    K/V heads would."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                  tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**config)).to(torch.bfloat16)
    a = Architecture(n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8, context=8192, vocab_size=128256,
                     d_ff=14336, ffn="swiglu", norm="rmsnorm", positions="rope", bias=False, tied_embeddings=False)
    per_token, total = kv_cache_bytes(a, 8192, batch=1, bytes_per_value=2)
    assert total.value == _hf_cache_nbytes(model, torch.zeros(1, 8192, dtype=torch.long, device="meta")) == GiB
    assert per_token.value == 128 * 1024
    with torch.device("meta"):
        mha_model = LlamaForCausalLM(LlamaConfig(**{**config, "num_key_value_heads": 32})).to(torch.bfloat16)
    mha = Architecture(n_layers=32, d_model=4096, n_heads=32, context=8192)
    mha_bytes = _hf_cache_nbytes(mha_model, torch.zeros(1, 8192, dtype=torch.long, device="meta"))
    assert kv_cache_bytes(mha, 8192)[1].value == mha_bytes == 4 * total.value


def test_byte_units_are_decimal_gb_and_binary_gib():
    n = 3 * 2 ** 30 + 5
    text = fmt_bytes(n)
    assert f"{n:,} bytes" in text
    assert f"{n / 1e9:,.3f} GB" in text and f"{n / 1024 ** 3:,.3f} GiB" in text
    assert GB == 1000 ** 3 and GiB == 1024 ** 3


@pytest.mark.parametrize("logits, target", [
    ([0.5, 0.1, 3.0, 0.2, 1.0], 2),             # exercise G.1
    ([2.0, -1.0, 0.0], 1),
    ([1000.0, 999.0, -1000.0, 0.0], 0),         # naive exp would overflow
    ([-800.0, -805.0], 1),                      # naive exp would underflow to 0/0
])
def test_probability_and_cross_entropy_match_torch(logits, target):
    z = torch.tensor(logits, dtype=torch.float64)
    p_ref = torch.softmax(z, dim=0)[target].item()
    ce_ref = F.cross_entropy(z[None], torch.tensor([target])).item()
    p, ce = target_probability_and_loss(logits, target)
    assert (p.key, ce.key) == ("p_target", "cross_entropy")
    assert p.value == pytest.approx(p_ref, rel=1e-12, abs=1e-300)
    assert ce.value == pytest.approx(ce_ref, rel=1e-12)
    assert math.isfinite(ce.value) and f"{ce.value:.6g}" in ce.formula


def test_mlm_toy_matches_torch_and_names_the_word():
    from triptych.calculators.scenarios import mlm_toy

    _, (p, ce) = mlm_toy()
    z = torch.tensor([0.5, 0.1, 3.0, 0.2, 1.0], dtype=torch.float64)
    assert p.value == pytest.approx(torch.softmax(z, 0)[2].item(), rel=1e-14)
    assert ce.value == pytest.approx(F.cross_entropy(z[None], torch.tensor([2])).item(), rel=1e-14)
    assert "'mat'" in p.label and np.isclose(math.exp(-ce.value), p.value)


@pytest.mark.parametrize("call, fragment", [
    (lambda: attention_scores_bytes(-4, 16, 2), "n_heads: expected a positive integer, got -4"),
    (lambda: attention_scores_bytes(4, 16, 0), "bytes_per_score: expected a positive integer, got 0"),
    (lambda: kv_cache_bytes(Architecture(n_layers=1, d_model=8, n_heads=2, context=4), 0), "context: expected a"),
    (lambda: kv_cache_bytes(Architecture(n_layers=1, d_model=8, n_heads=2, context=4), 4, 1, 0),
     "bytes_per_value: expected a positive integer, got 0"),
    (lambda: optimizer_state_bytes(-1, "adam"), "n_params: expected a non-negative integer, got -1"),
    (lambda: optimizer_state_bytes(10, "lion"), "optimizer: expected one of adam, adamw, sgd-momentum, sgd"),
    (lambda: target_probability_and_loss([1.0, 2.0], 2), "target: expected an index in [0, 1], got 2"),
    (lambda: target_probability_and_loss([1.0, float("nan")], 0), "logits: expected finite values"),
    (lambda: target_probability_and_loss([], 0), "logits: expected at least one value"),
])
def test_bad_input_is_an_input_error(call, fragment):
    with pytest.raises(InputError) as e:
        call()
    assert fragment in str(e.value)
