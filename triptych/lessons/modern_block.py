"""One Llama-style decoder block, step by step, on a tiny input: NumPy, JAX and torch side by side.

    h   = rms_norm(x, w_attn_norm)                       pre-norm: no mean, no bias
    q   = h W_q^T, k = h W_k^T, v = h W_v^T              no biases; k and v have n_kv_heads heads
    q, k rotated by RoPE (layout "half")                 positions enter here and nowhere else
    a   = grouped_query_attention(q, k, v, causal)       each KV head serves n_heads / n_kv_heads queries
    x1  = x + merge_heads(a) W_o^T                       first residual
    out = x1 + swiglu_mlp(rms_norm(x1, w_mlp_norm))      second residual

Every step runs in the three backends through their functions of the same name; the torch column
is torch_ref (F.rms_norm, HF's apply_rotary_pos_emb, SDPA with enable_gqa, HF's LlamaMLP). The
block's output is then checked against an independent referee, Hugging Face's own
LlamaDecoderLayer with the same weights.

Last, the two RoPE layouts. Meta's original Llama code (and llama.cpp) pairs channels (2i, 2i+1),
Hugging Face pairs (i, i + D/2). Permuting the rows of W_q and W_k within each head
(rope_half_to_interleaved) makes the interleaved block compute exactly what the half block did:
q and k come out with their channels permuted alike, so every dot product q . k, and hence the
attention and the block's output, is unchanged. This is how Meta checkpoints become HF ones.
"""
from __future__ import annotations

import numpy as np

B, T, D_MODEL, N_HEADS, N_KV_HEADS, D_FF = 1, 5, 16, 4, 2, 40
D_HEAD = D_MODEL // N_HEADS
EPS, ROPE_BASE = 1e-5, 10000.0
SEED = 0

# (label, the line as a reader writes it); values come out of block_steps in this order.
STEPS = (
    ("attention norm", "h = rms_norm(x, w_attn_norm, eps)"),
    ("query heads", "q = split_heads(h @ W_q.T, n_heads)"),
    ("key heads (n_kv_heads)", "k = split_heads(h @ W_k.T, n_kv_heads)"),
    ("value heads (n_kv_heads)", "v = split_heads(h @ W_v.T, n_kv_heads)"),
    ("rotated queries", "q = apply_rope(q, base=10000, layout='half')"),
    ("rotated keys", "k = apply_rope(k, base=10000, layout='half')"),
    ("grouped-query attention", "a, w = grouped_query_attention(q, k, v, mask=causal)"),
    ("attention weights", "(same call) w"),
    ("first residual", "x1 = x + merge_heads(a) @ W_o.T"),
    ("MLP norm", "h2 = rms_norm(x1, w_mlp_norm, eps)"),
    ("SwiGLU MLP", "f = (silu(h2 W_gate^T) * (h2 W_up^T)) W_down^T"),
    ("block output", "out = x1 + f"),
)


def inputs(seed: int = SEED, dtype=np.float64) -> dict:
    rng = np.random.default_rng(seed)

    def w(*shape):
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(dtype)

    return {
        "x": rng.standard_normal((B, T, D_MODEL)).astype(dtype),
        "w_attn_norm": (1.0 + 0.1 * rng.standard_normal(D_MODEL)).astype(dtype),
        "w_q": w(N_HEADS * D_HEAD, D_MODEL), "w_k": w(N_KV_HEADS * D_HEAD, D_MODEL),
        "w_v": w(N_KV_HEADS * D_HEAD, D_MODEL), "w_o": w(D_MODEL, N_HEADS * D_HEAD),
        "w_mlp_norm": (1.0 + 0.1 * rng.standard_normal(D_MODEL)).astype(dtype),
        "mlp": {"w_gate": w(D_FF, D_MODEL), "w_up": w(D_FF, D_MODEL), "w_down": w(D_MODEL, D_FF)},
        "causal": np.tril(np.ones((T, T), dtype=bool)),
    }


def block_steps(m: dict, i: dict, layout: str = "half") -> tuple:
    """The block in one backend (m: its modules, i: inputs in its array type), every step's value."""
    mh, nrm, pos = m["multihead"], m["norms"], m["positional"]
    h = nrm.rms_norm(i["x"], i["w_attn_norm"], EPS)
    q = mh.split_heads(mh.linear(h, i["w_q"]), N_HEADS)
    k = mh.split_heads(mh.linear(h, i["w_k"]), N_KV_HEADS)
    v = mh.split_heads(mh.linear(h, i["w_v"]), N_KV_HEADS)
    q_rot = pos.apply_rope(q, base=ROPE_BASE, layout=layout)
    k_rot = pos.apply_rope(k, base=ROPE_BASE, layout=layout)
    a, weights = m["gqa"].grouped_query_attention(q_rot, k_rot, v, mask=i["causal"])
    x1 = i["x"] + mh.linear(mh.merge_heads(a), i["w_o"])
    h2 = nrm.rms_norm(x1, i["w_mlp_norm"], EPS)
    f = m["swiglu"].swiglu_mlp(h2, i["mlp"])
    return h, q, k, v, q_rot, k_rot, a, weights, x1, h2, f, x1 + f


def hf_block(i: dict) -> np.ndarray:
    """Hugging Face's LlamaDecoderLayer with the same weights: the independent referee. float32:
    LlamaRMSNorm computes in float32 whatever the input dtype, so float64 would
    be judged against a float32 norm anyway."""
    import torch
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    config = LlamaConfig(hidden_size=D_MODEL, intermediate_size=D_FF, num_attention_heads=N_HEADS,
                         num_key_value_heads=N_KV_HEADS, rms_norm_eps=EPS, rope_theta=ROPE_BASE,
                         num_hidden_layers=1, vocab_size=8, attn_implementation="sdpa")
    layer = LlamaDecoderLayer(config, layer_idx=0).eval()
    t = {k: torch.tensor(np.asarray(v), dtype=torch.float32) for k, v in i.items() if k.startswith("w_")}
    mlp = {k: torch.tensor(v, dtype=torch.float32) for k, v in i["mlp"].items()}
    with torch.no_grad():
        layer.input_layernorm.weight.copy_(t["w_attn_norm"])
        layer.post_attention_layernorm.weight.copy_(t["w_mlp_norm"])
        for name in "qkvo":
            getattr(layer.self_attn, f"{name}_proj").weight.copy_(t[f"w_{name}"])
        for name in ("gate", "up", "down"):
            getattr(layer.mlp, f"{name}_proj").weight.copy_(mlp[f"w_{name}"])
        x = torch.tensor(i["x"], dtype=torch.float32)
        position_ids = torch.arange(T)[None]
        cos, sin = LlamaRotaryEmbedding(config)(x, position_ids)
        # attention_mask=None: HF's SDPA path then runs is_causal=True for T > 1 (semantics.md).
        out = layer(x, attention_mask=None, position_ids=position_ids, position_embeddings=(cos, sin))
    out = out[0] if isinstance(out, tuple) else out
    return out.numpy()


def layout_demo(i: dict) -> dict:
    """The interleaved block with permuted W_q, W_k rows vs the half block with the original ones."""
    from triptych.crosscheck.cases import run_on_backends
    from numpy_impl.positional import rope_half_to_interleaved

    permuted = {**i, "w_q": rope_half_to_interleaved(i["w_q"], N_HEADS),
                "w_k": rope_half_to_interleaved(i["w_k"], N_KV_HEADS)}
    half = run_on_backends(lambda m, a: block_steps(m, a, "half"), i)
    inter = run_on_backends(lambda m, a: block_steps(m, a, "interleaved"), permuted)
    naive = run_on_backends(lambda m, a: block_steps(m, a, "interleaved"), i, only=("numpy",))
    out = len(STEPS) - 1
    rows = []
    for b in ("numpy", "jax", "torch"):
        q_h, q_i = half[b][4], inter[b][4]
        rows.append({
            "backend": b,
            # The rotated queries differ (their channels are permuted) ...
            "q_rot_differs_by": float(np.max(np.abs(q_h - q_i))),
            # ... by exactly that permutation: undo it and they are equal.
            "q_rot_after_unpermuting": float(np.max(np.abs(q_h - _interleaved_to_half_channels(q_i)))),
            "weights": float(np.max(np.abs(half[b][7] - inter[b][7]))),
            "output": float(np.max(np.abs(half[b][out] - inter[b][out]))),
        })
    return {"rows": rows, "unpermuted_output_err": float(np.max(np.abs(half["numpy"][out] - naive["numpy"][out])))}


def _interleaved_to_half_channels(x: np.ndarray) -> np.ndarray:
    """Channel 2i -> i and 2i + 1 -> i + D/2 along the last axis (the row permutation, on activations)."""
    return np.concatenate([x[..., 0::2], x[..., 1::2]], axis=-1)


def compute(seed: int = SEED) -> dict:
    from triptych.common.tolerances import tolerance, within
    from triptych.crosscheck.cases import compare, run_on_backends

    i64 = inputs(seed)
    outs = run_on_backends(block_steps, i64)
    steps = []
    for n, (label, line) in enumerate(STEPS):
        row = compare(label, {b: [outs[b][n]] for b in outs}, "float64")
        steps.append({"step": label, "line": line, "shape": list(outs["torch"][n].shape), "l2": row["l2"],
                      "max_abs_err": row["max_abs_err"], "ok": row["ok"]})

    i32 = inputs(seed, np.float32)
    hf = hf_block(i32)
    ours32 = run_on_backends(block_steps, i32)
    tol32 = tolerance("float32")
    hf_errs = {b: float(np.max(np.abs(ours32[b][-1] - hf))) for b in ours32}
    hf_ok = all(within(ours32[b][-1], hf, tol32) for b in ours32)

    layouts = layout_demo(i64)
    tol64 = tolerance("float64")
    layouts_ok = all(r["q_rot_after_unpermuting"] <= tol64.atol and r["output"] <= tol64.atol
                     and r["weights"] <= tol64.atol and r["q_rot_differs_by"] > 1e-3 for r in layouts["rows"])
    return {"seed": seed, "config": {"batch": B, "tokens": T, "d_model": D_MODEL, "n_heads": N_HEADS,
                                     "n_kv_heads": N_KV_HEADS, "d_ff": D_FF, "eps": EPS, "rope_base": ROPE_BASE},
            "steps": steps, "hf_block_err": hf_errs, "hf_ok": hf_ok, "hf_tol": {"atol": tol32.atol, "rtol": tol32.rtol},
            "layouts": layouts, "layouts_ok": layouts_ok, "atol": tol64.atol,
            "ok": all(s["ok"] for s in steps) and hf_ok and layouts_ok}


def passed(result: dict) -> bool:
    return result["ok"]


def to_json(result: dict) -> dict:
    return result


def render(result: dict, console) -> None:
    from rich.text import Text

    from triptych.lessons import _render as R

    c = result["config"]
    rows = [(str(n), s["step"], Text(s["line"], style="cyan"), "x".join(map(str, s["shape"])),
             *(R.num(s["l2"][b], 6) for b in ("numpy", "jax", "torch")), R.err(s["max_abs_err"]),
             Text("ok", style="green") if s["ok"] else Text("FAIL", style="bold red"))
            for n, s in enumerate(result["steps"], 1)]
    console.print(R.panel(
        f"A Llama-style block (batch {c['batch']}, {c['tokens']} tokens, d_model {c['d_model']}, "
        f"{c['n_heads']} query heads, {c['n_kv_heads']} KV heads, d_ff {c['d_ff']}; float64, seed {result['seed']})",
        R.note("Each line ran in NumPy, JAX and torch through the function of the same name; the L2 norms sit "
               "side by side, the error is the worst of NumPy and JAX against torch."),
        R.table(["", "step", "line", "shape", "L2 numpy", "L2 jax", "L2 torch", "max |err|", ""], rows,
                justify=["right", "left", "left", "left", "right", "right", "right", "right", "center"]),
        "Hugging Face's LlamaDecoderLayer, same weights, float32 (its RMSNorm computes in float32): "
        + ", ".join(f"{b} {R.err(e)}" for b, e in result["hf_block_err"].items())
        + f" (tolerance atol {result['hf_tol']['atol']:g} + rtol {result['hf_tol']['rtol']:g} |ref|): "
        + ("agree" if result["hf_ok"] else "DISAGREE"),
    ))
    lay = result["layouts"]
    rows = [(r["backend"], R.err(r["q_rot_differs_by"]), R.err(r["q_rot_after_unpermuting"]), R.err(r["weights"]),
             R.err(r["output"])) for r in lay["rows"]]
    console.print(R.panel(
        "Two RoPE layouts, one model: half (HF, GPT-NeoX) vs interleaved (Meta, GPT-J, llama.cpp)",
        R.note("Half pairs channel i with i + D/2, interleaved pairs 2i with 2i + 1. Reorder the rows of W_q and "
               "W_k within each head (rope_half_to_interleaved: new row 2i = old row i, new row 2i+1 = old row "
               "i + D/2) and run the block with layout='interleaved':"),
        R.table(["backend", "rotated q differs by", "after un-permuting channels", "attention weights", "block output"],
                rows),
        f"The same weights NOT permuted, interleaved layout: the output moves by {R.err(lay['unpermuted_output_err'])}. "
        "So a checkpoint must be converted with its layout (llama.cpp stores W_q, W_k permuted; HF's GGUF loader "
        "undoes it).",
        R.note(f"float64 tolerance {R.err(result['atol'])}: "
               + ("the permutation is exact in all three backends" if result["layouts_ok"] else "DISAGREE"),
               style="bold"),
    ))
