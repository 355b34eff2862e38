"""A Stanford CS336 assignment-1 tests/adapters.py as a student fills it in: torch, the handout's
signatures, the maths inline (written for Triptych's tests, tests/test_check_cs336.py, which plants
one mistake at a time by replacing a line of it or appending a redefinition)."""
from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable

import numpy as np
import regex
import torch

PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def run_linear(d_in, d_out, weights, in_features):
    return in_features @ weights.T


def run_embedding(vocab_size, d_model, weights, token_ids):
    return weights[token_ids]


def run_silu(in_features):
    return in_features * torch.sigmoid(in_features)


def run_swiglu(d_model, d_ff, w1_weight, w2_weight, w3_weight, in_features):
    gate, up = in_features @ w1_weight.T, in_features @ w3_weight.T  # GATE_UP
    return (run_silu(gate) * up) @ w2_weight.T


def run_rmsnorm(d_model, eps, weights, in_features):
    dtype = in_features.dtype
    x = in_features.to(torch.float32)
    rms = torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)  # RMS_LINE
    return (x / rms * weights).to(dtype)


def run_softmax(in_features, dim):
    z = in_features - in_features.max(dim=dim, keepdim=True).values  # SHIFT_LINE
    e = torch.exp(z)
    return e / e.sum(dim=dim, keepdim=True)


def run_cross_entropy(inputs, targets):
    m = inputs.max(dim=-1, keepdim=True).values  # LSE_LINE
    lse = m.squeeze(-1) + torch.log(torch.exp(inputs - m).sum(-1))
    return (lse - inputs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)).mean()


def run_scaled_dot_product_attention(Q, K, V, mask=None):
    scores = Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1])  # SCALE_LINE
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # MASK_LINE
    return run_softmax(scores, dim=-1) @ V


def _rope_tables(d_k, theta, max_seq_len):
    inv = theta ** (-torch.arange(0, d_k, 2, dtype=torch.float32) / d_k)
    ang = torch.arange(max_seq_len, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cos(ang), torch.sin(ang)


def run_rope(d_k, theta, max_seq_len, in_query_or_key, token_positions):
    cos, sin = _rope_tables(d_k, theta, max_seq_len)
    cos, sin = cos[token_positions], sin[token_positions]
    x = in_query_or_key
    x1, x2 = x[..., 0::2], x[..., 1::2]  # PAIRS_LINE
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.flatten(-2)  # FLAT_LINE


def _mha(d_model, num_heads, wq, wk, wv, wo, x, rope=None, positions=None):
    *lead, t, _ = x.shape
    d_k = d_model // num_heads

    def heads(w):
        return (x @ w.T).view(*lead, t, num_heads, d_k).transpose(-2, -3)
    q, k, v = heads(wq), heads(wk), heads(wv)
    if rope is not None:
        theta, max_seq_len = rope
        pos = torch.arange(t) if positions is None else positions
        q, k = run_rope(d_k, theta, max_seq_len, q, pos), run_rope(d_k, theta, max_seq_len, k, pos)
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
    a = run_scaled_dot_product_attention(q, k, v, causal)
    return a.transpose(-2, -3).reshape(*lead, t, d_model) @ wo.T


def run_multihead_self_attention(d_model, num_heads, q_proj_weight, k_proj_weight, v_proj_weight, o_proj_weight,
                                 in_features):
    return _mha(d_model, num_heads, q_proj_weight, k_proj_weight, v_proj_weight, o_proj_weight, in_features)


def run_multihead_self_attention_with_rope(d_model, num_heads, max_seq_len, theta, q_proj_weight, k_proj_weight,
                                           v_proj_weight, o_proj_weight, in_features, token_positions=None):
    return _mha(d_model, num_heads, q_proj_weight, k_proj_weight, v_proj_weight, o_proj_weight, in_features,
                (theta, max_seq_len), token_positions)


def run_transformer_block(d_model, num_heads, d_ff, max_seq_len, theta, weights, in_features):
    w = weights
    x = in_features
    h = run_rmsnorm(d_model, 1e-5, w["ln1.weight"], x)  # BLOCK_1
    x = x + run_multihead_self_attention_with_rope(d_model, num_heads, max_seq_len, theta, w["attn.q_proj.weight"],
                                                   w["attn.k_proj.weight"], w["attn.v_proj.weight"],
                                                   w["attn.output_proj.weight"], h)
    h = run_rmsnorm(d_model, 1e-5, w["ln2.weight"], x)  # BLOCK_2
    return x + run_swiglu(d_model, d_ff, w["ffn.w1.weight"], w["ffn.w2.weight"], w["ffn.w3.weight"], h)


def run_transformer_lm(vocab_size, context_length, d_model, num_layers, num_heads, d_ff, rope_theta, weights,
                       in_indices):
    x = run_embedding(vocab_size, d_model, weights["token_embeddings.weight"], in_indices)
    for i in range(num_layers):
        layer = {k[len(f"layers.{i}."):]: v for k, v in weights.items() if k.startswith(f"layers.{i}.")}
        x = run_transformer_block(d_model, num_heads, d_ff, context_length, rope_theta, layer, x)
    x = run_rmsnorm(d_model, 1e-5, weights["ln_final.weight"], x)
    return run_linear(d_model, vocab_size, weights["lm_head.weight"], x)


def run_get_batch(dataset, batch_size, context_length, device):
    starts = np.random.randint(0, len(dataset) - context_length, size=batch_size)  # BATCH_LINE
    x = np.stack([dataset[s:s + context_length] for s in starts])
    y = np.stack([dataset[s + 1:s + 1 + context_length] for s in starts])
    return torch.tensor(x, dtype=torch.long, device=device), torch.tensor(y, dtype=torch.long, device=device)


def run_gradient_clipping(parameters: Iterable[torch.nn.Parameter], max_l2_norm: float) -> None:
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.sqrt(sum((g ** 2).sum() for g in grads))  # CLIP_LINE
    if total > max_l2_norm:
        for g in grads:
            g.mul_(max_l2_norm / (total + 1e-6))


class AdamW(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, wd, (b1, b2), eps = group["lr"], group["weight_decay"], group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                t = state.get("t", 0) + 1
                m = b1 * state.get("m", torch.zeros_like(p)) + (1 - b1) * p.grad
                v = b2 * state.get("v", torch.zeros_like(p)) + (1 - b2) * p.grad ** 2
                lr_t = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)  # ADAM_LINE
                p -= lr_t * m / (torch.sqrt(v) + eps)
                p -= lr * wd * p
                state.update(t=t, m=m, v=v)


def get_adamw_cls():
    return AdamW


def run_get_lr_cosine_schedule(it, max_learning_rate, min_learning_rate, warmup_iters, cosine_cycle_iters):
    if it < warmup_iters:
        return it / warmup_iters * max_learning_rate
    if it <= cosine_cycle_iters:
        c = 0.5 * (1 + math.cos(math.pi * (it - warmup_iters) / (cosine_cycle_iters - warmup_iters)))
        return min_learning_rate + c * (max_learning_rate - min_learning_rate)
    return min_learning_rate  # FLOOR_LINE


def _words(text, specials):
    """Pre-tokens (as lists of one-byte tokens) and special tokens (whole, flagged)."""
    parts = [text]
    if specials:
        pat = "(" + "|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")"
        parts = regex.split(pat, text)  # SPECIAL_SPLIT
    for part in parts:
        if specials and part in specials:
            yield part, True
        else:
            for w in regex.findall(PAT, part):
                yield w, False


def _merge(word, pair):
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


class Tokenizer:
    def __init__(self, vocab, merges, special_tokens=None):
        self.vocab, self.specials = vocab, list(special_tokens or [])
        self.ids = {b: i for i, b in vocab.items()}
        self.rank = {m: r for r, m in enumerate(merges)}

    def encode(self, text):
        out = []
        for w, special in _words(text, self.specials):
            if special:
                out.append(self.ids[w.encode("utf-8")])
                continue
            word = [bytes([b]) for b in w.encode("utf-8")]
            while len(word) > 1:
                pairs = [p for p in zip(word, word[1:]) if p in self.rank]
                if not pairs:
                    break
                word = _merge(word, min(pairs, key=self.rank.get))  # RANK_LINE
            out += [self.ids[t] for t in word]
        return out

    def encode_iterable(self, iterable):
        for chunk in iterable:
            yield from self.encode(chunk)

    def decode(self, ids):
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="replace")


def get_tokenizer(vocab, merges, special_tokens=None):
    return Tokenizer(vocab, merges, special_tokens)


def run_train_bpe(input_path: str | os.PathLike, vocab_size: int, special_tokens: list[str], **kwargs):
    with open(input_path, encoding="utf-8") as f:
        text = f.read()
    counts = Counter(tuple(bytes([b]) for b in w.encode("utf-8")) for w, s in _words(text, special_tokens) if not s)
    vocab = {i: bytes([i]) for i in range(256)}
    for s in special_tokens:
        vocab[len(vocab)] = s.encode("utf-8")
    merges = []
    while len(vocab) < vocab_size:
        pairs = Counter()
        for w, c in counts.items():
            for p in zip(w, w[1:]):
                pairs[p] += c
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))  # TIE_LINE
        merges.append(best)
        vocab[len(vocab)] = best[0] + best[1]
        counts = Counter({tuple(_merge(list(w), best)): c for w, c in counts.items()})
    return vocab, merges
