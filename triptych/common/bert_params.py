"""A BERT encoder's parameters: our key names (numpy_impl/bert.py, jax_impl/bert.py, torch_ref/bert.py)
and Hugging Face BertModel's, both ways. Used by triptych/pretrained/minilm.py to load a checkpoint
and by torch_ref/bert.py to run our params through BertModel, so it lives below both."""
from __future__ import annotations

import numpy as np

# Our key -> HF BertModel's key; {i} is the layer. HF's q/k/v/o are Linear layers (out, in) as ours.
_GLOBAL = {
    "embed.word": "embeddings.word_embeddings.weight",
    "embed.position": "embeddings.position_embeddings.weight",
    "embed.token_type": "embeddings.token_type_embeddings.weight",
    "embed.ln.weight": "embeddings.LayerNorm.weight",
    "embed.ln.bias": "embeddings.LayerNorm.bias",
}
_LAYER = {
    "attn.w_q": "attention.self.query.weight", "attn.b_q": "attention.self.query.bias",
    "attn.w_k": "attention.self.key.weight", "attn.b_k": "attention.self.key.bias",
    "attn.w_v": "attention.self.value.weight", "attn.b_v": "attention.self.value.bias",
    "attn.w_o": "attention.output.dense.weight", "attn.b_o": "attention.output.dense.bias",
    "attn_ln.weight": "attention.output.LayerNorm.weight", "attn_ln.bias": "attention.output.LayerNorm.bias",
    "mlp.w_fc": "intermediate.dense.weight", "mlp.b_fc": "intermediate.dense.bias",
    "mlp.w_proj": "output.dense.weight", "mlp.b_proj": "output.dense.bias",
    "mlp_ln.weight": "output.LayerNorm.weight", "mlp_ln.bias": "output.LayerNorm.bias",
}
# In the checkpoint but not in our forward: BERT's [CLS] pooler (sentence-transformers mean-pools
# instead) and the position_ids buffer (we index positions with arange).
_UNUSED = ("pooler.", "embeddings.position_ids")


def _key_map(n_layers: int) -> dict[str, str]:
    names = dict(_GLOBAL)
    for i in range(n_layers):
        names.update({f"layers.{i}.{ours}": f"encoder.layer.{i}.{hf}" for ours, hf in _LAYER.items()})
    return names


def params_from_hf(state_dict: dict, dtype=np.float32) -> dict[str, np.ndarray]:
    """HF BertModel state_dict (NumPy or torch values, with or without a "bert." prefix) -> our params."""
    sd = {k.removeprefix("bert."): v for k, v in state_dict.items()}
    n_layers = len({k.split(".")[2] for k in sd if k.startswith("encoder.layer.")})
    names = _key_map(n_layers)
    used = set(names.values())
    unknown = [k for k in sd if k not in used and not k.startswith(_UNUSED)]
    if unknown:
        raise ValueError(f"BERT state_dict: unexpected keys {unknown[:5]}")
    out = {}
    for ours, hf in names.items():
        v = sd[hf]
        v = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
        out[ours] = v.astype(dtype)
    return out


def params_to_hf(params: dict) -> dict:
    """Our params -> HF BertModel(add_pooling_layer=False) state_dict keys, values unchanged."""
    n_layers = len({k.split(".")[1] for k in params if k.startswith("layers.")})
    return {hf: params[ours] for ours, hf in _key_map(n_layers).items()}
