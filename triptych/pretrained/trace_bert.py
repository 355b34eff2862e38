"""all-MiniLM-L6-v2 (BERT, post-LN) traced step by step, by our NumPy and JAX pieces and by Hugging
Face's BertModel through forward hooks; triptych/pretrained/trace.py does the same for SmolLM2 and holds the
Step type and the comparison.

    embed      = word[ids] + position[:T] + token_type[tt]   embeddings.LayerNorm's input
    embed_ln   = LN(embed)                                    embeddings.LayerNorm's output
    one layer:
    q, k, v    = split_heads(x W^T + b)                       attention.self.query / key / value outputs
    context    = merge(softmax(q k^T / sqrt(D), padding) v)   attention.output.dense's input
    attn_out   = context W_o^T + b_o                          attention.output.dense's output
    attn_resid = x + attn_out                                 attention.output.LayerNorm's input
    attn_ln    = LN(attn_resid)                               its output
    fc         = attn_ln W_fc^T + b_fc                        intermediate.dense's output
    gelu       = gelu_erf(fc)                                 intermediate's output
    mlp_out    = gelu W_proj^T + b_proj                       output.dense's output
    mlp_resid  = attn_ln + mlp_out                            output.LayerNorm's input
    mlp_ln     = LN(mlp_resid)                                its output: the layer's output
    pooled     = l2_normalize(mean over real tokens of the last mlp_ln)   the model card's recipe, in torch

Our layer steps are the activations of the backend's own bert.bert_layer_activations (the one layer
bert_encoder runs), read by name; the embeddings are written out here (bert_embeddings keeps no
intermediate). NumPy's values are its own bit for bit; JAX's run layer by layer instead of as the
one jitted encoder, which moves float rounding only.
"""
from __future__ import annotations

import numpy as np

from triptych.common.checks import InputError
from triptych.common.token_checks import check_count, check_id_grid
from triptych.pretrained.trace import BACKENDS, Hooks, Step, _np, as_backend, pieces

__all__ = ["BERT_STEPS", "trace_bert", "hf_trace_bert", "bert_attention_weights", "hf_bert_attention_weights"]

BERT_STEPS = ("q", "k", "v", "context", "attn_out", "attn_resid", "attn_ln", "fc", "gelu", "mlp_out",
              "mlp_resid", "mlp_ln")


def _n_layers(params: dict) -> int:
    return len({k.split(".")[1] for k in params if k.startswith("layers.")})


def _check_batch(batch: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tokenizer's input_ids, attention_mask, token_type_ids (token types default to zeros)."""
    if not isinstance(batch, dict) or "input_ids" not in batch:
        raise InputError(f"batch: expected the tokenizer's dict with 'input_ids', got {type(batch).__name__}")
    ids = np.asarray(batch["input_ids"])
    check_id_grid("batch['input_ids']", ids)
    mask = np.asarray(batch.get("attention_mask", np.ones_like(ids)))
    types = np.asarray(batch.get("token_type_ids", np.zeros_like(ids)))
    return ids, mask, types


def bert_module(backend: str):
    """The backend's bert module, read at call time (a test that replaces a piece sees it traced)."""
    if backend == "numpy":
        from numpy_impl import bert
    elif backend == "jax":
        from jax_impl import bert
    else:
        raise InputError(f"backend: expected one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    return bert


def _bert_steps(params: dict, batch: dict, n_heads: int, eps: float, backend: str,
                weights_out: list | None = None) -> list[Step]:
    P = pieces(backend)
    p = as_backend(params, backend)
    ids, mask01, types = _check_batch(batch)
    if backend == "jax":
        import jax.numpy as jnp

        ids, types = jnp.asarray(ids), jnp.asarray(types)
    mask = P.padding_to_attention_mask(mask01 == 1)  # (B, 1, 1, T): padding keys hidden from every query
    x = P.embedding(ids, p["embed.word"])
    x = P.learned_positional_encoding(x, p["embed.position"])  # + position[:T]
    x = x + P.embedding(types, p["embed.token_type"])
    steps = [Step(None, "embed", x)]
    x = P.layer_norm(x, p["embed.ln.weight"], p["embed.ln.bias"], eps)
    steps.append(Step(None, "embed_ln", x))
    bert = bert_module(backend)
    for i in range(_n_layers(params)):
        pre = f"layers.{i}."
        x, acts = bert.bert_layer_activations(x, {k[len(pre):]: v for k, v in p.items() if k.startswith(pre)},
                                              n_heads, mask, eps)
        if weights_out is not None:
            weights_out.append(acts.weights)  # (B, H, T, T)
        steps += [Step(i, name, getattr(acts, name)) for name in BERT_STEPS]
    steps.append(Step(None, "pooled", P.l2_normalize(P.mean_pool(x, mask01))))
    for st in steps:
        st.value = np.asarray(st.value)
    return steps


def trace_bert(params: dict, batch: dict, config, backend: str = "numpy") -> list[Step]:
    """Every step of the encoder and its sentence embedding by one of our backends, in forward
    order. config: pretrained.minilm's MiniLMConfig (heads and LayerNorm eps).

    Shapes: batch input_ids (B, T) -> 3 + 12 * n_layers Steps (pooled (B, C), unit rows)
    """
    return _bert_steps(params, batch, config.num_attention_heads, config.layer_norm_eps, backend)


def bert_attention_weights(params: dict, batch: dict, config, layer: int, backend: str = "numpy") -> np.ndarray:
    """One layer's softmax probabilities (bidirectional; padding keys get 0). Shapes: -> (B, H, T, T)"""
    check_count("layer", layer, 0, _n_layers(params) - 1)
    keep = {k: v for k, v in params.items() if not k.startswith("layers.") or int(k.split(".")[1]) <= layer}
    weights: list = []
    _bert_steps(keep, batch, config.num_attention_heads, config.layer_norm_eps, backend, weights)
    return np.asarray(weights[layer])


def hf_trace_bert(model, batch: dict) -> list[Step]:
    """The same steps from HF's BertModel (pretrained.minilm.hf_model), one forward with hooks.

    Shapes: batch input_ids (B, T) -> the Steps of trace_bert, q, k, v viewed as (B, H, T, D)
    """
    import torch
    import torch.nn.functional as F

    ids, mask01, types = (torch.from_numpy(a) for a in _check_batch(batch))
    H = model.config.num_attention_heads
    d_head = model.config.hidden_size // H
    with Hooks() as h, torch.no_grad():
        emb = model.embeddings
        h.input(emb.LayerNorm, "embed")
        h.output(emb.LayerNorm, "embed_ln")
        for i, layer in enumerate(model.encoder.layer):
            sa, so = layer.attention.self, layer.attention.output
            for name, mod in (("q", sa.query), ("k", sa.key), ("v", sa.value)):
                h.output(mod, (i, name))
            h.input(so.dense, (i, "context"))
            h.output(so.dense, (i, "attn_out"))
            h.input(so.LayerNorm, (i, "attn_resid"))
            h.output(so.LayerNorm, (i, "attn_ln"))
            h.output(layer.intermediate.dense, (i, "fc"))
            h.output(layer.intermediate, (i, "gelu"))
            h.output(layer.output.dense, (i, "mlp_out"))
            h.input(layer.output.LayerNorm, (i, "mlp_resid"))
            h.output(layer.output.LayerNorm, (i, "mlp_ln"))
        last = model(input_ids=ids, attention_mask=mask01, token_type_ids=types).last_hidden_state
        got = h.values
        steps = [Step(None, "embed", _np(got["embed"])), Step(None, "embed_ln", _np(got["embed_ln"]))]
        for i in range(len(model.encoder.layer)):
            for name in BERT_STEPS:
                raw = got[(i, name)]
                value = raw.view(*raw.shape[:2], H, d_head).transpose(1, 2) if name in ("q", "k", "v") else raw
                steps.append(Step(i, name, _np(value), tuple(raw.shape)))
        m = mask01.unsqueeze(-1).to(last.dtype)  # sentence-transformers' mean pooling, then unit length
        pooled = F.normalize((last * m).sum(1) / torch.clamp(m.sum(1), min=1e-9), p=2, dim=1)
        steps.append(Step(None, "pooled", _np(pooled)))
    return steps


def hf_bert_attention_weights(model, batch: dict, layer: int) -> np.ndarray:
    """HF's own attention probabilities (output_attentions=True, eager). Shapes: -> (B, H, T, T)"""
    import torch

    ids, mask01, types = (torch.from_numpy(a) for a in _check_batch(batch))
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask01, token_type_ids=types, output_attentions=True)
    return _np(out.attentions[layer])
