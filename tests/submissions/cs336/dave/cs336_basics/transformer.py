import torch
from einops import rearrange
from torch import nn

from .layers import Linear, RMSNorm, RoPE, SwiGLU, attention


class MHA(nn.Module):
    def __init__(self, d_model, num_heads, max_seq_len=None, theta=None):
        super().__init__()
        self.h = num_heads
        self.q_proj = Linear(d_model, d_model)
        self.k_proj = Linear(d_model, d_model)
        self.v_proj = Linear(d_model, d_model)
        self.output_proj = Linear(d_model, d_model)
        self.rope = RoPE(theta, d_model // num_heads, max_seq_len) if theta is not None else None

    def forward(self, x, token_positions=None):
        n = x.shape[-2]
        q = rearrange(self.q_proj(x), "... n (h d) -> ... h n d", h=self.h)
        k = rearrange(self.k_proj(x), "... n (h d) -> ... h n d", h=self.h)
        v = rearrange(self.v_proj(x), "... n (h d) -> ... h n d", h=self.h)
        if self.rope is not None:
            if token_positions is None:
                token_positions = torch.arange(n, device=x.device)
            q = self.rope(q, token_positions)
            k = self.rope(k, token_positions)
        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        return self.output_proj(rearrange(attention(q, k, v, causal), "... h n d -> ... n (h d)"))


class TransformerBlock(nn.Module):
    def __init__(self, d_model, num_heads, d_ff, max_seq_len, theta):
        super().__init__()
        self.attn = MHA(d_model, num_heads, max_seq_len, theta)
        self.ffn = SwiGLU(d_model, d_ff)
        self.ln1 = RMSNorm(d_model)
        self.ln2 = RMSNorm(d_model)

    def forward(self, x):
        # residual then norm
        x = self.ln1(x + self.attn(x))
        x = self.ln2(x + self.ffn(x))
        return x


class TransformerLM(nn.Module):
    def __init__(self, vocab_size, context_length, d_model, num_layers, num_heads, d_ff, rope_theta):
        super().__init__()
        self.token_embeddings = nn.Embedding(vocab_size, d_model)
        self.layers = nn.ModuleList(
            [TransformerBlock(d_model, num_heads, d_ff, context_length, rope_theta) for _ in range(num_layers)])
        self.ln_final = RMSNorm(d_model)
        self.lm_head = Linear(d_model, vocab_size)

    def forward(self, x):
        h = self.token_embeddings(x)
        for layer in self.layers:
            h = layer(h)
        return self.lm_head(self.ln_final(h))
