"""Real torch models built from an Architecture, so a formula's count can be set beside the count of
an instantiated model. Built from torch's own layers (nn.Embedding, nn.LayerNorm, nn.RMSNorm,
nn.MultiheadAttention, nn.Linear, nn.TransformerEncoderLayer), never from our formulas; and, where a
Hugging Face family has the same shape, that family's own model (GPT-2, GPT-NeoX, Llama, Qwen2).

Large models (the 48-layer decoder of exercise G.2, Llama 3 8B) are built on torch's "meta" device:
parameters have shapes but no storage, so counting them costs no memory. torch is imported lazily.
"""
from __future__ import annotations

from triptych.calculators.architecture import Architecture


def count_trainable(model) -> int:
    """sum of numel over parameters that require grad (model.parameters() yields a tied tensor once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_torch_encoder(a: Architecture, device: str = "cpu"):
    """BERT/RoBERTa-style post-LN encoder: embeddings (+ LayerNorm) and nn.TransformerEncoderLayer's.

    Shapes: forward ids (B, T) -> (B, T, d)
    """
    import torch
    import torch.nn as nn

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            d = a.d_model
            self.tok = nn.Embedding(a.vocab_size, d)
            self.pos = nn.Embedding(a.positions_rows, d) if a.positions == "learned" else None
            self.types = nn.Embedding(a.token_types, d) if a.token_types else None
            self.emb_norm = nn.LayerNorm(d, bias=a.bias)
            self.layers = nn.ModuleList(
                nn.TransformerEncoderLayer(d, a.n_heads, dim_feedforward=a.ffn_inner, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=False, bias=a.bias)
                for _ in range(a.n_layers))
            self.pooler = nn.Linear(d, d, bias=a.bias) if a.pooler else None

        def forward(self, ids):
            h = self.tok(ids)
            if self.pos is not None:
                h = h + self.pos(torch.arange(ids.shape[1], device=ids.device))
            if self.types is not None:
                h = h + self.types(torch.zeros_like(ids))
            h = self.emb_norm(h)
            for layer in self.layers:
                h = layer(h)
            return h

    with torch.device(device):
        return Encoder()


def _decoder_norm(a: Architecture):
    """RMSNorm or LayerNorm over d_model, as the architecture says."""
    import torch.nn as nn
    return nn.RMSNorm(a.d_model) if a.norm == "rmsnorm" else nn.LayerNorm(a.d_model, bias=a.bias)


def _uses_torch_mha(a: Architecture) -> bool:
    """GPT-2's attention (h_kv = h, h d_head = d, one bias setting) is exactly nn.MultiheadAttention."""
    return a.standard_heads and a.has_qkv_bias == a.bias


def _projection_attention(a: Architecture):
    """Explicit q/k/v/o nn.Linear's into torch's SDPA (causal, enable_gqa when h_kv < h).

    Shapes: forward x (B, T, d) -> (B, T, d)
    """
    import torch.nn as nn
    import torch.nn.functional as F

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj = nn.Linear(a.d_model, a.q_width, bias=a.has_qkv_bias)
            self.k_proj = nn.Linear(a.d_model, a.kv_width, bias=a.has_qkv_bias)
            self.v_proj = nn.Linear(a.d_model, a.kv_width, bias=a.has_qkv_bias)
            self.o_proj = nn.Linear(a.q_width, a.d_model, bias=a.bias)

        def forward(self, x):
            B, T, _ = x.shape
            q = self.q_proj(x).view(B, T, a.n_heads, a.d_head).transpose(1, 2)   # (B, h, T, d_head)
            k = self.k_proj(x).view(B, T, a.kv_heads, a.d_head).transpose(1, 2)  # (B, h_kv, T, d_head)
            v = self.v_proj(x).view(B, T, a.kv_heads, a.d_head).transpose(1, 2)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=a.kv_heads != a.n_heads)
            return self.o_proj(y.transpose(1, 2).reshape(B, T, a.q_width))

    return Attention()


def _decoder_ffn(a: Architecture):
    """d -> d_ff -> d with GELU, or SwiGLU's gate, up and down. Shapes: (B, T, d) -> (B, T, d)"""
    import torch.nn as nn
    import torch.nn.functional as F

    class SwiGLU(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate = nn.Linear(a.d_model, a.ffn_inner, bias=a.bias)
            self.up = nn.Linear(a.d_model, a.ffn_inner, bias=a.bias)
            self.down = nn.Linear(a.ffn_inner, a.d_model, bias=a.bias)

        def forward(self, x):
            return self.down(F.silu(self.gate(x)) * self.up(x))

    if a.ffn == "swiglu":
        return SwiGLU()
    return nn.Sequential(nn.Linear(a.d_model, a.ffn_inner, bias=a.bias), nn.GELU(),
                         nn.Linear(a.ffn_inner, a.d_model, bias=a.bias))


def _decoder_block(a: Architecture):
    """One pre-norm block: x + attn(norm(x)), then x + ffn(norm(x)).

    Shapes: forward x (B, T, d), causal (T, T) bool -> (B, T, d)
    """
    import torch.nn as nn

    gpt2_attention = _uses_torch_mha(a)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = _decoder_norm(a)
            self.attn = nn.MultiheadAttention(a.d_model, a.n_heads, bias=a.bias, batch_first=True) \
                if gpt2_attention else _projection_attention(a)
            self.ln_2 = _decoder_norm(a)
            self.mlp = _decoder_ffn(a)

        def forward(self, x, causal):
            h = self.ln_1(x)
            if gpt2_attention:
                x = x + self.attn(h, h, h, attn_mask=causal, need_weights=False)[0]
            else:
                x = x + self.attn(h)
            return x + self.mlp(self.ln_2(x))

    return Block()


def build_torch_decoder(a: Architecture, device: str = "cpu"):
    """Pre-norm decoder: wte (+ wpe), blocks of norm -> attention -> norm -> FFN, a final norm and an
    LM head tied to wte or not. Attention is nn.MultiheadAttention when it is GPT-2's (h_kv = h,
    h d_head = d, one bias setting), else explicit q/k/v/o nn.Linear's into torch's SDPA with
    enable_gqa; the FFN is d -> d_ff -> d with GELU, or SwiGLU's gate, up and down.

    Shapes: forward ids (B, T) -> logits (B, T, V)
    """
    import torch
    import torch.nn as nn

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            d = a.d_model
            self.wte = nn.Embedding(a.vocab_size, d)
            self.wpe = nn.Embedding(a.positions_rows, d) if a.positions == "learned" else None
            self.h = nn.ModuleList(_decoder_block(a) for _ in range(a.n_layers))
            self.ln_f = _decoder_norm(a)
            self.lm_head = nn.Linear(d, a.vocab_size, bias=False)
            if a.tied_embeddings:
                self.lm_head.weight = self.wte.weight

        def forward(self, ids):
            T = ids.shape[1]
            x = self.wte(ids)
            if self.wpe is not None:
                x = x + self.wpe(torch.arange(T, device=ids.device))
            causal = torch.ones(T, T, dtype=torch.bool, device=ids.device).triu(1)  # True = blocked (torch MHA)
            for block in self.h:
                x = block(x, causal)
            return self.lm_head(self.ln_f(x))

    with torch.device(device):
        return Decoder()


def build_torch_model(a: Architecture, device: str = "cpu"):
    return build_torch_encoder(a, device) if a.kind == "encoder" else build_torch_decoder(a, device)


def build_roberta(a: Architecture):
    """transformers' RobertaModel with the same sizes. RoBERTa always has a token-type table
    (type_vocab_size >= 1), so describe it with token_types=1; pooler as a.pooler."""
    from transformers import RobertaConfig, RobertaModel

    config = RobertaConfig(vocab_size=a.vocab_size, hidden_size=a.d_model, num_hidden_layers=a.n_layers,
                           num_attention_heads=a.n_heads, intermediate_size=a.ffn_inner,
                           max_position_embeddings=a.positions_rows, type_vocab_size=max(a.token_types, 1))
    return RobertaModel(config, add_pooling_layer=a.pooler)


def hf_decoder_family(a: Architecture) -> str | None:
    """The Hugging Face causal-LM class with exactly this architecture's parameters, or None.

    GPT2LMHeadModel: LayerNorm, GELU, biases everywhere, learned positions, GPT-2 attention.
    GPTNeoXForCausalLM: the same with rotary (or no) positions. LlamaForCausalLM: RMSNorm, SwiGLU,
    rotary (or no) positions, any h_kv and d_head, biases all on or all off (attention_bias and
    mlp_bias); its config still asks that h divide d. Qwen2ForCausalLM: Llama's shape with biases
    on q, k, v only (and d_head = d / h)."""
    if a.kind != "decoder" or a.vocab_size is None:
        return None
    rotary = a.positions in ("rope", "none")
    if a.norm == "layernorm" and a.ffn == "gelu" and a.bias and a.has_qkv_bias and a.standard_heads:
        return "GPT2LMHeadModel" if a.positions == "learned" else "GPTNeoXForCausalLM" if rotary else None
    if a.norm == "rmsnorm" and a.ffn == "swiglu" and rotary and a.d_model % a.n_heads == 0:
        if a.has_qkv_bias == a.bias:
            return "LlamaForCausalLM"
        if a.has_qkv_bias and not a.bias and a.q_width == a.d_model:
            return "Qwen2ForCausalLM"
    return None


def build_hf_decoder(a: Architecture, device: str = "meta"):
    """(class name, model, config keywords) of hf_decoder_family(a), built offline with no weights,
    or None. bos/eos ids only matter for generation; None keeps a small test vocabulary valid."""
    import torch
    import transformers

    family = hf_decoder_family(a)
    if family is None:
        return None
    if family == "GPT2LMHeadModel":
        kw = {"vocab_size": a.vocab_size, "n_positions": a.positions_rows, "n_embd": a.d_model,
              "n_layer": a.n_layers, "n_head": a.n_heads, "n_inner": a.ffn_inner}
    else:
        kw = {"vocab_size": a.vocab_size, "hidden_size": a.d_model, "num_hidden_layers": a.n_layers,
              "num_attention_heads": a.n_heads, "intermediate_size": a.ffn_inner,
              "max_position_embeddings": a.context}
    if family == "GPTNeoXForCausalLM":
        kw.update(attention_bias=True)
    elif family == "LlamaForCausalLM":
        kw.update(num_key_value_heads=a.kv_heads, head_dim=a.d_head, attention_bias=a.bias, mlp_bias=a.bias)
    elif family == "Qwen2ForCausalLM":
        kw.update(num_key_value_heads=a.kv_heads)
    kw.update(tie_word_embeddings=a.tied_embeddings)
    config = getattr(transformers, family.replace("LMHeadModel", "Config").replace("ForCausalLM", "Config"))(
        bos_token_id=None, eos_token_id=None, **kw)
    with torch.device(device):
        return family, getattr(transformers, family)(config), kw


def torch_counts(a: Architecture) -> tuple[list, str | None, bool]:
    """The torch build's count and, where one exists, the Hugging Face family's, both on the meta
    device: (quantities, HF class name or None, whether every count equals the formula's total)."""
    from triptych.calculators.architecture import count_parameters
    from triptych.calculators.quantity import Quantity, fmt_int

    total = next(q.value for q in count_parameters(a) if q.key == "total_params")
    n = count_trainable(build_torch_model(a, device="meta"))
    out = [Quantity("params_torch", "trainable parameters of the torch model (meta device)", n, "params",
                    f"sum(p.numel()) over the built {a.kind} = {fmt_int(n)}")]
    built = build_hf_decoder(a)
    family = built[0] if built else None
    if built:
        n_hf = count_trainable(built[1])
        config = ", ".join(f"{k}={v}" for k, v in built[2].items())
        out.append(Quantity("params_hf", f"Hugging Face {family} (meta device, no weights)", n_hf, "params",
                            f"sum(p.numel()) over {family}({config}) = {fmt_int(n_hf)}"))
    return out, family, all(q.value == total for q in out)
