"""Decoding engines: one object per backend that holds a model and its KV cache, so a sampling loop
can say "here is the prompt" and then "here is the next token" without knowing the backend.

    engine = make_engine("numpy" | "jax" | "torch", params, config)
    logits = engine.prefill(ids)       # (1, T) prompt -> (V,) logits at its last position
    logits = engine.step(token)        # one more token -> (V,) logits after it
    engine.reset()                     # forget the cache; the next call must be prefill

numpy   numpy_impl.llama_decode: the cache preallocated and written in place, the head on the last
        position only (NumpyConcatEngine keeps numpy_impl.llama.llama_forward_cached, the teaching
        version that concatenates, for comparison: `bench decode --backends numpy-concat`).
jax     jax_impl.llama_decode: a fixed-size cache (max_len slots), so one compiled step serves every
        position; the prompt compiles once per padded length (its docstring says what that costs).
torch   Hugging Face's LlamaForCausalLM with its own DynamicCache, under torch.inference_mode: the
        reference the other two are measured against (`bench decode`).

The torch engine computes the head (SmolLM2's 49152 x 576 matrix) at the last position only, as
Hugging Face's generate does (logits_to_keep=1): the other positions' logits are never read.
"""
from __future__ import annotations

import numpy as np

from triptych.common.checks import InputError, check_choice, check_positive_int
from triptych.common.llama_config import LlamaConfig

__all__ = ["BACKENDS", "Engine", "make_engine"]

BACKENDS = ("numpy", "jax", "torch", "numpy-concat")


class Engine:
    """What every backend shares: the checks on prompts and tokens and the count of cached positions.
    Subclasses implement _prefill(ids) and _step(token) and _clear()."""

    name = "engine"

    def __init__(self, config: LlamaConfig, max_len: int):
        self.config, self.max_len = config, max_len
        self.length = None  # cached positions; None: no prompt yet

    def prefill(self, ids) -> np.ndarray:
        """Shapes: ids (1, T) ints -> logits (V,) at position T - 1. Starts a new sequence."""
        ids = np.asarray(ids)
        if ids.ndim != 2 or ids.shape[0] != 1 or ids.shape[1] == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise InputError(f"ids: expected a (1, T) array of integer token ids with T >= 1, "
                             f"got shape {ids.shape} dtype {ids.dtype}")
        self._check_ids("ids", ids)
        self._check_room("ids", ids.shape[1], 0)
        self.reset()
        out = self._prefill(ids.astype(np.int64))
        self.length = ids.shape[1]
        return out

    def step(self, token) -> np.ndarray:
        """Shapes: token (an int) -> logits (V,) at the next position."""
        if self.length is None:
            raise InputError("token: expected prefill(ids) before step(token), got step on an empty cache")
        if isinstance(token, (bool, np.bool_)) or not isinstance(token, (int, np.integer)):
            raise InputError(f"token: expected one integer token id, got {token!r}")
        self._check_ids("token", np.array([token]))
        self._check_room("token", 1, self.length)
        out = self._step(int(token))
        self.length += 1
        return out

    def reset(self) -> None:
        self.length = None
        self._clear()

    def _check_ids(self, name: str, ids) -> None:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.config.vocab_size:
            raise InputError(f"{name}: expected token ids in [0, {self.config.vocab_size}), got values in [{lo}, {hi}]")

    def _check_room(self, name: str, t_new: int, t_past: int) -> None:
        if t_past + t_new > self.max_len:
            raise InputError(f"{name}: expected at most max_len={self.max_len} positions in the cache, got "
                             f"{t_past} cached + {t_new} new = {t_past + t_new}")


class TorchEngine(Engine):
    """Hugging Face LlamaForCausalLM and its DynamicCache (the reference)."""

    def __init__(self, config, max_len, model):
        super().__init__(config, max_len)
        self.model, self.cache = model, None
        self.name = f"torch ({model.config._attn_implementation})"

    def _run(self, ids):
        import torch

        with torch.inference_mode():
            out = self.model(input_ids=torch.from_numpy(ids), past_key_values=self.cache, use_cache=True,
                             logits_to_keep=1)
        self.cache = out.past_key_values
        return out.logits[0, -1].numpy()

    def _prefill(self, ids):
        return self._run(ids)

    def _step(self, token):
        return self._run(np.array([[token]], dtype=np.int64))

    def _clear(self):
        self.cache = None


class NumpyEngine(Engine):
    """numpy_impl.llama_decode: the cache preallocated at max_len and written in place."""

    name = "numpy"

    def __init__(self, config, max_len, params, dtype):
        from numpy_impl import llama_decode

        super().__init__(config, max_len)
        self._ld = llama_decode
        self.stacked = llama_decode.stack_params(params, config)
        self.cache = llama_decode.init_cache(config, max_len, dtype=dtype)

    def _prefill(self, ids):
        return self._ld.decode_prefill(self.stacked, ids, self.cache, self.config)[0][0]

    def _step(self, token):
        return self._ld.decode_step(self.stacked, np.array([[token]]), self.cache, self.length, self.config)[0][0]

    def _clear(self):
        pass  # the next prefill rewrites the cache from slot 0; later slots are never read


class NumpyConcatEngine(Engine):
    """numpy_impl.llama.llama_forward_cached: the cache as per-layer dicts, concatenated every step."""

    name = "numpy-concat"

    def __init__(self, config, max_len, params):
        super().__init__(config, max_len)
        self.params, self.caches = params, None

    def _run(self, ids):
        from numpy_impl.llama import llama_forward_cached

        logits, self.caches = llama_forward_cached(self.params, ids, self.config, self.caches)
        return logits[0, -1]

    def _prefill(self, ids):
        return self._run(ids)

    def _step(self, token):
        return self._run(np.array([[token]], dtype=np.int64))

    def _clear(self):
        self.caches = None


class JaxEngine(Engine):
    """jax_impl.llama_decode: the cache preallocated at max_len, one compiled step for every position."""

    name = "jax"

    def __init__(self, config, max_len, params, dtype):
        from jax_impl import llama_decode

        super().__init__(config, max_len)
        self._ld, self.dtype = llama_decode, dtype
        self.stacked = llama_decode.stack_params(params, config)
        self.cache = llama_decode.init_cache(config, max_len, dtype=dtype)

    def _prefill(self, ids):
        logits, self.cache = self._ld.decode_prefill(self.stacked, ids, self.cache, self.config)
        return np.asarray(logits[0])

    def _step(self, token):
        logits, self.cache = self._ld.decode_step(self.stacked, np.array([[token]], dtype=np.int32), self.cache,
                                                  self.length, self.config)
        return np.asarray(logits[0])

    def _clear(self):
        pass  # the fixed cache is rewritten from slot 0 by the next prefill; stale slots are masked


def _cast(params: dict, dtype) -> dict:
    dtype = np.dtype(dtype)
    return {k: v if v.dtype == dtype else v.astype(dtype) for k, v in params.items()}


def make_engine(backend: str, params: dict, config: LlamaConfig, hf=None, dtype="float32",
                max_len: int | None = None, attn_implementation: str | None = None) -> Engine:
    """A decoding engine for `backend` (numpy | jax | torch). hf: a ready LlamaForCausalLM for torch
    (else torch_ref.llama.hf_model builds one, ~2 s); max_len: the most positions a sequence may
    reach (default config.block_size; numpy and jax allocate their caches at this length);
    attn_implementation: HF's, default "eager" in float32 (the bench's reference) and "sdpa" in
    float64 (eager computes its softmax in float32; sdpa with exact_float64 matches to 1e-14)."""
    from triptych.common.llama_config import check_llama_params

    check_choice("backend", backend, BACKENDS)
    check_llama_params(params, config)
    max_len = config.block_size if max_len is None else max_len
    check_positive_int("max_len", max_len)
    np_dtype = np.dtype(dtype)
    if np_dtype not in (np.float32, np.float64):
        raise InputError(f"dtype: expected float32 or float64, got {dtype!r}")
    if backend == "torch":
        if hf is None:
            import torch

            from triptych.common.quiet_loading import loading
            from torch_ref.llama import hf_model

            exact = np_dtype == np.float64
            attn = attn_implementation or ("sdpa" if exact else "eager")
            with loading("Hugging Face's LlamaForCausalLM with these weights"):
                hf = hf_model(params, config, getattr(torch, np_dtype.name), attn, exact_float64=exact)
        return TorchEngine(config, int(max_len), hf)
    if backend == "numpy-concat":
        return NumpyConcatEngine(config, int(max_len), _cast(params, np_dtype))
    if backend == "numpy":
        return NumpyEngine(config, int(max_len), _cast(params, np_dtype), np_dtype.name)
    import jax_impl  # noqa: F401  (float64 switched on before the first JAX array)

    return JaxEngine(config, int(max_len), _cast(params, np_dtype), np_dtype.name)
