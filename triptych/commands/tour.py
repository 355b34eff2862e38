"""`python cli.py tour`: the main walkthrough (exercises.md sections A and B).

Every step is computed three times (NumPy, JAX, torch) on the same seeded inputs; the table shows the
tensor's shape, its L2 norm in each backend and the max error against torch. Exit code 1 if any step
disagrees beyond the tolerance table."""
from __future__ import annotations

from triptych.common.argtypes import SEED
from triptych.common.console import add_report_flags

ORDER = 10

# Exercise A's setting: batch 1, sequence 3, d_model 8, 2 heads (head size 4); cross-attention keys
# come from a second sequence of length 5.
B, T, D_MODEL, N_HEADS, T_CROSS = 1, 3, 8, 2, 5


def register(sub) -> None:
    p = sub.add_parser("tour", help="guided walkthrough: multi-head attention from parts, three backends side by side")
    p.add_argument("--seed", type=SEED, default=0, help="seed for inputs and weights (default 0)")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--json", action="store_true", help="print the steps as JSON rows instead of panels")
    add_report_flags(p)
    p.set_defaults(func=run)


def _sections(seed: int, dtype: str):
    """(section title, intro, [(step name, code shown to the reader, run(mods, inputs))], inputs)."""
    import numpy as np

    from triptych.common.params import init_mha_params

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, D_MODEL)).astype(dtype)
    y = rng.standard_normal((B, T_CROSS, D_MODEL)).astype(dtype)
    params = init_mha_params(D_MODEL, seed=seed, dtype=dtype)
    inputs = {"x": x, "y": y, "params": params}
    H = N_HEADS

    def qkv(m, i):
        return m["multihead"].get_multihead_qkv(i["x"], i["params"], H)

    def causal(m, i):
        return m["masks"].make_causal_mask(T)

    a = [
        ("get_multihead_qkv -> q", "q, k, v = get_multihead_qkv(x, params, n_heads=2)", lambda m, i: qkv(m, i)[0]),
        ("get_multihead_qkv -> k", "(same call) k", lambda m, i: qkv(m, i)[1]),
        ("get_multihead_qkv -> v", "(same call) v", lambda m, i: qkv(m, i)[2]),
        ("attention weights", "out, w = calculate_multihead_attention(q, k, v)",
         lambda m, i: m["multihead"].calculate_multihead_attention(*qkv(m, i))[1]),
        ("self-attention output", "merge_heads(out) @ W_o.T + b_o",
         lambda m, i: m["multihead"].multihead_attention(i["x"], i["params"], H)[0]),
        ("causal self-attention output", "multihead_attention(x, params, 2, mask=make_causal_mask(3))",
         lambda m, i: m["multihead"].multihead_attention(i["x"], i["params"], H, mask=causal(m, i))[0]),
        ("MultiHeadAttention: self", "MultiHeadAttention(8, 2, params)(x)",
         lambda m, i: m["multihead"].MultiHeadAttention(D_MODEL, H, params=i["params"])(i["x"])[0]),
        ("MultiHeadAttention: masked self", "mha(x, mask=causal)",
         lambda m, i: m["multihead"].MultiHeadAttention(D_MODEL, H, params=i["params"])(i["x"], mask=causal(m, i))[0]),
        ("MultiHeadAttention: cross (T_q=3, T_k=5)", "mha(x, y, y)",
         lambda m, i: m["multihead"].MultiHeadAttention(D_MODEL, H, params=i["params"])(i["x"], i["y"], i["y"])[0]),
        ("PositionalEncoding", "PositionalEncoding(d_model=8)(x)",
         lambda m, i: m["positional"].PositionalEncoding(D_MODEL)(i["x"])),
    ]

    def proj(m, i):  # init_qkv_proj: three Linear(n_embd -> n_embd), bias on
        lin = m["multihead"].linear
        p = i["params"]
        return lin(i["x"], p["w_q"], p["b_q"]), lin(i["x"], p["w_k"], p["b_k"]), lin(i["x"], p["w_v"], p["b_v"])

    def heads(m, i):
        return tuple(m["multihead"].split_heads(t, H) for t in proj(m, i))

    def scores(m, i):
        q, k, _ = heads(m, i)
        return m["attention"].attn_scaled(m["attention"].pairwise_similarities(q, k), 1.0 / (D_MODEL // H) ** 0.5)

    def weights(m, i, masked):
        s = m["attention"].apply_mask(scores(m, i), causal(m, i)) if masked else scores(m, i)
        return m["attention"].attn_softmax(s)

    def outputs(m, i, masked):
        return m["attention"].compute_outputs(weights(m, i, masked), heads(m, i)[2])

    b = [
        ("init_qkv_proj -> q", "q = x @ W_q.T + b_q    (B, T, C)", lambda m, i: proj(m, i)[0]),
        ("split_heads", "(B, T, C) -> (B, nh, T, hs)", lambda m, i: heads(m, i)[0]),
        ("pairwise_similarities + attn_scaled", "q @ k.transpose(-2, -1) * (1 / sqrt(C / nh))", scores),
        ("attn_softmax", "softmax over keys", lambda m, i: weights(m, i, False)),
        ("make_causal_mask", "lower-triangular (T, T), True = may attend", lambda m, i: causal(m, i)),
        ("apply_causal_mask + attn_softmax", "scores.masked_fill(~mask, -inf) then softmax",
         lambda m, i: weights(m, i, True)),
        ("compute_outputs (causal)", "A' @ v", lambda m, i: outputs(m, i, True)),
        ("merge_heads", "(B, nh, T, hs) -> (B, T, C)", lambda m, i: m["multihead"].merge_heads(outputs(m, i, True))),
        ("self_attention (causal, torch: F.multi_head_attention_forward)", "all of it stitched, with W_o",
         lambda m, i: m["multihead"].self_attention(i["x"], i["params"], H, causal=True)[0]),
        ("self_attention (no mask, 1 head)", "the same with n_head = 1",
         lambda m, i: m["multihead"].self_attention(i["x"], i["params"], 1)[0]),
    ]
    return [
        ("A. Multi-head attention from parts",
         f"batch {B}, sequence {T}, d_model {D_MODEL}, {N_HEADS} heads (head size {D_MODEL // N_HEADS}); "
         f"seed {seed}, {dtype}. torch column: F.multi_head_attention_forward / nn.MultiheadAttention / SDPA.", a),
        ("B. Attention decomposed into one-line steps",
         "the same input, written the way the course writes it, one tensor per line.", b),
    ], inputs


def run(args) -> int:
    import numpy as np
    from rich import box
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    from triptych.commands._common import console, print_json, save_reports
    from triptych.crosscheck.cases import compare, run_on_backends

    sections, inputs = _sections(args.seed, args.dtype)
    rows = []
    for title, intro, steps in sections:
        # Below about 110 columns (an 80-column terminal, CI's) the code column would squeeze every
        # other one to "split_…": leave it out and print the norms with 5 digits instead of 7.
        narrow = console.width < 110
        columns = [("step", "left"), ("code", "left"), ("shape", "left"), ("L2 numpy", "right"), ("L2 jax", "right"),
                   ("L2 torch", "right"), ("max |err| vs torch", "right"), ("", "center")]
        table = Table(show_lines=False, expand=False, box=box.SIMPLE_HEAD if narrow else box.HEAVY_HEAD)
        for col, justify in columns:
            if narrow and col in ("code", ""):  # narrow: the verdict goes into the |err| cell
                continue
            short = {"L2 numpy": "numpy", "L2 jax": "jax", "L2 torch": "torch", "max |err| vs torch": "|err|"}
            table.add_column(short.get(col, col) if narrow else col, justify=justify,
                             no_wrap=narrow and col == "shape", min_width=19 if narrow and col == "step" else None)
        if narrow:
            table.caption = "numpy, jax, torch: L2 norm of each backend's output; |err|: max vs torch"
        l2_format = ".5g" if narrow else ".6f"
        for name, code, fn in steps:
            outs = run_on_backends(fn, inputs)
            # Masks are booleans: compare them as 0/1 numbers.
            outs = {k: [o.astype(args.dtype) if o.dtype == np.bool_ else o for o in v] for k, v in outs.items()}
            row = compare(name, outs, args.dtype)
            row.pop("outputs")
            row["section"] = title
            rows.append(row)
            cells = [name] + ([] if narrow else [f"[dim]{code}[/]"]) + [row["shape"]]
            cells += [format(row["l2"][b], l2_format) for b in ("numpy", "jax", "torch")]
            verdict = "[green]ok[/]" if row["ok"] else "[bold red]FAIL[/]"
            err = f"{row['max_abs_err']:.1e}"
            table.add_row(*cells, *([f"{err} {verdict}"] if narrow else [err, verdict]))
        if not args.json:
            console.print(Panel(Group(Text(intro, style="italic"), table), title=f"[bold]{title}", title_align="left"))

    ok = all(r["ok"] for r in rows)
    if args.json:
        print_json(rows)
        save_reports(args)
        return 0 if ok else 1
    worst = max(r["max_abs_err"] for r in rows)
    console.print(
        f"{sum(r['ok'] for r in rows)}/{len(rows)} steps agree with torch (worst |err| {worst:.1e}; "
        f"the course accepts 1e-3, our {args.dtype} tolerance is atol={rows[0]['atol']:g}, rtol={rows[0]['rtol']:g})."
    )
    from triptych.common.invocation import command as hint  # the form that runs here: `triptych` or `python cli.py`

    where_next = Table.grid(padding=(0, 2))
    where_next.add_column(no_wrap=True)
    where_next.add_column()
    for command, what in (
        (hint("parity", "--dtype", "float32"), "every op at B=4, H=8, T=128, d_head=64"),
        (hint("lesson", "list"), "guided lessons: crafted queries, argmax attention, reading values out of "
                                      "averages, decomposed attention, tokenizers, the masked-LM toy"),
        (hint("calc", "aether"), "parameter and memory accounting (exercises G)"),
        (hint("gpt", "train", "--backend", "numpy"), "a tiny GPT trained with hand-written gradients"),
    ):
        where_next.add_row(command, what)
    console.print(Panel(
        where_next,
        title="Where next", border_style="cyan"))
    # The course's own exercise, graded: the next step once the walkthrough has shown the parts.
    # One command a line, so a narrow terminal never breaks a command in two.
    console.print(f"Your turn: [bold]{hint('exercise', 'new', 'course-a', '--out', 'my_mha.py')}[/]\n"
                  f"fill it in, then [bold]{hint('check', 'my_mha.py')}[/]", highlight=False)
    save_reports(args)
    return 0 if ok else 1
