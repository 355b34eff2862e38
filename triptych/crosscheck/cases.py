"""The parity cases: each op run in NumPy, JAX and torch on the same inputs, compared against torch.

One registry serves both `python cli.py parity` (a table) and parity_tests/ (assertions), so the
CLI can never report on a different computation than the tests check.

Shapes are an attention-sized problem: B=4, H=8, T=128, d_head=64 (d_model = 512), with a
cross-attention key length of 96 so T_q != T_k is always exercised.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from triptych.common.params import init_mha_params
from triptych.common.tolerances import compare as agree, dtype_name, tolerance

B, H, T, D_HEAD = 4, 8, 128, 64
T_K = 96
D_MODEL = H * D_HEAD


@dataclass(frozen=True)
class Case:
    op: str
    # run(backend_module_namespace, inputs converted to that backend) -> tuple of outputs
    run: Callable
    inputs: Callable  # (rng, dtype) -> dict of NumPy inputs (arrays, masks, params dicts, scalars)


class _BackendModules(dict):
    """m["norms"] imports <package>.norms the first time a case asks for it, so a case names the
    module it needs and nothing else has to list it. A module missing from a backend raises
    ModuleNotFoundError naming it (tests/test_backend_names.py checks the three hold the same ones)."""

    def __init__(self, package: str):
        super().__init__()
        self.package = package

    def __missing__(self, name: str):
        module = self[name] = importlib.import_module(f"{self.package}.{name}")
        return module


def backends():
    """The three implementations, imported lazily (JAX enables float64 on import)."""
    import jax.numpy as jnp
    import torch

    import jax_impl  # noqa: F401  (turns on float64)

    def to_torch(x):
        if isinstance(x, dict):
            return {k: to_torch(v) for k, v in x.items()}
        return torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x

    def to_jax(x):
        if isinstance(x, dict):
            return {k: to_jax(v) for k, v in x.items()}
        return jnp.asarray(x) if isinstance(x, np.ndarray) else x

    return {
        "numpy": (_BackendModules("numpy_impl"), lambda x: x),
        "jax": (_BackendModules("jax_impl"), to_jax),
        "torch": (_BackendModules("torch_ref"), to_torch),
    }


def _padding_causal_mask(t_q: int, t_k: int) -> np.ndarray:
    """Causal AND key padding, with one sequence whose first query sees no key at all
    (length 0 keys for batch 1), so every case exercises fully masked rows."""
    from numpy_impl.masks import combine_masks, make_causal_mask, make_key_padding_mask, padding_to_attention_mask

    lengths = np.array([t_k, 0, t_k // 2, t_k - 3])[:B]
    pad = padding_to_attention_mask(make_key_padding_mask(lengths, t_k))  # (B, 1, 1, T_k)
    return combine_masks(make_causal_mask(t_q, t_k), pad)  # (B, 1, T_q, T_k)


def _qkv(rng, dtype, t_k=T):
    return {
        "q": rng.standard_normal((B, H, T, D_HEAD)).astype(dtype),
        "k": rng.standard_normal((B, H, t_k, D_HEAD)).astype(dtype),
        "v": rng.standard_normal((B, H, t_k, D_HEAD)).astype(dtype),
    }


def _seq(rng, dtype, t_k=T_K):
    return {
        "x": rng.standard_normal((B, T, D_MODEL)).astype(dtype),
        "kv": rng.standard_normal((B, t_k, D_MODEL)).astype(dtype),
        "params": init_mha_params(D_MODEL, seed=int(rng.integers(1 << 30)), dtype=dtype),
    }


def _with(fn, **extra):
    """inputs builder = fn(rng, dtype) plus fixed extra entries."""
    return lambda rng, dtype: {**fn(rng, dtype), **extra}


CASES: list[Case] = [
    Case("pairwise_similarities", lambda m, i: (m["attention"].pairwise_similarities(i["q"], i["k"]),),
         lambda rng, dt: _qkv(rng, dt, T_K)),
    Case("attn_scaled", lambda m, i: (m["attention"].attn_scaled(i["q"], 0.125),), _qkv),
    Case("softmax (logits up to 1e6)",
         lambda m, i: (m["attention"].softmax(i["x"]),),
         lambda rng, dt: {"x": (rng.standard_normal((B, H, T, T)) * 1e6).astype(dt)}),
    Case("attn_softmax (causal+padding)",
         lambda m, i: (m["attention"].attn_softmax(i["s"], i["mask"]),),
         lambda rng, dt: {"s": rng.standard_normal((B, H, T, T)).astype(dt), "mask": _padding_causal_mask(T, T)}),
    Case("compute_outputs",
         lambda m, i: (m["attention"].compute_outputs(i["w"], i["v"]),),
         lambda rng, dt: {"w": rng.random((B, H, T, T_K)).astype(dt), "v": rng.standard_normal((B, H, T_K, D_HEAD)).astype(dt)}),
    Case("wrong_zero_after_softmax",
         lambda m, i: (m["attention"].wrong_zero_after_softmax(i["s"], i["mask"]),),
         lambda rng, dt: {"s": rng.standard_normal((B, H, T, T)).astype(dt), "mask": _padding_causal_mask(T, T)}),
    Case("sdpa", lambda m, i: m["attention"].scaled_dot_product_attention(i["q"], i["k"], i["v"]),
         lambda rng, dt: _qkv(rng, dt, T_K)),
    Case("sdpa causal (T_q != T_k, offset)",
         lambda m, i: m["attention"].scaled_dot_product_attention(
             i["q"], i["k"], i["v"], m["masks"].make_causal_mask(T, T_K, offset=T_K - T)),
         lambda rng, dt: _qkv(rng, dt, T_K)),
    Case("sdpa causal+padding (fully masked rows)",
         lambda m, i: m["attention"].scaled_dot_product_attention(i["q"], i["k"], i["v"], i["mask"]),
         lambda rng, dt: {**_qkv(rng, dt), "mask": _padding_causal_mask(T, T)}),
    Case("sdpa scale=0.5",
         lambda m, i: m["attention"].scaled_dot_product_attention(i["q"], i["k"], i["v"], scale=0.5),
         _qkv),
    Case("split_heads", lambda m, i: (m["multihead"].split_heads(i["x"], H),), _seq),
    Case("merge_heads", lambda m, i: (m["multihead"].merge_heads(i["q"]),), _qkv),
    Case("get_multihead_qkv (cross)",
         lambda m, i: m["multihead"].get_multihead_qkv(i["x"], i["params"], H, kv=i["kv"]), _seq),
    Case("calculate_multihead_attention (causal)",
         lambda m, i: m["multihead"].calculate_multihead_attention(i["q"], i["k"], i["v"], m["masks"].make_causal_mask(T)),
         _qkv),
    Case("multihead_attention self",
         lambda m, i: m["multihead"].multihead_attention(i["x"], i["params"], H), _seq),
    Case("multihead_attention causal self",
         lambda m, i: m["multihead"].self_attention(i["x"], i["params"], H, causal=True), _seq),
    Case("multihead_attention cross + padding",
         lambda m, i: m["multihead"].multihead_attention(i["x"], i["params"], H, kv=i["kv"], mask=i["mask"]),
         lambda rng, dt: {**_seq(rng, dt), "mask": _padding_causal_mask(T, T_K)}),
    Case("MultiHeadAttention self (avg weights)",
         lambda m, i: m["multihead"].MultiHeadAttention(D_MODEL, H, params=i["params"])(i["x"]), _seq),
    Case("MultiHeadAttention masked (per-head weights)",
         lambda m, i: m["multihead"].MultiHeadAttention(D_MODEL, H, params=i["params"])(
             i["x"], mask=i["mask"], average_attn_weights=False),
         lambda rng, dt: {**_seq(rng, dt), "mask": _padding_causal_mask(T, T)}),
    Case("MultiHeadAttention cross",
         lambda m, i: m["multihead"].MultiHeadAttention(D_MODEL, H, params=i["params"])(i["x"], i["kv"], i["kv"]),
         _seq),
    Case("sinusoidal_encoding",
         lambda m, i: (m["positional"].sinusoidal_encoding(5000, D_MODEL, dtype=i["dtype"]),),
         lambda rng, dt: {"dtype": dt}),
    Case("PositionalEncoding", lambda m, i: (m["positional"].PositionalEncoding(D_MODEL)(i["x"]),), _seq),
    Case("learned_positional_encoding",
         lambda m, i: (m["positional"].learned_positional_encoding(i["x"], i["table"]),),
         lambda rng, dt: {**_seq(rng, dt), "table": rng.standard_normal((256, D_MODEL)).astype(dt)}),
    Case("apply_rope", lambda m, i: (m["positional"].apply_rope(i["q"]),), _qkv),
]


def all_cases() -> list[Case]:
    """The core CASES above, then the CASES of every triptych/crosscheck/cases_*.py module in name order
    (cases_modern.py: RMSNorm, SwiGLU, RoPE layouts; ...): a new group of ops adds one file and
    `parity` and parity_tests/ pick it up."""
    from triptych import crosscheck
    extra = sorted(m.name for m in pkgutil.iter_modules(crosscheck.__path__) if m.name.startswith("cases_"))
    return CASES + [c for name in extra for c in importlib.import_module(f"triptych.crosscheck.{name}").CASES]


def _dtype_for(backend: str, dtype):
    """`dtype` arguments (sinusoidal_encoding) must be each backend's own dtype object."""
    if backend == "jax":
        import jax.numpy as jnp
        return jnp.dtype(dtype)
    if backend == "torch":
        import torch
        return getattr(torch, dtype_name(dtype))
    return np.dtype(dtype)


def run_on_backends(run: Callable, inputs: dict, only: tuple[str, ...] | None = None) -> dict[str, list[np.ndarray]]:
    """Convert NumPy `inputs` to each backend, call run(modules, inputs), return NumPy outputs.
    `only` restricts the backends (an exercise whose maths exists in NumPy alone)."""
    from triptych.common.tolerances import to_numpy

    outs = {}
    for name, (mods, convert) in backends().items():
        if only is not None and name not in only:
            continue
        args = {k: (_dtype_for(name, v) if k == "dtype" else convert(v)) for k, v in inputs.items()}
        result = run(mods, args)
        outs[name] = [to_numpy(o) for o in (result if isinstance(result, tuple) else (result,))]
    return outs


def compare(op: str, outs: dict[str, list[np.ndarray]], dtype) -> dict:
    """The parity row (JSON-ready) for outputs of the three backends; torch is the reference."""
    tol = tolerance(dtype)
    ref = outs["torch"]
    errs, ok = [], True
    for backend in ("numpy", "jax"):
        for got, want in zip(outs[backend], ref):
            same, err = agree(got, want, tol)  # the one rule of common/tolerances.py
            errs.append(err)
            ok &= same and got.dtype == want.dtype
    l2 = {b: float(np.sqrt(sum(np.sum(o.astype(np.float64) ** 2) for o in outs[b]))) for b in outs}
    return {
        "op": op,
        "shape": " ".join(str(tuple(o.shape)) for o in ref),
        "l2": l2,
        "max_abs_err": max(errs),
        # The comparison is elementwise (atol + rtol*|ref_i|); this is that bound at the largest |ref|.
        "tol": tol.atol + tol.rtol * max((float(np.max(np.abs(r))) if r.size else 0.0) for r in ref),
        "atol": tol.atol,
        "rtol": tol.rtol,
        "ok": bool(ok),
        "outputs": outs,  # dropped by the CLI before printing JSON; tests use it
    }


def run_case(case: Case, dtype, seed: int = 0) -> dict:
    """Run one registered case in the three backends and compare against torch."""
    inputs = case.inputs(np.random.default_rng(seed), np.dtype(dtype))
    return compare(case.op, run_on_backends(case.run, inputs), dtype)
