"""A real model traced step by step: every intermediate tensor of SmolLM2 (Llama) from our NumPy and
JAX pieces and from Hugging Face's own modules, so a disagreement is named by layer and step
("first divergence: layer 7 attention") instead of only showing up in the logits.

    steps = trace_llama(params, idx, config, "numpy")      # numpy_impl.llama_block.llama_layer's activations
    ref = hf_trace_llama(hf_model, idx)                     # HF's modules, captured by forward hooks
    rows = compare({"numpy": steps}, ref, tolerance("float32", "real_model"))
    first_divergence(rows)                                  # the first row beyond tolerance, or None

One Llama layer, the names of its steps (pre-norm, two residual branches):

    attn_norm  = rms_norm(x)                 HF input_layernorm's output
    q, k, v    = split_heads(attn_norm W^T)  q_proj / k_proj / v_proj outputs, (B, T, H*D) there
    q_rope, k_rope = rope(q), rope(k)        HF's apply_rotary_pos_emb on the hooked q, k with the
                                             cos, sin the model's rotary_emb returned
    attention  = merge(gqa(q_rope, k_rope, v, causal))  o_proj's input
    o_proj     = attention W_o^T             o_proj's output
    resid_attn = x + o_proj                  post_attention_layernorm's input
    mlp_norm   = rms_norm(resid_attn)        post_attention_layernorm's output
    gate, up   = mlp_norm W_gate^T, W_up^T   gate_proj / up_proj outputs (before SiLU)
    mlp        = swiglu_mlp(mlp_norm)        mlp's output (down_proj's)
    resid_mlp  = resid_attn + mlp            the decoder layer's output

plus embed before the first layer and final_norm, logits after the last. Our values are the
activations of the backend's own layer, llama_block.llama_layer (the one function numpy_impl/llama.py
or jax_impl/llama.py runs per layer), read by name: nothing here rewrites the layer, so the traced
logits are the backend's own: NumPy's bit for bit; JAX's run layer by layer, not as one jitted
program, which moves float rounding only (tests/test_model_inspect.py checks both). gate and up are
the products swiglu_mlp forms inside (NumPy: from its cache; JAX: read beside it). Every value is
kept in our layout: HF's (B, T, H*D) projections are viewed as (B, H, T, D), as its attention does;
`hf_shape` records the shape HF produced.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from types import SimpleNamespace

import numpy as np

from triptych.common.checks import InputError
from triptych.common.llama_config import LAYER_KEYS, LlamaConfig, check_llama_params
from triptych.common.token_checks import check_count, check_token_ids
from triptych.common.tolerances import Tol, max_abs_err, used

__all__ = ["Step", "LLAMA_STEPS", "BACKENDS", "pieces", "cut_llama", "trace_llama", "hf_trace_llama",
           "llama_attention_weights", "hf_llama_attention_weights", "compare", "first_divergence", "where"]

BACKENDS = ("numpy", "jax")
LLAMA_STEPS = ("attn_norm", "q", "k", "v", "q_rope", "k_rope", "attention", "o_proj", "resid_attn",
               "mlp_norm", "gate", "up", "mlp", "resid_mlp")
ATTN_STEPS = ("q", "k", "v", "q_rope", "k_rope", "attention", "o_proj")  # fields of LlamaLayerCache.attn
STEP_FIELDS = {"resid_mlp": "out"}  # a step named apart from its llama_layer field


@dataclass
class Step:
    """One traced tensor. layer None: before the first layer (embed) or after the last (logits)."""
    layer: int | None
    name: str
    value: np.ndarray  # in our layout (q, k, v as (B, H, T, D))
    hf_shape: tuple[int, ...] | None = None  # the shape HF's module produced, when it differs


def pieces(backend: str) -> SimpleNamespace:
    """The backend's own functions under one set of names (the modules are read at call time, so a
    test that replaces numpy_impl.swiglu.swiglu_mlp sees its replacement traced)."""
    if backend == "numpy":
        from numpy_impl import bert, gqa, layers, masks, multihead, norms, positional, swiglu
    elif backend == "jax":
        from jax_impl import bert, gqa, layers, masks, multihead, norms, positional, swiglu
    else:
        raise InputError(f"backend: expected one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    return SimpleNamespace(
        embedding=layers.embedding, layer_norm=layers.layer_norm, rms_norm=norms.rms_norm,
        linear=multihead.linear, split_heads=multihead.split_heads, merge_heads=multihead.merge_heads,
        get_multihead_qkv=multihead.get_multihead_qkv,
        calculate_multihead_attention=multihead.calculate_multihead_attention,
        apply_rope=positional.apply_rope, learned_positional_encoding=positional.learned_positional_encoding,
        grouped_query_attention=gqa.grouped_query_attention, swiglu_mlp=swiglu.swiglu_mlp,
        make_causal_mask=masks.make_causal_mask, padding_to_attention_mask=masks.padding_to_attention_mask,
        gelu_erf=bert.gelu_erf, mean_pool=bert.mean_pool, l2_normalize=bert.l2_normalize,
    )


def as_backend(params: dict, backend: str) -> dict:
    """The NumPy weight dict as the backend's arrays (JAX: one device copy, reused by every step)."""
    if backend == "jax":
        import jax.numpy as jnp

        return {k: jnp.asarray(v) for k, v in params.items()}
    return params


def cut_llama(params: dict, config: LlamaConfig, n_layers: int) -> tuple[dict, LlamaConfig]:
    """The first n_layers of a model (the same weights, fewer blocks; embed, norm and head kept)."""
    check_count("n_layers", n_layers, 1, config.n_layers)
    keep = {k: v for k, v in params.items() if not k.startswith("layers.") or int(k.split(".")[1]) < n_layers}
    return keep, replace(config, n_layers=n_layers)


def _check_idx(idx, vocab_size: int) -> np.ndarray:
    check_token_ids("idx", idx, vocab_size)
    return np.asarray(idx)


def layer_module(backend: str):
    """The backend's llama_block module, read at call time (a test that replaces its llama_layer, or
    a piece llama_layer calls, sees its replacement traced)."""
    if backend == "numpy":
        from numpy_impl import llama_block
    elif backend == "jax":
        from jax_impl import llama_block
    else:
        raise InputError(f"backend: expected one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    return llama_block


def layer_steps(i: int, acts) -> list[Step]:
    """LLAMA_STEPS of layer i, read by name from llama_block.llama_layer's activations."""
    return [Step(i, name, getattr(acts.attn if name in ATTN_STEPS else acts, STEP_FIELDS.get(name, name)))
            for name in LLAMA_STEPS]


def _llama_steps(params: dict, idx, config: LlamaConfig, backend: str, weights_out: list | None = None) -> list[Step]:
    """The backend's own forward, layer by layer through llama_block.llama_layer, every activation kept."""
    P, block = pieces(backend), layer_module(backend)
    p = as_backend(params, backend)
    positions = np.arange(idx.shape[1])  # llama_layer's default attend: query t sees keys 0..t
    x = P.embedding(idx, p["embed.weight"])  # (B, T, C)
    steps = [Step(None, "embed", x)]
    for i in range(config.n_layers):
        x, acts = block.llama_layer(x, {k: p[f"layers.{i}.{k}"] for k in LAYER_KEYS}, config, positions)
        if weights_out is not None:
            weights_out.append(acts.attn.weights)  # (B, H, T, T)
        steps += layer_steps(i, acts)
    xf = P.rms_norm(x, p["norm.weight"], config.norm_eps)
    head = p["embed.weight"] if config.tie_embeddings else p["lm_head.weight"]
    steps += [Step(None, "final_norm", xf), Step(None, "logits", P.linear(xf, head))]
    for st in steps:
        st.value = np.asarray(st.value)
    return steps


def trace_llama(params: dict, idx, config: LlamaConfig, backend: str = "numpy") -> list[Step]:
    """Every step of the Llama forward by one of our backends, in forward order: embed, then
    LLAMA_STEPS for each layer, then final_norm and logits.

    Shapes: idx (B, T) ints -> 3 + 14 * n_layers Steps (logits (B, T, vocab_size))
    """
    check_llama_params(params, config)
    return _llama_steps(params, _check_idx(idx, config.vocab_size), config, backend)


def llama_attention_weights(params: dict, idx, config: LlamaConfig, layer: int, backend: str = "numpy") -> np.ndarray:
    """The softmax probabilities of one layer (causal, every head), by our pieces.

    Shapes: idx (B, T) ints -> (B, H, T, T), rows sum to 1, zero above the diagonal
    """
    check_llama_params(params, config)
    check_count("layer", layer, 0, config.n_layers - 1)
    cut, cfg = cut_llama(params, config, layer + 1)  # later layers cannot change this one
    weights: list = []
    _llama_steps(cut, _check_idx(idx, config.vocab_size), cfg, backend, weights)
    return np.asarray(weights[layer])


# ----------------------------------------------------------------------------------------------
# Hugging Face, captured by forward hooks


class Hooks:
    """Forward hooks that store module inputs or outputs under a key, removed on exit."""

    def __init__(self):
        self.values: dict = {}
        self._handles: list = []

    def output(self, module, key) -> None:
        self._handles.append(module.register_forward_hook(lambda m, i, out: self.values.__setitem__(key, out)))

    def input(self, module, key) -> None:
        self._handles.append(module.register_forward_pre_hook(lambda m, i: self.values.__setitem__(key, i[0])))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy()


def _heads(t, d_head: int):
    """HF's (B, T, H*D) projection viewed as its attention does: (B, H, T, D)."""
    B, T, _ = t.shape
    return t.view(B, T, -1, d_head).transpose(1, 2)


def hf_trace_llama(model, idx) -> list[Step]:
    """The same steps from Hugging Face's LlamaForCausalLM (torch_ref.llama.hf_model), one forward
    with hooks on its modules; q_rope, k_rope are HF's apply_rotary_pos_emb of the hooked q, k with
    the cos, sin its rotary_emb module returned in that forward.

    Shapes: idx (B, T) ints -> the Steps of trace_llama, values in our layout
    """
    import torch
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    m, cfg = model.model, model.config
    idx = _check_idx(idx, cfg.vocab_size)
    d_head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    with Hooks() as h, torch.no_grad():
        h.output(m.embed_tokens, "embed")
        h.output(m.rotary_emb, "cos_sin")
        for i, layer in enumerate(m.layers):
            att, mlp = layer.self_attn, layer.mlp
            h.output(layer.input_layernorm, (i, "attn_norm"))
            for name in ("q", "k", "v"):
                h.output(getattr(att, f"{name}_proj"), (i, name))
            h.input(att.o_proj, (i, "attention"))
            h.output(att.o_proj, (i, "o_proj"))
            h.input(layer.post_attention_layernorm, (i, "resid_attn"))
            h.output(layer.post_attention_layernorm, (i, "mlp_norm"))
            h.output(mlp.gate_proj, (i, "gate"))
            h.output(mlp.up_proj, (i, "up"))
            h.output(mlp, (i, "mlp"))
            h.output(layer, (i, "resid_mlp"))
        h.output(m.norm, "final_norm")
        logits = model(input_ids=torch.from_numpy(idx)).logits
        got = h.values
        cos, sin = got["cos_sin"]
        steps = [Step(None, "embed", _np(got["embed"]))]
        for i in range(len(m.layers)):
            q, k = _heads(got[(i, "q")], d_head), _heads(got[(i, "k")], d_head)
            q_rope, k_rope = apply_rotary_pos_emb(q, k, cos, sin)
            for name in LLAMA_STEPS:
                raw = {"q_rope": q_rope, "k_rope": k_rope}.get(name, got.get((i, name)))
                if isinstance(raw, tuple):  # a module that returns (hidden, ...) in some versions
                    raw = raw[0]
                value = _heads(raw, d_head) if name in ("q", "k", "v") else raw
                steps.append(Step(i, name, _np(value), tuple(raw.shape)))
        steps += [Step(None, "final_norm", _np(got["final_norm"])), Step(None, "logits", _np(logits))]
    return steps


def hf_llama_attention_weights(model, idx, layer: int) -> np.ndarray:
    """HF's own attention probabilities (output_attentions=True; the model needs eager attention).

    Shapes: idx (B, T) ints -> (B, H, T, T)
    """
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(_check_idx(idx, model.config.vocab_size)), output_attentions=True)
    return _np(out.attentions[layer])


# ----------------------------------------------------------------------------------------------
# comparison


def where(row: dict) -> str:
    """'layer 7 attention', or the step's name alone outside the layers."""
    return row["step"] if row["layer"] is None else f"layer {row['layer']} {row['step']}"


def compare(traces: dict[str, list[Step]], ref: list[Step], tol: Tol) -> list[dict]:
    """One row per step: shapes, the L2 norm of each backend and of the reference, each backend's
    max |err| and its worst |err| / (atol + rtol |ref|) ("used": <= 1 passes), ok when all pass."""
    rows = []
    for j, r in enumerate(ref):
        refv = r.value.astype(np.float64)
        row = {"layer": r.layer, "step": r.name, "shape": None, "hf_shape": list(r.hf_shape or r.value.shape),
               "norm": {"hf": float(np.linalg.norm(refv))}, "max_abs_err": {}, "used": {}}
        for backend, steps in traces.items():
            s = steps[j]
            if (s.layer, s.name) != (r.layer, r.name) or s.value.shape != r.value.shape:
                raise ValueError(f"{backend} step {j}: {(s.layer, s.name, s.value.shape)} does not line up with "
                                 f"the reference's {(r.layer, r.name, r.value.shape)}")
            row["shape"] = list(s.value.shape)
            row["norm"][backend] = float(np.linalg.norm(s.value.astype(np.float64)))
            row["max_abs_err"][backend] = max_abs_err(s.value, r.value)  # the rule of common/tolerances.py
            row["used"][backend] = used(s.value, r.value, tol)
        row["ok"] = all(u <= 1.0 for u in row["used"].values())
        rows.append(row)
    return rows


def first_divergence(rows: list[dict]) -> dict | None:
    """The first row in forward order beyond tolerance (the place two engines part), or None."""
    return next((r for r in rows if not r["ok"]), None)
