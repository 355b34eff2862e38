"""Exercise B: self-attention as the one-line steps a reader writes, each checked against torch.

The lines in STEPS are executed exactly as printed (NumPy, one namespace), so what the reader sees is
what ran. Each result is compared with the project's numpy_impl function of the same name and with
torch: projections, head split, scores and masking with torch's own ops (F.linear, matmul, masked_fill,
the safe softmax), the attention weights and the final output with F.multi_head_attention_forward,
for 1 and 2 heads, with and without the causal mask.

Then the classic bug: zeroing the future AFTER the softmax. The future keys still sit in the
denominator, so rows stop summing to 1 and a future token changes the past's outputs (a leak).
"""
from __future__ import annotations

import math

import numpy as np

B, T, C = 1, 4, 8
SEED = 0
CASES = ((1, False), (1, True), (2, False), (2, True))  # (n_head, causal)

# (line as the reader writes it, the variable it defines, exercise B's name for the step).
# Executed in order by exec() on these fixed strings, so the printed code IS the computation.
STEPS = (
    ("q = x @ W_q.T + b_q", "q", "init_qkv_proj (query Linear)"),
    ("k = x @ W_k.T + b_k", "k", "init_qkv_proj (key Linear)"),
    ("v = x @ W_v.T + b_v", "v", "init_qkv_proj (value Linear)"),
    ("qh = q.reshape(B, T, nh, C // nh).transpose(0, 2, 1, 3)", "qh", "split_heads"),
    ("kh = k.reshape(B, T, nh, C // nh).transpose(0, 2, 1, 3)", "kh", "split_heads"),
    ("vh = v.reshape(B, T, nh, C // nh).transpose(0, 2, 1, 3)", "vh", "split_heads"),
    ("att = qh @ kh.swapaxes(-1, -2)", "att", "pairwise_similarities"),
    ("att = att * (1.0 / math.sqrt(C // nh))", "att_scaled", "attn_scaled"),
    ("mask = np.tril(np.ones((T, T), dtype=bool))", "mask", "make_causal_mask"),
    ("att = np.where(mask, att, -np.inf)", "att_masked", "apply_causal_mask"),
    ("att = np.exp(att - att.max(-1, keepdims=True)); att = att / att.sum(-1, keepdims=True)", "weights",
     "attn_softmax"),
    ("y = att @ vh", "y", "compute_outputs"),
    ("y = y.transpose(0, 2, 1, 3).reshape(B, T, C)", "merged", "merge_heads"),
    ("out = y @ W_o.T + b_o", "out", "output projection (self_attention)"),
)
MASK_STEPS = {"mask", "att_masked"}


def inputs(seed: int = SEED):
    from triptych.common.params import init_mha_params

    rng = np.random.default_rng(seed)
    return rng.standard_normal((B, T, C)), init_mha_params(C, seed=seed)


def run_lines(x: np.ndarray, params: dict, nh: int, causal: bool) -> dict[str, np.ndarray]:
    """Execute the printed lines; return the value each defines (keyed by STEPS' second field)."""
    ns = {"np": np, "math": math, "x": x, "B": B, "T": T, "C": C, "nh": nh,
          **{k.replace("w_", "W_"): v for k, v in params.items()}}
    values = {}
    for line, key, _ in STEPS:
        if key in MASK_STEPS and not causal:
            continue
        exec(line, ns)  # noqa: S102 - fixed teaching lines from STEPS, shown verbatim to the reader
        name = line.split("=")[0].strip()
        values[key] = np.array(ns[name], copy=True)
    return values


def library_values(x, params, nh: int, causal: bool) -> dict[str, np.ndarray]:
    """The same steps through numpy_impl's functions of the same names."""
    from numpy_impl import attention as A
    from numpy_impl import masks, multihead as MH

    p = params
    q, k, v = (MH.linear(x, p[f"w_{n}"], p[f"b_{n}"]) for n in "qkv")
    qh, kh, vh = (MH.split_heads(t, nh) for t in (q, k, v))
    att = A.pairwise_similarities(qh, kh)
    scaled = A.attn_scaled(att, 1.0 / math.sqrt(C // nh))
    mask = masks.make_causal_mask(T) if causal else None
    weights = A.attn_softmax(scaled, mask)
    y = A.compute_outputs(weights, vh)
    merged = MH.merge_heads(y)
    out = MH.self_attention(x, p, nh, causal=causal)[0]
    vals = {"q": q, "k": k, "v": v, "qh": qh, "kh": kh, "vh": vh, "att": att, "att_scaled": scaled,
            "weights": weights, "y": y, "merged": merged, "out": out}
    if causal:
        vals["mask"] = mask
        vals["att_masked"] = A.apply_mask(scaled, mask)
    return vals


def torch_values(x, params, nh: int, causal: bool) -> dict[str, tuple[np.ndarray, str]]:
    """torch's value for every step and where it came from. Weights and output: F.multi_head_attention_forward."""
    import torch

    import torch_ref.multihead as TM
    from triptych.common.params import mha_params_to_torch

    xt = torch.from_numpy(x)
    sd = mha_params_to_torch(params)
    w_in, b_in = sd["in_proj_weight"].chunk(3), sd["in_proj_bias"].chunk(3)  # how MHA unpacks in_proj
    q, k, v = (torch.nn.functional.linear(xt, w, b) for w, b in zip(w_in, b_in))
    qh, kh, vh = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in (q, k, v))
    att = torch.matmul(qh, kh.transpose(-2, -1))
    scaled = att * (1.0 / math.sqrt(C // nh))
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    tp = {k_: torch.from_numpy(v_) for k_, v_ in params.items()}
    out, weights = TM.self_attention(xt, tp, nh, causal=causal)  # F.multi_head_attention_forward
    y = torch.matmul(weights, vh)
    merged = y.transpose(1, 2).reshape(B, T, C)
    src_lin = "F.linear, in_proj rows"
    vals = {"q": (q, src_lin), "k": (k, src_lin), "v": (v, src_lin),
            "qh": (qh, "view + transpose"), "kh": (kh, "view + transpose"),
            "vh": (vh, "view + transpose"), "att": (att, "torch.matmul"), "att_scaled": (scaled, "torch multiply"),
            "weights": (weights, "MHA forward weights"), "y": (y, "torch.matmul"),
            "merged": (merged, "transpose + reshape"), "out": (out, "MHA forward output")}
    if causal:
        vals["mask"] = (mask, "torch.tril")
        vals["att_masked"] = (scaled.masked_fill(~mask, float("-inf")), "masked_fill(-inf)")
    return {k_: (t.detach().numpy(), src) for k_, (t, src) in vals.items()}


def _err(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b|, treating equal infinities (masked scores) as equal."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    both_inf = np.isinf(a) & np.isinf(b) & (np.sign(a) == np.sign(b))
    return float(np.max(np.abs(np.where(both_inf, 0.0, a) - np.where(both_inf, 0.0, b))))


def masking_demo(x, params) -> dict:
    """-inf before the softmax vs zeroing after it, one head, and a change to the LAST token."""
    import torch

    from numpy_impl import attention as A
    from numpy_impl.masks import make_causal_mask

    mask = make_causal_mask(T)

    def both(xx):
        q = xx @ params["w_q"].T + params["b_q"]
        k = xx @ params["w_k"].T + params["b_k"]
        v = xx @ params["w_v"].T + params["b_v"]
        s = A.attn_scaled(A.pairwise_similarities(q, k), 1.0 / math.sqrt(C))[0]
        right = A.attn_softmax(s, mask)
        wrong = A.wrong_zero_after_softmax(s, mask)
        return s, right, wrong, right @ v[0], wrong @ v[0]

    s, right, wrong, out_right, out_wrong = both(x)
    x2 = x.copy()
    x2[0, -1] += 1.0  # change only the future (the last token)
    _, _, _, out_right2, out_wrong2 = both(x2)

    # d (weights[0, 0]) / d scores[0, j]: the first query may see key 0 only.
    up = np.zeros_like(s)
    up[0, 0] = 1.0
    g_wrong_np = A.wrong_zero_after_softmax_backward(up, s, mask)[0]
    g_right_np = A.attn_softmax_backward(up, right)[0]
    st = torch.tensor(s, requires_grad=True)
    mt = torch.from_numpy(mask)
    (g_wrong_t,) = torch.autograd.grad((torch.softmax(st, -1) * mt)[0, 0], [st])
    return {
        "scores": s.tolist(), "right": right.tolist(), "wrong": wrong.tolist(),
        "row_sums_right": right.sum(-1).tolist(), "row_sums_wrong": wrong.sum(-1).tolist(),
        "leaked": (1.0 - wrong.sum(-1)).tolist(),
        "past_change_right": float(np.max(np.abs(out_right2[:-1] - out_right[:-1]))),
        "past_change_wrong": float(np.max(np.abs(out_wrong2[:-1] - out_wrong[:-1]))),
        "grad_row0_wrong_numpy": g_wrong_np.tolist(), "grad_row0_wrong_torch": g_wrong_t[0].numpy().tolist(),
        "grad_row0_right_numpy": g_right_np.tolist(),
    }


def _jax_check(x, params, nh: int, causal: bool, mine: dict) -> dict[str, float]:
    """jax_impl's self_attention (jitted) against the executed lines: output and weights."""
    import jax.numpy as jnp

    import jax_impl.multihead as JM

    out, weights = JM.self_attention(jnp.asarray(x), {k: jnp.asarray(v) for k, v in params.items()}, nh, causal=causal)
    return {"out": _err(mine["out"], np.asarray(out)), "weights": _err(mine["weights"], np.asarray(weights))}


def compute(seed: int = SEED) -> dict:
    x, params = inputs(seed)
    cases = []
    for nh, causal in CASES:
        mine = run_lines(x, params, nh, causal)
        lib = library_values(x, params, nh, causal)
        ref = torch_values(x, params, nh, causal)
        steps = []
        for line, key, name in STEPS:
            if key not in mine:
                continue
            steps.append({"step": name, "line": line, "shape": list(mine[key].shape),
                          "vs_numpy_impl": _err(mine[key], lib[key]), "vs_torch": _err(mine[key], ref[key][0]),
                          "torch_source": ref[key][1]})
        cases.append({"n_head": nh, "causal": causal, "steps": steps,
                      "max_vs_torch": max(s["vs_torch"] for s in steps),
                      "jax_vs_lines": _jax_check(x, params, nh, causal, mine)})
    from triptych.common.tolerances import tolerance

    tol = tolerance("float64")
    return {"seed": seed, "shape": [B, T, C], "cases": cases, "masking": masking_demo(x, params),
            "atol": tol.atol,
            "ok": all(c["max_vs_torch"] <= tol.atol and max(c["jax_vs_lines"].values()) <= tol.atol for c in cases)}


def passed(result: dict) -> bool:
    return result["ok"]


def to_json(result: dict) -> dict:
    return result


def render(result: dict, console) -> None:
    from triptych.lessons import _render as R

    cases = result["cases"]
    by_case = {(c["n_head"], c["causal"]): {s["line"]: s for s in c["steps"]} for c in cases}
    full = next(c for c in cases if c["n_head"] == 2 and c["causal"])
    rows, listing = [], []
    for i, s in enumerate(full["steps"], 1):
        listing.append(R.code(f"{i:>2}  {s['line']:<88} # {s['step']}"))
        cells = []
        for nh, causal in CASES:
            hit = by_case[(nh, causal)].get(s["line"])
            cells.append("-" if hit is None else R.err(hit["vs_torch"]))
        rows.append((str(i), s["step"], "x".join(map(str, s["shape"])), R.err(s["vs_numpy_impl"]), *cells,
                     s["torch_source"]))
    cols = ["line", "exercise B step", "shape (2 heads)", "vs numpy_impl",
            "torch 1h", "torch 1h causal", "torch 2h", "torch 2h causal", "torch value from"]
    console.print(R.panel(
        f"B. Self-attention in one-line steps (B={B}, T={T}, C={C}, seed {result['seed']}, float64)",
        R.note("The lines as a reader writes them; each ran exactly as printed (nh = number of heads):"),
        *listing,
        R.note("Max |difference| of each line's result from the numpy_impl function of the same name, and from "
               "torch in four settings (1 or 2 heads, with or without the causal mask; '-' = line not used). "
               "The weights and the output come from F.multi_head_attention_forward."),
        R.table(cols, rows, justify=["left", "left", "left"] + ["right"] * 5 + ["left"]),
        "JAX (jax_impl.multihead.self_attention, jitted) vs the lines, output / weights: " + "; ".join(
            f"{c['n_head']}h{' causal' if c['causal'] else ''} {R.err(c['jax_vs_lines']['out'])} / "
            f"{R.err(c['jax_vs_lines']['weights'])}" for c in cases),
        R.note(f"worst difference from torch: {R.err(max(c['max_vs_torch'] for c in cases))} "
               f"(float64 tolerance {R.err(result['atol'])}): {'all three backends agree' if result['ok'] else 'DISAGREE'}",
               style="bold"),
    ))

    m = result["masking"]
    labels = [f"q{i}" for i in range(T)]
    cols = [f"k{j}" for j in range(T)]
    rows = [(f"q{i}", R.num(m["row_sums_right"][i], 6), R.num(m["row_sums_wrong"][i], 6), R.num(m["leaked"][i], 6))
            for i in range(T)]
    console.print(R.panel(
        "Masking: -inf BEFORE the softmax (right) vs zeroing AFTER it (wrong)",
        R.matrix(m["right"], labels, cols, digits=4, title="right: softmax(where(mask, scores, -inf))"),
        R.matrix(m["wrong"], labels, cols, digits=4, title="wrong: softmax(scores) * mask"),
        R.table(["query", "row sum (right)", "row sum (wrong)", "weight lost to the future"], rows),
        f"change only the LAST token's input, then look at the outputs of positions 0..{T - 2}: "
        f"right way moves them by {R.err(m['past_change_right'])}, wrong way by {R.err(m['past_change_wrong'])}",
        f"d weight[0,0] / d scores[0, :] (right, NumPy backward): {R.vec(m['grad_row0_right_numpy'])}",
        f"d weight[0,0] / d scores[0, :] (wrong, NumPy backward): {R.vec(m['grad_row0_wrong_numpy'])}",
        f"d weight[0,0] / d scores[0, :] (wrong, torch autograd): {R.vec(m['grad_row0_wrong_torch'])}",
        R.note("Zeroing after the softmax leaves the future keys in the denominator: rows no longer sum to 1 "
               "(the missing mass is what the future took), and the past's outputs and gradients depend on "
               "future scores. In training the model can read the future through that denominator. With -inf "
               "the future gets exactly zero weight and exactly zero gradient."),
    ))
