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


def _inputs(seed: int, dtype: str) -> dict:
    """x (B, T, d), y (B, T_cross, d) and the attention's weights, all from `seed`."""
    import numpy as np

    from triptych.common.params import init_mha_params

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, D_MODEL)).astype(dtype)
    y = rng.standard_normal((B, T_CROSS, D_MODEL)).astype(dtype)
    params = init_mha_params(D_MODEL, seed=seed, dtype=dtype)
    return {"x": x, "y": y, "params": params}


# Each step below is run(mods, inputs): `mods` is one backend's modules by name ("multihead",
# "attention", "masks", "positional"), so the same line runs on NumPy, JAX and torch.

def _qkv(m, i):
    return m["multihead"].get_multihead_qkv(i["x"], i["params"], N_HEADS)


def _causal(m, i):
    return m["masks"].make_causal_mask(T)


def _mha(m, i):
    return m["multihead"].MultiHeadAttention(D_MODEL, N_HEADS, params=i["params"])


def _section_a_steps() -> list:
    H = N_HEADS
    return [
        ("get_multihead_qkv -> q", "q, k, v = get_multihead_qkv(x, params, n_heads=2)", lambda m, i: _qkv(m, i)[0]),
        ("get_multihead_qkv -> k", "(same call) k", lambda m, i: _qkv(m, i)[1]),
        ("get_multihead_qkv -> v", "(same call) v", lambda m, i: _qkv(m, i)[2]),
        ("attention weights", "out, w = calculate_multihead_attention(q, k, v)",
         lambda m, i: m["multihead"].calculate_multihead_attention(*_qkv(m, i))[1]),
        ("self-attention output", "merge_heads(out) @ W_o.T + b_o",
         lambda m, i: m["multihead"].multihead_attention(i["x"], i["params"], H)[0]),
        ("causal self-attention output", "multihead_attention(x, params, 2, mask=make_causal_mask(3))",
         lambda m, i: m["multihead"].multihead_attention(i["x"], i["params"], H, mask=_causal(m, i))[0]),
        ("MultiHeadAttention: self", "MultiHeadAttention(8, 2, params)(x)",
         lambda m, i: _mha(m, i)(i["x"])[0]),
        ("MultiHeadAttention: masked self", "mha(x, mask=causal)",
         lambda m, i: _mha(m, i)(i["x"], mask=_causal(m, i))[0]),
        ("MultiHeadAttention: cross (T_q=3, T_k=5)", "mha(x, y, y)",
         lambda m, i: _mha(m, i)(i["x"], i["y"], i["y"])[0]),
        ("PositionalEncoding", "PositionalEncoding(d_model=8)(x)",
         lambda m, i: m["positional"].PositionalEncoding(D_MODEL)(i["x"])),
    ]


def _proj(m, i):  # init_qkv_proj: three Linear(n_embd -> n_embd), bias on
    lin = m["multihead"].linear
    p = i["params"]
    return lin(i["x"], p["w_q"], p["b_q"]), lin(i["x"], p["w_k"], p["b_k"]), lin(i["x"], p["w_v"], p["b_v"])


def _heads(m, i):
    return tuple(m["multihead"].split_heads(t, N_HEADS) for t in _proj(m, i))


def _scores(m, i):
    q, k, _ = _heads(m, i)
    return m["attention"].attn_scaled(m["attention"].pairwise_similarities(q, k), 1.0 / (D_MODEL // N_HEADS) ** 0.5)


def _weights(m, i, masked):
    s = m["attention"].apply_mask(_scores(m, i), _causal(m, i)) if masked else _scores(m, i)
    return m["attention"].attn_softmax(s)


def _outputs(m, i, masked):
    return m["attention"].compute_outputs(_weights(m, i, masked), _heads(m, i)[2])


def _section_b_steps() -> list:
    return [
        ("init_qkv_proj -> q", "q = x @ W_q.T + b_q    (B, T, C)", lambda m, i: _proj(m, i)[0]),
        ("split_heads", "(B, T, C) -> (B, nh, T, hs)", lambda m, i: _heads(m, i)[0]),
        ("pairwise_similarities + attn_scaled", "q @ k.transpose(-2, -1) * (1 / sqrt(C / nh))", _scores),
        ("attn_softmax", "softmax over keys", lambda m, i: _weights(m, i, False)),
        ("make_causal_mask", "lower-triangular (T, T), True = may attend", lambda m, i: _causal(m, i)),
        ("apply_causal_mask + attn_softmax", "scores.masked_fill(~mask, -inf) then softmax",
         lambda m, i: _weights(m, i, True)),
        ("compute_outputs (causal)", "A' @ v", lambda m, i: _outputs(m, i, True)),
        ("merge_heads", "(B, nh, T, hs) -> (B, T, C)", lambda m, i: m["multihead"].merge_heads(_outputs(m, i, True))),
        ("self_attention (causal, torch: F.multi_head_attention_forward)", "all of it stitched, with W_o",
         lambda m, i: m["multihead"].self_attention(i["x"], i["params"], N_HEADS, causal=True)[0]),
        ("self_attention (no mask, 1 head)", "the same with n_head = 1",
         lambda m, i: m["multihead"].self_attention(i["x"], i["params"], 1)[0]),
    ]


def _sections(seed: int, dtype: str):
    """(section title, intro, [(step name, code shown to the reader, run(mods, inputs))], inputs)."""
    return [
        ("A. Multi-head attention from parts",
         f"batch {B}, sequence {T}, d_model {D_MODEL}, {N_HEADS} heads (head size {D_MODEL // N_HEADS}); "
         f"seed {seed}, {dtype}. torch column: F.multi_head_attention_forward / nn.MultiheadAttention / SDPA.",
         _section_a_steps()),
        ("B. Attention decomposed into one-line steps",
         "the same input, written the way the course writes it, one tensor per line.", _section_b_steps()),
    ], _inputs(seed, dtype)


def _step_table(narrow: bool):
    """The empty table of one section. Below about 110 columns (an 80-column terminal, CI's) the code
    column would squeeze every other one to "split_…": leave it out, and the verdict goes into the |err| cell."""
    from rich import box
    from rich.table import Table

    columns = [("step", "left"), ("code", "left"), ("shape", "left"), ("L2 numpy", "right"), ("L2 jax", "right"),
               ("L2 torch", "right"), ("max |err| vs torch", "right"), ("", "center")]
    table = Table(show_lines=False, expand=False, box=box.SIMPLE_HEAD if narrow else box.HEAVY_HEAD)
    for col, justify in columns:
        if narrow and col in ("code", ""):
            continue
        short = {"L2 numpy": "numpy", "L2 jax": "jax", "L2 torch": "torch", "max |err| vs torch": "|err|"}
        table.add_column(short.get(col, col) if narrow else col, justify=justify,
                         no_wrap=narrow and col == "shape", min_width=19 if narrow and col == "step" else None)
    if narrow:
        table.caption = "numpy, jax, torch: L2 norm of each backend's output; |err|: max vs torch"
    return table


def _run_step(fn, inputs: dict, name: str, dtype: str) -> dict:
    """One step on the three backends, compared against torch (the row of --json)."""
    import numpy as np

    from triptych.crosscheck.cases import compare, run_on_backends

    outs = run_on_backends(fn, inputs)
    # Masks are booleans: compare them as 0/1 numbers.
    outs = {k: [o.astype(dtype) if o.dtype == np.bool_ else o for o in v] for k, v in outs.items()}
    row = compare(name, outs, dtype)
    row.pop("outputs")
    return row


def _add_row(table, row: dict, name: str, code: str, narrow: bool) -> None:
    cells = [name] + ([] if narrow else [f"[dim]{code}[/]"]) + [row["shape"]]
    l2_format = ".5g" if narrow else ".6f"  # narrow: 5 digits instead of 7
    cells += [format(row["l2"][b], l2_format) for b in ("numpy", "jax", "torch")]
    verdict = "[green]ok[/]" if row["ok"] else "[bold red]FAIL[/]"
    err = f"{row['max_abs_err']:.1e}"
    table.add_row(*cells, *([f"{err} {verdict}"] if narrow else [err, verdict]))


def _print_where_next(console) -> None:
    from rich.panel import Panel
    from rich.table import Table

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


def run(args) -> int:
    from rich.console import Group
    from rich.panel import Panel
    from rich.text import Text

    from triptych.commands._common import console, print_json, save_reports

    sections, inputs = _sections(args.seed, args.dtype)
    rows = []
    for title, intro, steps in sections:
        narrow = console.width < 110
        table = _step_table(narrow)
        for name, code, fn in steps:
            row = _run_step(fn, inputs, name, args.dtype)
            row["section"] = title
            rows.append(row)
            _add_row(table, row, name, code, narrow)
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
    _print_where_next(console)
    save_reports(args)
    return 0 if ok else 1
