"""The `cs336` group: a CS336 assignment-1 adapters file written here (torch, the handout's signatures,
the maths inline) passes every adapter, each named mistake planted in it is named, and the pieces
the child runs (packing bytes, get_batch's statistics) hold on their own.

Three check_file runs of the full group cost about 20 s (the first pays for importing torch and JAX
and for JAX's compilations), the planted files reuse them; see test_correct_adapters_pass_all.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from triptych.crosscheck.exercises import _cs336_text as X
from triptych.crosscheck.exercises import _cs336_train as R
from triptych.crosscheck.exercises import get_group
from triptych.crosscheck.session import check_file

CORRECT = (Path(__file__).with_name("submissions") / "cs336_torch.py").read_text()

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


def run_multihead_self_attention(d_model, num_heads, q_proj_weight, k_proj_weight, v_proj_weight, o_proj_weight,
                                 in_features):
    *lead, t, _ = in_features.shape

    def heads(w):
        return (in_features @ w.T).view(*lead, t, num_heads, d_model // num_heads).transpose(-2, -3)
    a = run_scaled_dot_product_attention(heads(q_proj_weight), heads(k_proj_weight), heads(v_proj_weight))
    return a.transpose(-2, -3).reshape(*lead, t, d_model) @ o_proj_weight.T
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
EXPECTED_C = {"run_transformer_block": "cs336_block_post_norm", "run_transformer_lm": "cs336_block_post_norm",
              "run_multihead_self_attention": "cs336_mha_not_causal"}


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
    assert adamw["eps 1e-3 on small gradients, 20 steps"]["convention"].endswith("adamw_efficient_eps")
    print(f"check of a full CS336 adapters.py: {took:.1f} s")  # a measurement for the log, not a test


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
    from triptych.crosscheck.sandbox import kinds
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
    from triptych.bpe.tokenizer import Tokenizer
    inputs = X.tokenizer_inputs(320, [X.SPECIAL, X.DOUBLE])(None, None)
    ref = X.tokenizer_ref(None, inputs)
    vocab, merges = X.trained(320)
    ours = Tokenizer(vocab, merges, [X.SPECIAL, X.DOUBLE])
    assert [list(ids) for ids in X.unpack(ref[0], ref[1])] == [ours.encode(t) for t in X.TEXTS]
    double = [k for k, t in vocab.items() if t == X.DOUBLE.encode()]
    assert double and double[0] in ours.encode("a " + X.DOUBLE + " b")
