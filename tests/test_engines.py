"""triptych.generation.engines and the three llama_decode modules: prefill + step logits equal the full forward
(numpy_impl.llama.llama_forward) at every position, for a tiny random GQA Llama in both RoPE layouts
and SmolLM2-135M cut to 2 layers; the jax step compiles once; overflow past T_max is refused by
name; greedy decoding by each engine equals Hugging Face generate(do_sample=False)."""
import numpy as np
import pytest
import torch

import jax_impl  # noqa: F401  (float64 on before any JAX array)
from triptych.common.checks import InputError
from triptych.common.llama_config import LlamaConfig, init_llama_params
from triptych.common.tolerances import assert_close
from triptych.generation.engines import make_engine
from jax_impl import llama_decode as jd
from numpy_impl import llama_decode as nd
from numpy_impl.llama import llama_forward
from torch_ref import llama_decode as td

ENGINES = ("numpy", "jax", "torch", "numpy-concat")


def _tiny(layout, dtype):
    config = LlamaConfig(vocab_size=61, d_model=48, n_layers=2, n_heads=6, n_kv_heads=2, d_ff=40,
                         rope_layout=layout, block_size=32)
    return init_llama_params(config, seed=1, std=0.2, dtype=dtype), config


def _stepwise(engine, ids, prefill):
    """Logits at positions prefill - 1 .. T - 1: the prompt's last, then one per step."""
    out = [engine.prefill(ids[:, :prefill])]
    out += [engine.step(int(t)) for t in ids[0, prefill:]]
    return np.stack(out)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("backend", ENGINES)
def test_engine_logits_equal_full_forward_at_every_position(backend, dtype, layout):
    params, config = _tiny(layout, dtype)
    ids = np.random.default_rng(2).integers(0, config.vocab_size, (1, 14))
    full = llama_forward(params, ids, config)[0]  # (T, V)
    engine = make_engine(backend, params, config, dtype=dtype, max_len=20)
    for prefill in (1, 5, 14):  # prefill 1: every position by a step; 14: the prompt alone
        got = _stepwise(engine, ids, prefill)
        assert got.dtype == np.dtype(dtype)
        assert_close(got, full[prefill - 1:], dtype, what=f"{engine.name} prefill {prefill} + steps")


@pytest.mark.parametrize("module", [nd, jd, td], ids=["numpy", "jax", "torch_ref"])
def test_llama_decode_chunks_and_steps_equal_full_forward(module):
    """Prompt, a second multi-token chunk at t_past > 0 (the masked-prompt path), then steps."""
    params, config = _tiny("interleaved", "float64")
    ids = np.random.default_rng(3).integers(0, config.vocab_size, (1, 12))
    full = llama_forward(params, ids, config)[0]
    stacked, cache = module.stack_params(params, config), module.init_cache(config, 16, dtype="float64")
    a, cache = module.decode_prefill(stacked, ids[:, :5], cache, config)
    b, cache = module.decode_forward(stacked, ids[:, 5:9], cache, 5, config)
    outs = [a[0], b[0]]
    for t in range(9, 12):
        c, cache = module.decode_step(stacked, ids[:, t:t + 1], cache, t, config)
        outs.append(c[0])
    got = np.stack([np.asarray(o) for o in outs])
    assert_close(got, full[[4, 8, 9, 10, 11]], "float64", what=module.__name__)


def test_jax_step_compiles_once_and_prefill_once_per_bucket():
    params, config = _tiny("half", "float32")
    engine = make_engine("jax", params, config, max_len=32)
    ids = np.random.default_rng(4).integers(0, config.vocab_size, (1, 20))
    engine.prefill(ids[:, :3])
    engine.step(int(ids[0, 3]))
    before = jd.trace_counts()
    for t in ids[0, 4:]:  # a new position each step, the same compiled function
        engine.step(int(t))
    engine.prefill(ids[:, :9])  # 3 and 9 tokens share the 16-token bucket
    after = jd.trace_counts()
    assert after == before, (before, after)
    assert jd.prefill_bucket(3, 32) == jd.prefill_bucket(9, 32) == 16 and jd.prefill_bucket(17, 32) == 32
    assert jd.prefill_bucket(17, 20) == 20  # never past T_max: dynamic_update_slice would clamp


@pytest.mark.parametrize("backend", ENGINES)
def test_cache_overflow_is_refused_by_name(backend):
    params, config = _tiny("half", "float32")
    engine = make_engine(backend, params, config, max_len=6)
    ids = np.arange(6)[None]
    with pytest.raises(InputError, match=r"ids: expected at most max_len=6 positions .* 7"):
        engine.prefill(np.arange(7)[None])
    engine.prefill(ids[:, :5])
    engine.step(3)  # the sixth position: still room
    with pytest.raises(InputError, match=r"token: expected at most max_len=6 positions in the cache, got 6 cached \+ 1"):
        engine.step(3)


@pytest.mark.parametrize("module", [nd, jd, td], ids=["numpy", "jax", "torch_ref"])
def test_llama_decode_refuses_writes_past_t_max(module):
    params, config = _tiny("half", "float32")
    stacked, cache = module.stack_params(params, config), module.init_cache(config, 8)
    _, cache = module.decode_prefill(stacked, np.arange(8)[None], cache, config)
    with pytest.raises(InputError, match=r"idx: expected at most T_max=8 positions in the cache, got t_past=8 \+ 1"):
        module.decode_step(stacked, np.array([[1]]), cache, 8, config)


def test_engine_input_errors_name_the_argument():
    params, config = _tiny("half", "float32")
    engine = make_engine("numpy", params, config)
    with pytest.raises(InputError, match="token: expected prefill"):
        engine.step(1)
    with pytest.raises(InputError, match=r"ids: expected a \(1, T\) array"):
        engine.prefill(np.zeros((2, 3), dtype=int))
    with pytest.raises(InputError, match=r"ids: expected token ids in \[0, 61\), got values in \[0, 61\]"):
        engine.prefill(np.array([[0, 61]]))
    with pytest.raises(InputError, match="backend: expected one of"):
        make_engine("tpu", params, config)
    with pytest.raises(InputError, match="max_len: expected a positive integer"):
        make_engine("jax", params, config, max_len=0)


# ---------------------------------------------------------------------------------------------
# SmolLM2-135M, first 2 layers (the real weights, real text)


@pytest.fixture(scope="module")
def smollm2_2(smollm2_two_layers):
    params, config = smollm2_two_layers
    from tokenizers import Tokenizer

    from triptych.bpe.smollm2 import tokenizer_json

    text = "It is a truth universally acknowledged, that a single man in possession of a good fortune"
    ids = np.array([Tokenizer.from_file(str(tokenizer_json())).encode(text).ids], dtype=np.int64)
    return params, config, ids


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_smollm2_engines_equal_full_forward(smollm2_2, dtype):
    params64, config, ids = smollm2_2
    params = {k: v.astype(dtype) for k, v in params64.items()}
    full = llama_forward(params, ids, config)[0]
    backends = ("numpy", "jax") if dtype == "float64" else ("numpy", "jax", "torch")
    for backend in backends:
        engine = make_engine(backend, params, config, dtype=dtype, max_len=ids.shape[1])
        got = _stepwise(engine, ids, 6)
        assert_close(got, full[5:], dtype, "real_model", what=f"SmolLM2 2 layers, {engine.name}")


def test_smollm2_greedy_16_tokens_identical_to_hf_generate(smollm2_2):
    from torch_ref.llama import hf_model

    params64, config, ids = smollm2_2
    params = {k: v.astype(np.float32) for k, v in params64.items()}
    hf = hf_model(params, config, torch.float32, "eager")
    with torch.inference_mode():
        ref = hf.generate(torch.from_numpy(ids), do_sample=False, max_new_tokens=16, min_new_tokens=16,
                          eos_token_id=None, pad_token_id=0, attention_mask=torch.ones_like(torch.from_numpy(ids)))
    ref = ref[0, ids.shape[1]:].tolist()
    assert len(set(ref)) > 1  # not one token repeated: a real test of the argmax at each step
    for backend in ("numpy", "jax", "torch"):
        engine = make_engine(backend, params, config, hf=hf if backend == "torch" else None,
                             max_len=ids.shape[1] + 16)
        token = int(np.argmax(engine.prefill(ids)))
        ours = [token]
        for _ in range(15):
            token = int(np.argmax(engine.step(token)))
            ours.append(token)
        assert ours == ref, (backend, ours, ref)
