"""Real torch models built from an Architecture, so a formula's count can be set beside the count of
an instantiated model. Built from torch's own layers (nn.Embedding, nn.LayerNorm,
nn.MultiheadAttention, nn.TransformerEncoderLayer), never from our formulas.

Large models (the 48-layer decoder of exercise G.2) are built on torch's "meta" device: parameters
have shapes but no storage, so counting them costs no memory. torch is imported lazily.
"""
from __future__ import annotations

from accounting.architecture import Architecture


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


def build_torch_decoder(a: Architecture, device: str = "cpu"):
    """GPT-2-style pre-LN decoder: wte (+ wpe), blocks of LayerNorm -> nn.MultiheadAttention ->
    LayerNorm -> MLP (d -> d_ff -> d, GELU), ln_f, and an LM head tied to wte or not.

    Shapes: forward ids (B, T) -> logits (B, T, V)
    """
    import torch
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            d = a.d_model
            self.ln_1 = nn.LayerNorm(d, bias=a.bias)
            self.attn = nn.MultiheadAttention(d, a.n_heads, bias=a.bias, batch_first=True)
            self.ln_2 = nn.LayerNorm(d, bias=a.bias)
            self.mlp = nn.Sequential(nn.Linear(d, a.ffn_inner, bias=a.bias), nn.GELU(),
                                     nn.Linear(a.ffn_inner, d, bias=a.bias))

        def forward(self, x, causal):
            h = self.ln_1(x)
            x = x + self.attn(h, h, h, attn_mask=causal, need_weights=False)[0]
            return x + self.mlp(self.ln_2(x))

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            d = a.d_model
            self.wte = nn.Embedding(a.vocab_size, d)
            self.wpe = nn.Embedding(a.positions_rows, d) if a.positions == "learned" else None
            self.h = nn.ModuleList(Block() for _ in range(a.n_layers))
            self.ln_f = nn.LayerNorm(d, bias=a.bias)
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
