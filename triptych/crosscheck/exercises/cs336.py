"""Stanford CS336 assignment 1 (public repository stanford-cs336/assignment1-basics), graded as
students hand it in: the `run_*` / `get_*` adapters of its tests/adapters.py, with the handout's
exact signatures and weight names, so `triptych check tests/adapters.py` grades a filled-in
adapters file as it stands (each adapter that still raises NotImplementedError reads "not
implemented yet").

References come from the three backends (numpy_impl, jax_impl, torch_ref; torch is the referee):
multihead.linear, layers.embedding, swiglu.swiglu_mlp / silu, norms.rms_norm, attention.softmax /
scaled_dot_product_attention, multihead.self_attention, positional.apply_rope(layout="interleaved"),
llama_block.rope_self_attention / llama_block, llama.llama_forward (untied head, interleaved RoPE,
every head its own keys), optim.clip_grad_norm / adamw_step, schedule.lr_cosine_schedule. The
tokenizer is judged against Hugging Face `tokenizers` on the same vocab and merges, BPE training
against triptych/bpe/train.py with the handout's tie rule, get_batch by the statistics of many draws.
Sizes are small (d_model 16, 4 heads, 2 layers) and in float32, the handout's dtype; the stateless
functions also take a float64 case.
"""
from __future__ import annotations

import numpy as np

from triptych.crosscheck.exercises import _cs336_model as M
from triptych.crosscheck.exercises import _cs336_text as X
from triptych.crosscheck.exercises import _cs336_train as R
from triptych.crosscheck.exercises._conventions import adamw_conventions, adamw_mistakes, adamw_numpy
from triptych.crosscheck.spec import Case, Exercise, Variant

GROUP = "cs336"
TITLE = "Stanford CS336 assignment 1: the adapters of tests/adapters.py"
ORDER = 60

B, T, C, H, D_FF = M.B, M.T, M.C, M.H, M.D_FF


def _fix(module, fn, text):
    return (module, fn, text)


def _f32(name, make, course_tol=None, seed=0):
    return Case(name, make, dtype="float32", seed=seed, course_tol=course_tol)


def _f64(name, make, course_tol=None, seed=0):
    return Case(name, make, dtype="float64", seed=seed, course_tol=course_tol)


def _causal_if_none(i):
    """torch's is_causal=True on (T_q, T_k): query i sees keys 0..i (top-left aligned). Only for the
    case without a mask: with one, this variant is the right answer and must not match."""
    if i["mask"] is not None:
        raise ValueError("only defined where no mask is given")
    t_q, t_k = i["Q"].shape[-2], i["K"].shape[-2]
    return np.tril(np.ones((t_q, t_k), dtype=bool))


# ---------------------------------------------------------------- references

def _mha_ref(m, i):
    w = {"w_q": i["q_proj_weight"], "w_k": i["k_proj_weight"], "w_v": i["v_proj_weight"], "w_o": i["o_proj_weight"]}
    zero = i["q_proj_weight"][0] * 0  # (C,) zeros of the backend's own kind: the handout's layers have no bias
    return m["multihead"].self_attention(i["in_features"], {**w, "b_q": zero, "b_k": zero, "b_v": zero, "b_o": zero},
                                         i["num_heads"], causal=True)[0]


def _mha_rope_ref(m, i):
    w = {"w_q": i["q_proj_weight"], "w_k": i["k_proj_weight"], "w_v": i["v_proj_weight"], "w_o": i["o_proj_weight"]}
    return m["llama_block"].rope_self_attention(i["in_features"], w, i["num_heads"], M.positions_of(i["token_positions"]),
                                                i["theta"], "interleaved")


def _block_ref(m, i):
    return m["llama_block"].llama_block(i["in_features"], M.to_ours(i["weights"]), i["num_heads"], None, i["theta"],
                                        "interleaved", M.EPS)


def _lm_ref(m, i):
    return m["llama"].llama_forward(M.to_ours(i["weights"]), i["in_indices"], M.lm_config(i))


# ---------------------------------------------------------------- variants

def _mha_variant(layout="interleaved", causal=True, rope=True):
    return M.cast(lambda i: M.mha(i["in_features"], i["q_proj_weight"], i["k_proj_weight"], i["v_proj_weight"],
                                  i["o_proj_weight"], i["num_heads"], i["token_positions"] if rope else None,
                                  i["theta"] if rope else None, layout, causal))


def _not_causal(rope):
    return Variant("cs336_mha_not_causal", "self-attention WITHOUT the causal mask (every token sees the future)",
                   "the handout's multi-head self-attention is causal: query t attends to keys 0..t only "
                   "(torch.triu(..., diagonal=1) masked out)", _mha_variant(causal=False, rope=rope),
                   _fix("numpy_impl.masks", "make_causal_mask", "j <= i"))


HALF = ("cs336_rope_half_layout", "RoPE pairing channel i with i + d/2 (Hugging Face's rotate_half layout)",
        "the handout's RoPE rotates ADJACENT pairs (x_2i, x_2i+1); rotate_half pairs x_i with x_(i+d/2): the same "
        "maths on permuted channels, so with the handout's weights the outputs differ",
        _fix("numpy_impl.positional", "_rotate_pairs", "pairs = x.reshape"))
POST = ("cs336_block_post_norm", "a POST-norm block: x = norm(x + attn(x)), then norm(x + ffn(x))",
        "the handout's block is pre-norm: x + attn(norm(x)), then x + ffn(norm(x)); the residual stream itself "
        "is never normalised", _fix("numpy_impl.llama_block", "llama_layer", "resid_attn = x + o_proj"))
SWAP = ("cs336_swiglu_gate_up_swapped", "SwiGLU with gate and up swapped: silu(x W3^T) * (x W1^T)",
        "W1 is the gate (inside SiLU) and W3 the up projection: silu(x W1^T) * (x W3^T), then W2",
        _fix("numpy_impl.swiglu", "swiglu_mlp_forward", "silu"))


def _v(spec, compute, kind="mistake"):
    name, says, why, fix = spec
    return Variant(name, says, why, compute, fix, kind=kind)


def _rms_variants():
    eps_out = Variant("cs336_rmsnorm_eps_outside_sqrt", "RMSNorm with eps added OUTSIDE the square root",
                      "the handout divides by sqrt(mean(x^2) + eps); sqrt(mean(x^2)) + eps differs for small activations",
                      M.cast(lambda i: M.rms(i["in_features"], i["weights"], i["eps"], eps_outside=True)),
                      _fix("numpy_impl.norms", "rms_norm_forward", "eps"))
    wrong_axis = tuple(Variant("cs336_rmsnorm_mean_wrong_axis", f"RMSNorm with the mean of x^2 taken over {what}",
                               "the mean runs over the last axis (d_model) only: each token's vector is normalised "
                               "on its own", M.cast(lambda i, a=a: M.rms(i["in_features"], i["weights"], i["eps"], axis=a)),
                               _fix("numpy_impl.norms", "rms_norm_forward", "axis=-1"))
                       for a, what in ((0, "the batch axis"), (1, "the sequence axis"), (None, "every axis")))
    return (eps_out,) + wrong_axis


def _naive_softmax(i):
    x = i["in_features"]
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(x)
        return e / e.sum(axis=i["dim"], keepdims=True)


def _naive_ce(i):
    x = i["inputs"]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        lse = np.log(np.exp(x).sum(-1))
        return np.asarray(np.mean(lse - x[np.arange(len(x)), i["targets"]]), dtype=x.dtype)


def _adamw_run(i, **knobs):
    """_conventions.adamw_numpy stepped over all the case's gradients, parameter by parameter."""
    out = []
    for k in R.ADAMW_ORDER:
        p = i["params"][k]
        m = v = np.zeros(p.shape)
        for t in range(1, i["grads"][k].shape[0] + 1):
            p, m, v = adamw_numpy(p, i["grads"][k][t - 1], m, v, t, i["lr"], tuple(i["betas"]), i["eps"],
                                  i["weight_decay"], **knobs)
        out.append(np.asarray(p).astype(i["params"][k].dtype))
    return tuple(out)


_CLIP_OUT = tuple(f"{k}.grad" for k in R.CLIP_ORDER if k not in R.FROZEN)
_SWEEP = {"kind": "sweep", "name": "run_get_lr_cosine_schedule", "over": "it", "values": "its", "args": R.SCHEDULE_ARGS}
_TOK = {"kind": "tokenizer", "name": "get_tokenizer", "vocab": "vocab", "merges": "merges",
        "specials": "special_tokens", "texts": "texts"}
_PACKED = ("vocab_ids", "vocab_bytes", "vocab_offsets", "merge_left", "merge_left_offsets", "merge_right",
           "merge_right_offsets")

EXERCISES = [
    Exercise(
        "run_linear", GROUP, "run_linear(d_in, d_out, weights, in_features)",
        "weights (d_out, d_in), in_features (..., d_in) -> (..., d_out): x W^T, no bias",
        "vs multihead.linear in the three backends (torch: F.linear)",
        target={"name": "run_linear", "args": ["d_in", "d_out", "weights", "in_features"]},
        reference=lambda m, i: m["multihead"].linear(i["in_features"], i["weights"]),
        cases=(_f32("(2, 6, 16) -> 24", M.linear_inputs((B, T)), 1e-2), _f32("(2, 3, 6, 16) -> 24", M.linear_inputs((B, 3, T)), 1e-2))),
    Exercise(
        "run_embedding", GROUP, "run_embedding(vocab_size, d_model, weights, token_ids)",
        "weights (vocab_size, d_model), token_ids (...) ints -> (..., d_model)",
        "vs layers.embedding in the three backends (torch: F.embedding)",
        target={"name": "run_embedding", "args": ["vocab_size", "d_model", "weights", "token_ids"]},
        reference=lambda m, i: m["layers"].embedding(i["token_ids"], i["weights"]),
        cases=(_f32("(2, 6) ids, vocab 50", M.embedding_inputs, 1e-2),)),
    Exercise(
        "run_silu", GROUP, "run_silu(in_features)", "in_features any shape -> same: x * sigmoid(x)",
        "vs swiglu.silu (torch: F.silu), inputs up to +-40",
        target={"name": "run_silu", "args": ["in_features"]},
        reference=lambda m, i: m["swiglu"].silu(i["in_features"]),
        cases=(_f32("(2, 5)", M.x_inputs((2, 5), 3.0), 1e-6), _f64("(2, 6, 16) up to +-40", M.x_inputs((B, T, C), 10.0)))),
    Exercise(
        "run_swiglu", GROUP, "run_swiglu(d_model, d_ff, w1_weight, w2_weight, w3_weight, in_features)",
        "w1, w3 (d_ff, d_model), w2 (d_model, d_ff), in_features (..., d_model) -> (..., d_model)",
        "vs swiglu.swiglu_mlp with w_gate = w1, w_up = w3, w_down = w2 (torch: Hugging Face's LlamaMLP)",
        target={"name": "run_swiglu", "args": ["d_model", "d_ff", "w1_weight", "w2_weight", "w3_weight", "in_features"]},
        reference=lambda m, i: m["swiglu"].swiglu_mlp(i["in_features"], {"w_gate": i["w1_weight"], "w_up": i["w3_weight"],
                                                                         "w_down": i["w2_weight"]}),
        cases=(_f32("(2, 6, 16), d_ff 24", M.swiglu_inputs, 1e-5),),
        variants=(_v(SWAP, M.cast(lambda i: M.swiglu(i["in_features"], i["w1_weight"], i["w2_weight"], i["w3_weight"],
                                                     swapped=True))),),
        parts=("run_silu", "run_linear")),
    Exercise(
        "run_rmsnorm", GROUP, "run_rmsnorm(d_model, eps, weights, in_features)",
        "weights (d_model,), in_features (..., d_model) -> same: x / sqrt(mean(x^2) + eps) * weights",
        "vs norms.rms_norm (torch: F.rms_norm), eps 1e-5, ordinary and tiny activations",
        target={"name": "run_rmsnorm", "args": ["d_model", "eps", "weights", "in_features"]},
        reference=lambda m, i: m["norms"].rms_norm(i["in_features"], i["weights"], i["eps"]),
        cases=(_f32("(2, 6, 16)", M.rms_inputs(1.0), 1e-6),
               # RMS 0.003: eps = 1e-5 is as large as mean(x^2), so eps outside the root shows.
               _f32("(2, 6, 16), activations of RMS 0.003", M.rms_inputs(0.003), 1e-6)),
        variants=_rms_variants()),
    Exercise(
        "run_softmax", GROUP, "run_softmax(in_features, dim)", "in_features any shape, dim -> same, summing to 1 along dim",
        "vs attention.softmax (torch: torch.softmax), logits up to 1e3 included",
        target={"name": "run_softmax", "args": ["in_features", "dim"]},
        reference=lambda m, i: m["attention"].softmax(i["in_features"], i["dim"]),
        cases=(_f32("(3, 5), dim -1", M.x_inputs((3, 5), dim=-1), 1e-6), _f64("(2, 6, 4), dim 1", M.x_inputs((2, 6, 4), dim=1)),
               _f32("(3, 5) logits ~ 1e3, dim -1", M.x_inputs((3, 5), 1e3, dim=-1), 1e-6)),
        variants=(Variant("cs336_softmax_no_max_shift", "exp(x) / sum(exp(x)) WITHOUT subtracting the max",
                          "exp(1000) overflows to inf and inf / inf is NaN; subtracting the max along dim cancels in "
                          "the ratio", _naive_softmax, _fix("numpy_impl.attention", "softmax", "np.max")),)),
    Exercise(
        "run_cross_entropy", GROUP, "run_cross_entropy(inputs, targets)",
        "inputs (batch, vocab) logits, targets (batch,) ints -> the mean loss, 0-d",
        "vs losses.cross_entropy (torch: F.cross_entropy), logits up to 1e3 included",
        target={"name": "run_cross_entropy", "args": ["inputs", "targets"]},
        reference=lambda m, i: m["losses"].cross_entropy(i["inputs"], i["targets"]),
        cases=(_f32("8 x 5", M.ce_inputs(8, 5), 1e-4), _f64("16 x 11", M.ce_inputs(16, 11)),
               _f32("8 x 5, logits x 1000", M.ce_inputs(8, 5, 1000.0), 1e-4)),
        variants=(Variant("cs336_ce_no_logsumexp_shift", "log(sum(exp(logits))) WITHOUT subtracting the max",
                          "exp(1000) overflows; log-sum-exp is max + log(sum(exp(x - max)))", _naive_ce,
                          _fix("numpy_impl.losses", "cross_entropy_forward", "max")),)),
    Exercise(
        "run_scaled_dot_product_attention", GROUP, "run_scaled_dot_product_attention(Q, K, V, mask=None)",
        "Q (..., queries, d_k), K (..., keys, d_k), V (..., keys, d_v), mask (..., queries, keys) bool, "
        "True = may attend -> (..., queries, d_v)",
        "vs attention.scaled_dot_product_attention (torch: F.scaled_dot_product_attention)",
        target={"name": "run_scaled_dot_product_attention", "args": ["Q", "K", "V", "mask"]},
        reference=lambda m, i: m["attention"].scaled_dot_product_attention(i["Q"], i["K"], i["V"], i["mask"])[0],
        cases=(_f32("3-D (2, 6, 16) vs 8 keys, masked", M.sdpa_inputs((B,), T, 8, C), 1e-6),
               _f64("4-D (2, 4, 6, 4) vs 8 keys, masked", M.sdpa_inputs((B, H), T, 8, 4)),
               _f32("3-D, no mask", M.sdpa_inputs((B,), T, 8, C, masked=False), 1e-6)),
        variants=(Variant("cs336_sdpa_mask_inverted", "attention with the mask INVERTED (True taken as blocked)",
                          "in the handout's mask True means the query MAY attend to that key; scores where it is "
                          "False get -inf", M.cast(lambda i: M.sdpa(i["Q"], i["K"], i["V"], i["mask"], invert=True)),
                          _fix("numpy_impl.attention", "apply_mask", "np.where")),
                  Variant("cs336_sdpa_no_scale", "attention WITHOUT the 1/sqrt(d_k) scale",
                          "scores are Q K^T / sqrt(d_k): unscaled, the softmax saturates as d_k grows",
                          M.cast(lambda i: M.sdpa(i["Q"], i["K"], i["V"], i["mask"], scale=False)),
                          _fix("numpy_impl.attention", "scaled_dot_product_attention", "math.sqrt")),
                  Variant("cs336_sdpa_causal_without_mask", "CAUSAL attention where no mask was given",
                          "mask=None means every query sees every key; a causal mask belongs to the caller "
                          "(multi-head self-attention builds one), not to attention itself",
                          M.cast(lambda i: M.sdpa(i["Q"], i["K"], i["V"], _causal_if_none(i))),
                          _fix("numpy_impl.attention", "scaled_dot_product_attention", "mask"))),
        parts=("run_softmax",)),
    Exercise(
        "run_multihead_self_attention", GROUP,
        "run_multihead_self_attention(d_model, num_heads, q_proj_weight, k_proj_weight, v_proj_weight, o_proj_weight, "
        "in_features)", "weights (d_model, d_model), in_features (..., seq, d_model) -> same; causal, no RoPE",
        "vs multihead.self_attention(causal=True) without biases (torch: F.scaled_dot_product_attention)",
        target={"name": "run_multihead_self_attention",
                "args": ["d_model", "num_heads", "q_proj_weight", "k_proj_weight", "v_proj_weight", "o_proj_weight",
                         "in_features"]},
        reference=_mha_ref, cases=(_f32("(2, 6, 16), 4 heads", M.mha_inputs, 1e-6),),
        variants=(_not_causal(rope=False),),
        parts=("run_scaled_dot_product_attention", "run_linear")),
    Exercise(
        "run_rope", GROUP, "run_rope(d_k, theta, max_seq_len, in_query_or_key, token_positions)",
        "in_query_or_key (..., seq, d_k), token_positions (..., seq) -> same shape; pairs (x_2i, x_2i+1)",
        "vs positional.apply_rope(layout='interleaved') (torch: the complex-number rotation)",
        target={"name": "run_rope", "args": ["d_k", "theta", "max_seq_len", "in_query_or_key", "token_positions"]},
        reference=lambda m, i: m["positional"].apply_rope(i["in_query_or_key"], i["token_positions"], i["theta"],
                                                          "interleaved"),
        cases=(_f32("(2, 6, 16), positions 0..5", M.rope_inputs((B,), False), 1e-6),
               _f32("(2, 6, 16), positions per sequence", M.rope_inputs((B,), True), 1e-6)),
        variants=(_v(HALF, M.cast(lambda i: M.rope(i["in_query_or_key"], i["token_positions"], i["theta"], "half"))),)),
    Exercise(
        "run_multihead_self_attention_with_rope", GROUP,
        "run_multihead_self_attention_with_rope(d_model, num_heads, max_seq_len, theta, q_proj_weight, k_proj_weight, "
        "v_proj_weight, o_proj_weight, in_features, token_positions=None)",
        "weights (d_model, d_model), in_features (..., seq, d_model), token_positions (..., seq) -> (..., seq, d_model)",
        "vs llama_block.rope_self_attention: causal, interleaved RoPE on queries and keys of each head",
        target={"name": "run_multihead_self_attention_with_rope",
                "args": ["d_model", "num_heads", "max_seq_len", "theta", "q_proj_weight", "k_proj_weight",
                         "v_proj_weight", "o_proj_weight", "in_features", "token_positions"]},
        reference=_mha_rope_ref,
        cases=(_f32("(2, 6, 16), positions 0..5", M.mha_rope_inputs(0), 1e-6),
               _f32("(2, 6, 16), positions 9..14", M.mha_rope_inputs(9), 1e-6)),
        variants=(_v(HALF, _mha_variant("half")), _not_causal(rope=True)),
        parts=("run_rope", "run_scaled_dot_product_attention", "run_linear")),
    Exercise(
        "run_transformer_block", GROUP,
        "run_transformer_block(d_model, num_heads, d_ff, max_seq_len, theta, weights, in_features)",
        "weights {attn.q_proj.weight, ..., ln1.weight, ffn.w1.weight, ...}, in_features (batch, seq, d_model) -> same",
        "vs llama_block.llama_block: pre-norm, RMSNorm eps 1e-5, causal RoPE attention, SwiGLU",
        target={"name": "run_transformer_block",
                "args": ["d_model", "num_heads", "d_ff", "max_seq_len", "theta", "weights", "in_features"]},
        reference=_block_ref, cases=(_f32("(2, 6, 16), 4 heads, d_ff 24", M.block_inputs, 1e-6),),
        variants=(_v(POST, M.cast(lambda i: M.block(i["in_features"], i["weights"], i["num_heads"], i["theta"],
                                                    post_norm=True))),
                  _v(HALF, M.cast(lambda i: M.block(i["in_features"], i["weights"], i["num_heads"], i["theta"],
                                                    layout="half"))),
                  _v(SWAP, M.cast(lambda i: M.block(i["in_features"], i["weights"], i["num_heads"], i["theta"],
                                                    swapped=True)))),
        parts=("run_rmsnorm", "run_multihead_self_attention_with_rope", "run_swiglu")),
    Exercise(
        "run_transformer_lm", GROUP,
        "run_transformer_lm(vocab_size, context_length, d_model, num_layers, num_heads, d_ff, rope_theta, weights, "
        "in_indices)", "weights {token_embeddings.weight, layers.{i}...., ln_final.weight, lm_head.weight}, "
        "in_indices (batch, seq) -> logits (batch, seq, vocab_size)",
        "vs llama.llama_forward (untied head, interleaved RoPE, n_kv_heads = num_heads; torch: our torch model)",
        target={"name": "run_transformer_lm",
                "args": ["vocab_size", "context_length", "d_model", "num_layers", "num_heads", "d_ff", "rope_theta",
                         "weights", "in_indices"]},
        reference=_lm_ref,
        cases=(_f32("2 layers, (2, 6) ids", M.lm_inputs(T), 1e-4), _f32("2 layers, (2, 3) ids (truncated input)", M.lm_inputs(3), 1e-4)),
        variants=(_v(POST, M.cast(lambda i: M.lm(i, post_norm=True))), _v(HALF, M.cast(lambda i: M.lm(i, layout="half"))),
                  _v(SWAP, M.cast(lambda i: M.lm(i, swapped=True)))),
        parts=("run_transformer_block", "run_embedding", "run_rmsnorm", "run_linear")),
    Exercise(
        "run_gradient_clipping", GROUP, "run_gradient_clipping(parameters, max_l2_norm)",
        "parameters: torch Parameters (one frozen, .grad None) -> None; each .grad scaled in place",
        "the gradients afterwards vs optim.clip_grad_norm (torch: torch.nn.utils.clip_grad_norm_)",
        target={"kind": "grad_clip", "name": "run_gradient_clipping", "params": "params", "grads": "grads",
                "order": list(R.CLIP_ORDER), "frozen": list(R.FROZEN), "args": ["max_l2_norm"]},
        reference=R.clip_ref, outputs=_CLIP_OUT,
        cases=(_f32("6 x (5, 5), one frozen, max norm 1e-2", R.clip_inputs(1e-2), 1e-6),
               _f32("6 x (5, 5), norm below max (no clipping)", R.clip_inputs(100.0), 1e-6),
               _f32("6 x (5, 5), max norm 1.0", R.clip_inputs(1.0), 1e-6)),
        variants=(Variant("cs336_clip_per_tensor", "each gradient clipped by its OWN norm",
                          "the handout clips the combined norm of ALL gradients: one coefficient "
                          "max_l2_norm / (||g|| + 1e-6) for every tensor", R.clip_per_tensor,
                          _fix("numpy_impl.optim", "clip_grad_norm", "total")),)),
    Exercise(
        "get_adamw_cls", GROUP, "get_adamw_cls()",
        "-> an optimizer class: cls(params, lr=, weight_decay=, betas=, eps=), stepped on given gradients",
        "the parameters after every step vs optim.adamw_step (torch: torch.optim.AdamW)",
        target={"kind": "optimizer", "name": "get_adamw_cls", "factory": True, "params": "params", "grads": "grads",
                "order": list(R.ADAMW_ORDER), "hyper": ["lr", "weight_decay", "betas", "eps"]},
        reference=R.adamw_ref, outputs=R.ADAMW_ORDER,
        cases=(_f32("the handout's settings, 100 steps", R.adamw_inputs(100, 1e-3, 0.01, (0.9, 0.999), 1e-8), 1e-4),
               # lr * wd = 0.02 per step: the order of decay and step shows.
               _f64("lr 0.1, weight decay 0.2, 20 steps", R.adamw_inputs(20, 0.1, 0.2, (0.9, 0.95), 1e-8)),
               # gradients ~1e-3 and eps 1e-3: where eps sits shows (a little decay, as the handout's test has).
               _f64("eps 1e-3 on small gradients, 20 steps", R.adamw_inputs(20, 1e-2, 0.01, (0.9, 0.999), 1e-3, 1e-3))),
        variants=adamw_conventions(_adamw_run) + adamw_mistakes(_adamw_run, prefix="cs336_adamw"),
        notes="AdamW as torch writes it (decay first, eps on sqrt(v_hat)) and as the handout writes it (decay "
              "after the step, lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)) both pass; the row names the form."),
    Exercise(
        "run_get_lr_cosine_schedule", GROUP,
        "run_get_lr_cosine_schedule(it, max_learning_rate, min_learning_rate, warmup_iters, cosine_cycle_iters)",
        "it an int -> the learning rate, a number; swept over it = 0 .. cosine_cycle_iters + 4",
        "vs schedule.lr_cosine_schedule (torch: CosineAnnealingLR's closed form after a linear warmup)",
        target=_SWEEP, reference=R.schedule_ref, outputs=("lr",),
        cases=(_f64("the handout's: max 1, min 0.1, warmup 7, cycle 21", R.schedule_inputs(1.0, 0.1, 7, 21)),
               _f64("max 6e-4, min 6e-5, warmup 10, cycle 100", R.schedule_inputs(6e-4, 6e-5, 10, 100))),
        variants=(Variant("cosine_warmup_plus_one", "a warmup of (it + 1) / warmup_iters * max",
                          "counting steps from 1; the handout warms up as it / warmup_iters, reaching max at it = Tw",
                          R.schedule_variant(plus_one=True), kind="convention"),
                  Variant("cs336_cosine_no_floor", "a schedule that falls to 0 after the cycle instead of min lr",
                          "after cosine_cycle_iters the learning rate stays at min_learning_rate",
                          R.schedule_variant(floor="zero"), _fix("numpy_impl.schedule", "lr_cosine_schedule", "np.where")),
                  Variant("cs336_cosine_no_floor", "a cosine that decays to 0 instead of to min lr",
                          "the cosine runs from max_learning_rate down to min_learning_rate, then stays there",
                          R.schedule_variant(floor="zero", cosine_to_zero=True),
                          _fix("numpy_impl.schedule", "lr_cosine_schedule", "min_learning_rate +")))),
    Exercise(
        "run_get_batch", GROUP, "run_get_batch(dataset, batch_size, context_length, device)",
        "dataset a 1-D NumPy array of ids -> x, y (batch_size, context_length) long tensors, y = x shifted by one",
        "300 draws on np.arange(100): contiguous windows, y = x + 1, every start 0 .. len - context_length - 1 "
        "drawn (the last included), counts within 5 sigma",
        target={"kind": "sampler", "name": "run_get_batch", "dataset": "dataset", "draws": 300,
                "args": ["batch_size", "context_length", "device"]},
        reference=R.batch_ref(300), outputs=("x", "y"), backends=("numpy",), grade=R.grade_batches,
        cases=(Case("np.arange(100), batch 32, context 7", R.batch_inputs(100, 32, 7), dtype="float64"),)),
    Exercise(
        "get_tokenizer", GROUP, "get_tokenizer(vocab, merges, special_tokens=None)",
        "vocab {id: bytes}, merges [(bytes, bytes)], special tokens -> an object with encode, decode, encode_iterable",
        "ids vs Hugging Face tokenizers on the same vocab and merges (overlapping specials, unicode), decode gives "
        "the text back, encode_iterable equals encode",
        target=_TOK, reference=X.tokenizer_ref, backends=("numpy",), grade=X.grade_tokenizer,
        outputs=("ids", "ids_offsets", "decoded", "decoded_offsets", "streamed", "streamed_offsets"),
        cases=(Case("vocab 320 trained here, <|endoftext|> and its double", X.tokenizer_inputs(320, [X.SPECIAL, X.DOUBLE]),
                    dtype="float64"),
               Case("vocab 300, no special tokens", X.tokenizer_inputs(300, None), dtype="float64"))),
    Exercise(
        "run_train_bpe", GROUP, "run_train_bpe(input_path, vocab_size, special_tokens)",
        "a UTF-8 corpus file, vocab_size, special tokens -> (vocab {id: bytes}, merges [(bytes, bytes)])",
        "merges in order and the vocab's tokens vs bpe.train (ties to the lexicographically greater pair)",
        target={"kind": "train_bpe", "name": "run_train_bpe", "corpus": "corpus", "args": ["vocab_size", "special_tokens"]},
        reference=X.train_ref, backends=("numpy",), grade=X.grade_train, outputs=_PACKED,
        cases=(Case("a 2 KB corpus, vocab 330, <|endoftext|>", X.train_inputs(330), dtype="float64"),)),
]
