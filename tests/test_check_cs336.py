"""The `cs336` group: a CS336 assignment-1 adapters file written here (torch, the handout's signatures,
the maths inline) passes every adapter, each named mistake planted in it is named, and the pieces
the child runs (packing bytes, get_batch's statistics) hold on their own.

Three check_file runs of the full group cost about 20 s (the first pays for importing torch and JAX
and for JAX's compilations), the planted files reuse them; see test_correct_adapters_pass_all.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from crosscheck.exercises import _cs336_text as X
from crosscheck.exercises import _cs336_train as R
from crosscheck.exercises import get_group
from crosscheck.session import check_file

CORRECT = '''"""A CS336 assignment-1 adapters file as a student fills it in: the maths inline, torch, the
handout's signatures (written for Triptych's tests; planted mistakes replace marked lines)."""
from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable

import numpy as np
import regex
import torch
from torch import Tensor

PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"""


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
'''

# Planted mistakes: (old line, new line) replacements of CORRECT, and definitions appended after it
# (a later `def` replaces the earlier one, as a notebook cell run again would). The mistakes of one
# file never meet in one adapter: the post-norm block (C) would read NaN through A's inverted mask.
A = [("in_features @ w1_weight.T, in_features @ w3_weight.T", "in_features @ w3_weight.T, in_features @ w1_weight.T"),
     ("torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)", "torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True)) + eps"),
     ("z = in_features - in_features.max(dim=dim, keepdim=True).values", "z = in_features"),
     ("m = inputs.max(dim=-1, keepdim=True).values", "m = torch.zeros_like(inputs[..., :1])"),
     ("masked_fill(~mask,", "masked_fill(mask,"),
     ("x1, x2 = x[..., 0::2], x[..., 1::2]", "x1, x2 = x[..., : d_k // 2], x[..., d_k // 2:]"),
     ("return out.flatten(-2)", "return torch.cat([out[..., 0], out[..., 1]], dim=-1)"),
     ("lr_t = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)", "lr_t = lr"),
     ("len(dataset) - context_length, size", "len(dataset) - context_length - 1, size"),
     ("return min_learning_rate  # FLOOR_LINE", "return 0.0"),
     ("best = max(pairs, key=lambda p: (pairs[p], p))", "best = min(p for p in pairs if pairs[p] == max(pairs.values()))"),
     ]
B = [("x.pow(2).mean(dim=-1, keepdim=True)", "x.pow(2).mean(dim=0, keepdim=True)"),
     ("Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1])", "Q @ K.transpose(-1, -2)")]
A_TAIL = '''

def run_gradient_clipping(parameters, max_l2_norm):
    for p in parameters:
        if p.grad is not None:
            norm = p.grad.norm()
            if norm > max_l2_norm:
                p.grad.mul_(max_l2_norm / (norm + 1e-6))


def get_tokenizer(vocab, merges, special_tokens=None):
    return Tokenizer(vocab, merges, None)
'''
B_TAIL = '''

class FrequencyTokenizer(Tokenizer):
    def encode(self, text):
        words = [([w.encode("utf-8")] if s else [bytes([b]) for b in w.encode("utf-8")], s)
                 for w, s in _words(text, self.specials)]
        while True:
            counts = Counter(p for w, s in words if not s for p in zip(w, w[1:]) if p in self.rank)
            if not counts:
                break
            best = max(counts, key=lambda p: (counts[p], -self.rank[p]))
            words = [(w if s else _merge(w, best), s) for w, s in words]
        return [self.ids[t] for w, _ in words for t in w]


def get_tokenizer(vocab, merges, special_tokens=None):
    return FrequencyTokenizer(vocab, merges, special_tokens)
'''
C_TAIL = """

def run_transformer_block(d_model, num_heads, d_ff, max_seq_len, theta, weights, in_features):
    w = weights
    x = in_features + run_multihead_self_attention_with_rope(d_model, num_heads, max_seq_len, theta,
        w["attn.q_proj.weight"], w["attn.k_proj.weight"], w["attn.v_proj.weight"], w["attn.output_proj.weight"], in_features)
    x = run_rmsnorm(d_model, 1e-5, w["ln1.weight"], x)
    x = x + run_swiglu(d_model, d_ff, w["ffn.w1.weight"], w["ffn.w2.weight"], w["ffn.w3.weight"], x)
    return run_rmsnorm(d_model, 1e-5, w["ln2.weight"], x)



def run_get_batch(dataset, batch_size, context_length, device):
    raise NotImplementedError
"""


EXPECTED_A = {
    "run_swiglu": "cs336_swiglu_gate_up_swapped",
    "run_rmsnorm": "cs336_rmsnorm_eps_outside_sqrt",
    "run_softmax": "cs336_softmax_no_max_shift",
    "run_cross_entropy": "cs336_ce_no_logsumexp_shift",
    "run_scaled_dot_product_attention": "cs336_sdpa_mask_inverted",
    "run_rope": "cs336_rope_half_layout",
    "get_adamw_cls": "cs336_adamw_no_bias_correction",
    "run_get_batch": "cs336_get_batch_misses_last_window",
    "run_get_lr_cosine_schedule": "cs336_cosine_no_floor",
    "run_train_bpe": "cs336_bpe_other_tie_rule",
    "run_gradient_clipping": "cs336_clip_per_tensor",
    "get_tokenizer": "cs336_tokenizer_special_split",
}
EXPECTED_B = {"run_rmsnorm": "cs336_rmsnorm_mean_wrong_axis", "run_scaled_dot_product_attention": "cs336_sdpa_no_scale",
              "get_tokenizer": "cs336_tokenizer_merges_by_frequency"}
EXPECTED_C = {"run_transformer_block": "cs336_block_post_norm", "run_transformer_lm": "cs336_block_post_norm"}


def _planted(subs, tail) -> str:
    source = CORRECT
    for old, new in subs:
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    return source + tail


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    out = {}
    for name, source in (("ok", CORRECT), ("a", _planted(A, A_TAIL)), ("b", _planted(B, B_TAIL)),
                         ("c", _planted([], C_TAIL))):
        folder = tmp_path_factory.mktemp(f"cs336_{name}") / "tests"
        folder.mkdir()
        (folder / "adapters.py").write_text(source)
        out[name] = str(folder / "adapters.py")
    return out


def _named(rows, expected):
    """{exercise: the mistakes its failing rows name}; every planted exercise must fail on some row."""
    found = {}
    for r in rows:
        if r["exercise"] in expected and not r["ok"]:
            found.setdefault(r["exercise"], set()).add(r.get("mistake"))
    return found


def test_correct_adapters_pass_all(files):
    start = time.perf_counter()
    report = check_file(files["ok"])
    took = time.perf_counter() - start
    graded = {r["exercise"] for r in report.rows}
    assert graded == {ex.name for ex in get_group("cs336")}
    bad = [(r["exercise"], r["case"], r["verdict"], r["message"]) for r in report.rows if not r["ok"]]
    assert bad == []
    assert all(r["verdict"] == "pass" for r in report.rows)
    # The handout's AdamW (decay after the step, eps outside the bias corrections) passes with the
    # convention named where the case can tell the forms apart.
    adamw = {r["case"]: r for r in report.rows if r["exercise"] == "get_adamw_cls"}
    assert adamw["lr 0.1, weight decay 0.2, 20 steps"]["convention"].startswith("adamw_decay_after")
    assert adamw["eps 1e-3 on small gradients, 20 steps"]["convention"] == "adamw_efficient_eps"
    print(f"check of a full CS336 adapters.py: {took:.1f} s")
    assert took < 120  # measured about 20 s on 2 loaded cores; the goal is under 60 s


def test_planted_mistakes_are_named(files):
    report = check_file(files["a"], exercise_names=sorted(EXPECTED_A))
    found = _named(report.rows, EXPECTED_A)
    assert {ex: {name} for ex, name in EXPECTED_A.items()} == {ex: found.get(ex, set()) - {None} for ex in EXPECTED_A}
    assert set(found) == set(EXPECTED_A)


@pytest.mark.parametrize("which, expected", [("b", EXPECTED_B), ("c", EXPECTED_C)])
def test_more_planted_mistakes_are_named(files, which, expected):
    report = check_file(files[which], exercise_names=sorted(expected) + (["run_get_batch"] if which == "c" else []))
    found = _named(report.rows, expected)
    assert {ex: {name} for ex, name in expected.items()} == {ex: found.get(ex, set()) - {None} for ex in expected}
    if which == "c":  # an adapter left as the handout ships it
        stub = [r for r in report.rows if r["exercise"] == "run_get_batch"]
        assert stub and all(r["verdict"] == "not implemented yet" and not r["ok"] for r in stub)


# ---------------------------------------------------------------- the pieces, without a child

def test_bytes_survive_packing_nul_bytes_included():
    from crosscheck.sandbox import kinds
    tokens = [b"", b"\x00", b"a\x00", b"\x00\x00b\x00", bytes(range(256))]
    flat, offsets = kinds.pack(tokens, np.uint8)
    assert kinds.unpack_bytes(flat, offsets) == tokens
    packed = X.pack_bytes(tokens)
    assert [t.tobytes() for t in X.unpack(packed["flat"], packed["offsets"])] == tokens


def _batches(starts, ctx=7):
    x = starts[:, None] + np.arange(ctx)
    return [x, x + 1]


def test_get_batch_statistics():
    inputs = R.batch_inputs(100, 32, 7)(None, None)
    refs = {"numpy": list(R.batch_ref(300)(None, inputs))}
    rng = np.random.default_rng(1)
    right = R.grade_batches(None, inputs, _batches(rng.integers(0, 93, size=9600)), refs)
    assert right["verdict"] == "pass", right
    short = R.grade_batches(None, inputs, _batches(rng.integers(0, 92, size=9600)), refs)
    assert short["mistake"] == "cs336_get_batch_misses_last_window"
    skewed = R.grade_batches(None, inputs, _batches(np.minimum(rng.integers(0, 120, size=9600), 92)), refs)
    assert skewed["verdict"] == "FAIL" and "not uniform" in skewed["message"]
    x, y = _batches(rng.integers(0, 93, size=9600))
    assert "shifted" in R.grade_batches(None, inputs, [x, x], refs)["message"]


def test_reference_tokenizer_is_the_library_and_round_trips():
    """tokenizers' ids equal bpe.Tokenizer's on the group's texts (two independent encoders), and the
    overlapping double special is one token."""
    from bpe.tokenizer import Tokenizer
    inputs = X.tokenizer_inputs(320, [X.SPECIAL, X.DOUBLE])(None, None)
    ref = X.tokenizer_ref(None, inputs)
    vocab, merges = X.trained(320)
    ours = Tokenizer(vocab, merges, [X.SPECIAL, X.DOUBLE])
    assert [list(ids) for ids in X.unpack(ref[0], ref[1])] == [ours.encode(t) for t in X.TEXTS]
    double = [k for k, t in vocab.items() if t == X.DOUBLE.encode()]
    assert double and double[0] in ours.encode("a " + X.DOUBLE + " b")
