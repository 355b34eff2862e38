"""The referee for LoRA: peft itself (peft.tuners.lora.Linear), wrapped around torch modules.

Every function here builds the torch module, lets peft inject its adapter (get_peft_model with a
LoraConfig), copies our lora_A / lora_B into peft's own parameters and runs peft's forward or merge.
So numpy_impl and jax_impl are compared with what peft computes, not with a re-derivation.

Attention: peft cannot adapt the query and value parts of nn.MultiheadAttention separately, because
torch packs W_q, W_k, W_v into one `in_proj_weight` (3C, C) that is not an nn.Linear (peft's MHA
support adapts the packed matrix as a whole). So the reference is `SeparateProjectionMHA`: the same
layer written with four nn.Linear (q_proj, k_proj, v_proj, out_proj, as Hugging Face models have)
around F.scaled_dot_product_attention. parity_tests/test_lora.py checks that it equals
nn.MultiheadAttention with the same weights, so adapting its q_proj and v_proj is LoRA on W_q, W_v.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from triptych.common.checks import check_finite, check_positive_int, check_shape
from triptych.common.lora_checks import (  # one wording of every error in all three backends
    check_alpha,
    check_dropout_p,
    check_init,
    check_linear_args,
    check_lora,
    check_lora_mha,
    check_mha_params,
    check_rank,
    check_targets,
)
from torch_ref._checks import all_finite
from torch_ref.attention import scaled_dot_product_attention
from torch_ref.multihead import get_multihead_qkv

__all__ = [
    "lora_scaling",
    "init_lora_params",
    "lora_dropout_mask",
    "lora_delta",
    "lora_branch",
    "lora_linear",
    "merge_lora",
    "unmerge_lora",
    "init_lora_mha_params",
    "lora_multihead_attention",
    "merge_lora_mha",
    "merge_adapters",
    # torch only: the peft-wrapped modules themselves, for autograd references and parameter counts.
    "SeparateProjectionMHA",
    "peft_lora_linear",
    "peft_lora_mha",
]
__backend_only__ = ("SeparateProjectionMHA", "peft_lora_linear", "peft_lora_mha")

_INIT_TO_PEFT = {"default": True, "gaussian": "gaussian", "random": False}
_PROJ = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj"}


def _t(x, dtype=None):
    t = x if torch.is_tensor(x) else torch.as_tensor(x.copy() if hasattr(x, "copy") else x)
    return t if dtype is None else t.to(dtype)


class _Holder(nn.Module):
    """A one-layer model, so get_peft_model has a named nn.Linear ('proj') to target."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.proj = linear

    def forward(self, x):
        return self.proj(x)


class _FixedDropout(nn.Module):
    """Stands in for peft's nn.Dropout on the LoRA branch with a given (already scaled) keep mask,
    so peft's training-mode forward can be compared with ours mask for mask."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, x):
        return x * self.mask


def _lora_config(r: int, alpha: float, use_rslora: bool, targets, init=False, dropout: float = 0.0):
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=dropout,
                      init_lora_weights=init, use_rslora=use_rslora, bias="none")


def _load_adapter(layer, lora: dict) -> None:
    """Copy our A and B into a peft lora.Linear's 'default' adapter."""
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(_t(lora["lora_A"]))
        layer.lora_B["default"].weight.copy_(_t(lora["lora_B"]))


def peft_lora_linear(w, b, lora: dict | None, alpha: float, use_rslora: bool = False, dropout: float = 0.0,
                     r: int | None = None, init: str = "random"):
    """nn.Linear(w, b) wrapped by peft (get_peft_model); its adapter set to `lora` when given, else
    left as peft initialised it with `init`. Returns (peft_model, the peft lora.Linear layer).

    Shapes: w (d_out, d_in), b (d_out,), lora_A (r, d_in), lora_B (d_out, r)
    """
    from peft import get_peft_model

    w = _t(w)
    d_out, d_in = w.shape
    r = check_lora(lora, d_in, d_out) if lora is not None else r
    check_rank(r, d_in, d_out)
    check_init(init)
    base = nn.Linear(d_in, d_out, bias=b is not None, dtype=w.dtype)
    with torch.no_grad():
        base.weight.copy_(w)
        if b is not None:
            base.bias.copy_(_t(b))
    model = get_peft_model(_Holder(base), _lora_config(r, alpha, use_rslora, ["proj"], _INIT_TO_PEFT[init], dropout))
    layer = model.base_model.model.proj
    if lora is not None:
        _load_adapter(layer, lora)
    return model, layer


def lora_scaling(r: int, alpha: float, use_rslora: bool = False) -> float:
    """peft's own scaling, read off a freshly wrapped layer (peft stores it per adapter).

    Shapes: scalars -> scalar
    """
    check_positive_int("r", r)
    check_alpha(alpha)
    _, layer = peft_lora_linear(torch.zeros(r, r), None, None, alpha, use_rslora, r=r)
    return float(layer.scaling["default"])


def init_lora_params(d_in: int, d_out: int, r: int, init: str = "default", seed: int = 0, dtype=torch.float64):
    """peft's initialisation itself: wrap an nn.Linear with init_lora_weights = True / "gaussian" /
    False under torch.manual_seed(seed) (global RNG state restored afterwards) and read A and B out.

    Shapes: -> lora_A (r, d_in), lora_B (d_out, r)
    """
    check_positive_int("d_in", d_in)
    check_positive_int("d_out", d_out)
    check_rank(r, d_in, d_out)
    check_init(init)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, layer = peft_lora_linear(torch.zeros(d_out, d_in, dtype=dtype), None, None, 1.0, r=r, init=init)
    return {"lora_A": layer.lora_A["default"].weight.detach().to(dtype).clone(),
            "lora_B": layer.lora_B["default"].weight.detach().to(dtype).clone()}


def lora_dropout_mask(shape, p: float, seed: int = 0, dtype=torch.float64):
    """The multiplier F.dropout applies, read off F.dropout(ones) under torch.manual_seed(seed): run
    peft's layer in training mode right after the same manual_seed and it draws this very mask.

    Shapes: shape of x -> same
    """
    check_dropout_p(p)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return F.dropout(torch.ones(tuple(shape), dtype=dtype), p=p, training=True)


def lora_delta(lora: dict, alpha: float, use_rslora: bool = False):
    """peft's get_delta_weight (the s B A that merge adds).

    Shapes: lora_A (r, d_in), lora_B (d_out, r) -> (d_out, d_in)
    """
    check_lora(lora)
    a = _t(lora["lora_A"])
    _, layer = peft_lora_linear(torch.zeros(lora["lora_B"].shape[0], a.shape[1], dtype=a.dtype), None, lora,
                                alpha, use_rslora)
    return layer.get_delta_weight("default").detach()


def lora_branch(x, lora: dict, scaling: float, dropout_mask=None):
    """The LoRA term alone: peft's layer with a zero base weight and no bias, scaling set to `scaling`.

    Shapes: x (..., d_in), lora_A (r, d_in), lora_B (d_out, r) -> (..., d_out)
    """
    check_lora(lora, x.shape[-1])
    r = int(lora["lora_A"].shape[0])
    w = torch.zeros(lora["lora_B"].shape[0], x.shape[-1], dtype=x.dtype)
    # alpha chosen so that peft's alpha / r equals the requested scaling
    return lora_linear(x, w, None, lora, scaling * r, dropout_mask=dropout_mask)


def lora_linear(x, w, b, lora: dict, alpha: float, use_rslora: bool = False, dropout_mask=None):
    """peft's unmerged forward. With dropout_mask, peft's dropout module is replaced by that mask
    and the layer runs in training mode; without, eval mode (dropout off).

    Shapes: x (..., d_in), w (d_out, d_in), b (d_out,), lora_A (r, d_in), lora_B (d_out, r) -> (..., d_out)
    """
    check_linear_args(x, w, b, lora)
    check_alpha(alpha)
    check_finite("x", all_finite(x))
    if dropout_mask is not None:
        check_shape("dropout_mask", dropout_mask, x.shape)
    model, layer = peft_lora_linear(w, b, lora, alpha, use_rslora)
    if dropout_mask is None:
        model.eval()
    else:
        layer.lora_dropout["default"] = _FixedDropout(_t(dropout_mask, x.dtype))
        model.train()
    with torch.no_grad():
        return model(x)


def merge_lora(w, lora: dict, alpha: float, use_rslora: bool = False):
    """peft's merge (layer.merge()): the base weight afterwards.

    Shapes: w (d_out, d_in) -> (d_out, d_in)
    """
    w = _t(w)
    check_shape("w", w, (None, None))
    check_lora(lora, w.shape[1], w.shape[0])
    _, layer = peft_lora_linear(w, None, lora, alpha, use_rslora)
    layer.merge()
    return layer.base_layer.weight.detach().clone()


def merge_adapters(params: dict, adapters: dict, alpha: float) -> tuple[dict, dict]:
    """params with every adapter folded in, and the scaling of each: for every "<key>.lora_A" /
    "<key>.lora_B" pair in adapters, params[key] becomes merge_lora's W + s B A (s = alpha / r, r read
    from A). Weights without an adapter are shared, not copied.

    Shapes: params {key: (d_out, d_in), ...}, adapters {key.lora_A: (r, d_in), key.lora_B: (d_out, r)}
            -> (params' keys and shapes, {key: s})
    """
    merged, scale = dict(params), {}
    for a_key in adapters:
        if a_key.endswith(".lora_A"):
            key = a_key[: -len(".lora_A")]
            lora = {"lora_A": adapters[a_key], "lora_B": adapters[key + ".lora_B"]}
            merged[key] = merge_lora(params[key], lora, alpha)
            scale[key] = lora_scaling(int(lora["lora_A"].shape[0]), alpha)
    return merged, scale


def unmerge_lora(w_merged, lora: dict, alpha: float, use_rslora: bool = False):
    """peft's unmerge: load the merged weight into a layer marked as merged, then layer.unmerge().

    Shapes: w_merged (d_out, d_in) -> (d_out, d_in)
    """
    w_merged = _t(w_merged)
    check_shape("w_merged", w_merged, (None, None))
    check_lora(lora, w_merged.shape[1], w_merged.shape[0])
    _, layer = peft_lora_linear(w_merged, None, lora, alpha, use_rslora)
    layer.merged_adapters.append("default")  # what merge() records; unmerge() undoes exactly those
    layer.unmerge()
    return layer.base_layer.weight.detach().clone()


def init_lora_mha_params(d_model: int, r: int, targets=("q", "v"), init: str = "default", seed: int = 0,
                         dtype=torch.float64):
    """Shapes: -> {target: {lora_A (r, C), lora_B (C, r)}}"""
    targets = check_targets(targets)
    return {t: init_lora_params(d_model, d_model, r, init, seed + i, dtype) for i, t in enumerate(targets)}


class SeparateProjectionMHA(nn.Module):
    """Multi-head attention with four nn.Linear (peft can target each one by name) and
    F.scaled_dot_product_attention, batch-first; same maths as nn.MultiheadAttention.

    Shapes: x (B, T_q, C), kv (B, T_k, C), mask broadcastable to (B, H, T_q, T_k) (True = may attend)
            -> out (B, T_q, C), weights (B, H, T_q, T_k)
    """

    def __init__(self, d_model: int, n_heads: int, dtype=torch.float64):
        super().__init__()
        self.n_heads = n_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            nn.Linear(d_model, d_model, dtype=dtype) for _ in range(4))

    @classmethod
    def from_params(cls, params: dict, n_heads: int) -> "SeparateProjectionMHA":
        """Our params dict (w_q, b_q, ..., w_o, b_o) -> the module, weights copied."""
        check_mha_params(params)
        w_q = _t(params["w_q"])
        module = cls(w_q.shape[0], n_heads, dtype=w_q.dtype)
        with torch.no_grad():
            for t, name in _PROJ.items():
                getattr(module, name).weight.copy_(_t(params[f"w_{t}"]))
                getattr(module, name).bias.copy_(_t(params[f"b_{t}"]))
        return module

    def forward(self, x, kv=None, mask=None):
        kv = x if kv is None else kv
        B, T_q, C = x.shape
        H = self.n_heads

        def heads(t):  # (B, T, C) -> (B, H, T, C/H)
            return t.view(B, t.shape[1], H, C // H).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(kv)), heads(self.v_proj(kv))
        # torch_ref's SDPA: F.scaled_dot_product_attention for the output, plus its weights.
        out, weights = scaled_dot_product_attention(q, k, v, mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(B, T_q, C)), weights


def peft_lora_mha(params: dict, lora_params: dict, n_heads: int, alpha: float, use_rslora: bool = False):
    """SeparateProjectionMHA with peft adapters on the projections named in lora_params (q -> q_proj,
    k -> k_proj, v -> v_proj, o -> out_proj), our A and B loaded. Returns the peft model.

    Shapes: params {w_*: (C, C), b_*: (C,)}, lora_params {target: {lora_A (r, C), lora_B (C, r)}}
    """
    from peft import get_peft_model

    check_mha_params(params)
    targets = check_lora_mha(lora_params, params["w_q"].shape[0])
    ranks = {int(lora_params[t]["lora_A"].shape[0]) for t in targets}
    r = ranks.pop()
    # peft gives every target the same r unless rank_pattern says otherwise
    rank_pattern = {_PROJ[t]: int(lora_params[t]["lora_A"].shape[0]) for t in targets}
    config = _lora_config(r, alpha, use_rslora, [_PROJ[t] for t in targets])
    config.rank_pattern = rank_pattern
    model = get_peft_model(SeparateProjectionMHA.from_params(params, n_heads), config)
    for t in targets:
        _load_adapter(getattr(model.base_model.model, _PROJ[t]), lora_params[t])
    return model.eval()


def lora_multihead_attention(x, params: dict, lora_params: dict, n_heads: int, alpha: float,
                             use_rslora: bool = False, kv=None, mask=None):
    """peft-wrapped SeparateProjectionMHA, eval mode, unmerged.

    Shapes: x (B, T_q, C), kv (B, T_k, C), mask broadcastable to (B, H, T_q, T_k)
            -> out (B, T_q, C), weights (B, H, T_q, T_k)
    """
    get_multihead_qkv(x, params, n_heads, kv)  # the frozen layer's checks, same wording as numpy/jax
    model = peft_lora_mha(params, lora_params, n_heads, alpha, use_rslora)
    with torch.no_grad():
        out, weights = model(x, kv=kv, mask=mask)
    return out, weights


def merge_lora_mha(params: dict, lora_params: dict, alpha: float, use_rslora: bool = False) -> dict:
    """peft's merge_and_unload on the wrapped module, read back into our params dict.

    Shapes: {w_*: (C, C), b_*: (C,)} -> same
    """
    check_mha_params(params)
    model = peft_lora_mha(params, lora_params, n_heads=1, alpha=alpha, use_rslora=use_rslora)
    plain = model.merge_and_unload()
    merged = {}
    for t, name in _PROJ.items():
        merged[f"w_{t}"] = getattr(plain, name).weight.detach().clone()
        merged[f"b_{t}"] = getattr(plain, name).bias.detach().clone()
    return {k: merged[k] for k in params if k in merged}
