import torch
from torch import nn

from .attention import CausalSelfAttention, RoPE
from .layers import Embedding, Linear, RMSNorm, SwiGLU


class Block(nn.Module):
    def __init__(self, d_model, num_heads, d_ff, max_seq_len, theta, device=None, dtype=None):
        super().__init__()
        self.ln1 = RMSNorm(d_model, device=device, dtype=dtype)
        self.attn = CausalSelfAttention(d_model, num_heads, RoPE(theta, d_model // num_heads, max_seq_len),
                                        device=device, dtype=dtype)
        self.ln2 = RMSNorm(d_model, device=device, dtype=dtype)
        self.ffn = SwiGLU(d_model, d_ff, device=device, dtype=dtype)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        x = x + self.ffn(self.ln2(x))
        return x


class LanguageModel(nn.Module):
    def __init__(self, vocab_size, context_length, d_model, num_layers, num_heads, d_ff, rope_theta,
                 device=None, dtype=None):
        super().__init__()
        self.token_embeddings = Embedding(vocab_size, d_model, device, dtype)
        self.layers = nn.ModuleList([Block(d_model, num_heads, d_ff, context_length, rope_theta, device, dtype)
                                     for _ in range(num_layers)])
        self.ln_final = RMSNorm(d_model, device=device, dtype=dtype)
        self.lm_head = Linear(d_model, vocab_size, device, dtype)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        h = self.token_embeddings(token_ids)
        for block in self.layers:
            h = block(h)
        return self.lm_head(self.ln_final(h))
