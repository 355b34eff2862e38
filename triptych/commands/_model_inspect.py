"""`python cli.py model inspect` and `model attention`: a real model opened up, step by step, against
Hugging Face (triptych/pretrained/trace.py and trace_bert.py do the tracing; this file loads, prints and plots).

    model inspect --model smollm2|minilm "text" [--backend numpy,jax] [--layers 2 | 0,1,29] [--dtype ..]
        every step of every chosen layer (norms, q/k/v, RoPE, attention, MLP, residuals; the final
        norm and logits or the pooled embedding): shapes, L2 norms of NumPy | JAX | HF side by side,
        max |err| vs HF, the tolerance row, a verdict; one line names the first step beyond it and the
        exit code is 1 then. --layers N runs SmolLM2 cut to its first N layers; a list runs up to its
        last one and shows those layers (MiniLM always runs its 6).
    model attention --model smollm2|minilm "text" --layer L --head H [--out runs/attention]
        that head's softmax probabilities by our NumPy pieces vs HF's output_attentions (eager), as a
        table with the tokens on both sides and a PNG heatmap (ours beside |ours - HF|).

float32 compares with HF float32 (SmolLM2 under the tolerance table's real_model row, MiniLM under
the value row); float64 with HF float64 where HF's float32 RMSNorm and rotary are swapped for exact
ones (torch_ref.llama.hf_model(exact_float64=True), sdpa attention).
"""
from __future__ import annotations

import time

from triptych.common.argtypes import Default, output_dir, text, whole
from triptych.common.console import CLIError, add_report_flags

LAYERS_HELP = "--layers N: the first N layers; --layers 0,1,29 (or 7, for one): those layers"


def register_actions(msub) -> None:
    """Adds `inspect` and `attention` under `model`: triptych/commands/model.py calls this with its subparsers
    (the leading underscore keeps cli.py from registering this module as a command of its own)."""
    s = msub.add_parser("inspect", help="a real model step by step: NumPy | JAX | HF per layer and step, first divergence")
    s.add_argument("text", type=text, help="the input text (quote it)")
    s.add_argument("--model", choices=["smollm2", "minilm"], default="smollm2")
    s.add_argument("--backend", default="numpy,jax", help="our engines, comma-separated: numpy, jax (default both)")
    s.add_argument("--layers", default=None, help=f"{LAYERS_HELP} (default all)")
    s.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    s.add_argument("--json", action="store_true", help="print a JSON object instead of the table")
    add_report_flags(s)
    s.set_defaults(func=run_inspect)

    s = msub.add_parser("attention", help="one head's attention probabilities, ours vs HF: table and PNG heatmap")
    s.add_argument("text", type=text, help="the input text (quote it)")
    s.add_argument("--model", choices=["smollm2", "minilm"], default="smollm2")
    s.add_argument("--layer", type=whole(), required=True, help="the layer, from 0")
    s.add_argument("--head", type=whole(), required=True, help="the query head, from 0")
    s.add_argument("--out", type=output_dir, default=Default("runs/attention"), help="folder for the PNG (default runs/attention)")
    s.add_argument("--json", action="store_true", help="print a JSON object instead of the table")
    add_report_flags(s)
    s.set_defaults(func=run_attention)


# ----------------------------------------------------------------------------------------------
# loading


def parse_layers(text: str | None, n_total: int) -> tuple[int, list[int]]:
    """'--layers' -> (how many layers to run, which to show). None: all; '3': the first 3; '0,1,29'
    (or '7,'): those, running up to the last."""
    if text is None:
        return n_total, list(range(n_total))
    bad = CLIError(f"--layers: expected a count in [1, {n_total}] or layer indices in [0, {n_total - 1}] "
                   f"separated by commas, got {text!r}")
    try:
        if "," not in text:
            n = int(text)
            if not 1 <= n <= n_total:
                raise bad
            return n, list(range(n))
        shown = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise bad from None
    if not shown or shown[0] < 0 or shown[-1] >= n_total:
        raise bad
    return shown[-1] + 1, shown


def _text(text: str) -> str:
    if not text.strip():
        raise CLIError("text: expected a non-empty input text, got an empty one")
    return text


def _smollm2_inputs(text: str):
    """Token ids (1, T) and a readable label per token."""
    import numpy as np
    from tokenizers import Tokenizer

    from triptych.bpe.smollm2 import tokenizer_json

    tok = Tokenizer.from_file(str(tokenizer_json()))
    ids = tok.encode(_text(text)).ids
    if not ids:
        raise CLIError(f"text: expected text that makes at least one token, got {text!r}")
    return np.array([ids]), [tok.decode([i]).replace("\n", "\\n") or f"<{i}>" for i in ids]


def _minilm_inputs(text: str):
    from transformers.utils import logging

    from triptych.pretrained import minilm

    logging.disable_progress_bar()  # from_pretrained's "Loading weights" bar is noise on stderr here

    tok = minilm.tokenizer()
    batch = dict(tok(_text(text), return_tensors="np"))
    return batch, tok.convert_ids_to_tokens(batch["input_ids"][0].tolist())


def _smollm2_hf(params, config, dtype: str, eager: bool = False):
    import torch

    from torch_ref.llama import hf_model

    f64 = dtype == "float64" and not eager  # HF's eager softmax runs in float32; sdpa keeps float64
    return hf_model(params, config, dtype=getattr(torch, dtype), attn_implementation="sdpa" if f64 else "eager",
                    exact_float64=dtype == "float64")


def _tolerance(model: str, dtype: str):
    from triptych.common.tolerances import tolerance

    # SmolLM2's residual stream reaches 2e4 in a few channels; MiniLM's post-LN stream stays O(10).
    return tolerance(dtype, "real_model" if model == "smollm2" else "value")


def _trace(args, backends: list[str]) -> dict:
    """Load the model, trace it in each backend and in HF; returns what the table and JSON need."""
    from triptych.pretrained import trace

    seconds, traces = {}, {}
    t0 = time.perf_counter()
    if args.model == "smollm2":
        from triptych.pretrained import smollm2

        ids, labels = _smollm2_inputs(args.text)
        params, config = smollm2.load_llama(dtype=args.dtype)
        n_total = config.n_layers
        n_run, shown = parse_layers(args.layers, n_total)
        params, config = trace.cut_llama(params, config, n_run)
        seconds["load"] = time.perf_counter() - t0
        for b in backends:
            t0 = time.perf_counter()
            traces[b] = trace.trace_llama(params, ids, config, b)
            seconds[b] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = trace.hf_trace_llama(_smollm2_hf(params, config, args.dtype), ids)
    else:
        from triptych.pretrained import minilm, trace_bert

        batch, labels = _minilm_inputs(args.text)
        params, config = minilm.load(args.dtype)
        n_total = n_run = config.num_hidden_layers  # 6 small layers: always all of them
        shown = parse_layers(args.layers, n_total)[1]
        seconds["load"] = time.perf_counter() - t0
        for b in backends:
            t0 = time.perf_counter()
            traces[b] = trace_bert.trace_bert(params, batch, config, b)
            seconds[b] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = trace_bert.hf_trace_bert(minilm.hf_model(args.dtype), batch)
    seconds["hf"] = time.perf_counter() - t0
    tol = _tolerance(args.model, args.dtype)
    rows = trace.compare(traces, ref, tol)
    return dict(rows=rows, shown=shown, n_run=n_run, n_total=n_total, tokens=labels, tol=tol, seconds=seconds)


# ----------------------------------------------------------------------------------------------
# model inspect


def _backends(text: str) -> list[str]:
    from triptych.pretrained.trace import BACKENDS

    names = [b.strip() for b in text.split(",") if b.strip()]
    if not names or any(b not in BACKENDS for b in names):
        raise CLIError(f"--backend: expected a comma-separated list of {', '.join(BACKENDS)}, got {text!r}")
    return list(dict.fromkeys(names))


def _shape(row: dict) -> str:
    ours, hf = tuple(row["shape"]), tuple(row["hf_shape"])
    return str(ours) if ours == hf else f"{ours} / {hf}"


def divergence_line(first: dict | None, shown: list[int], n_rows: int, tol, dtype: str) -> str:
    from triptych.pretrained.trace import where

    if first is None:
        return (f"no divergence: all {n_rows} steps within the {dtype} tolerance "
                f"(atol={tol.atol:g}, rtol={tol.rtol:g})")
    worst = max(first["used"], key=first["used"].get)
    hidden = first["layer"] is not None and first["layer"] not in shown
    return (f"first divergence: {where(first)} ({worst}: max |err| {first['max_abs_err'][worst]:.2e}, "
            f"{first['used'][worst]:.3g}x the {dtype} tolerance)"
            + (f" - not shown: add --layers {first['layer']}," if hidden else ""))


def run_inspect(args) -> int:
    from triptych.commands._common import console, print_json, save_reports
    from triptych.pretrained.trace import first_divergence

    backends = _backends(args.backend)
    _text(args.text)
    t_all = time.perf_counter()
    r = _trace(args, backends)
    rows, shown, tol = r["rows"], r["shown"], r["tol"]
    first = first_divergence(rows)
    visible = [row for row in rows if row["layer"] is None or row["layer"] in shown]
    ok = first is None
    summary = divergence_line(first, shown, len(rows), tol, args.dtype)
    wall = time.perf_counter() - t_all
    if args.json:
        print_json({"model": args.model, "text": args.text, "tokens": r["tokens"], "dtype": args.dtype,
                    "backends": backends, "layers_run": r["n_run"], "layers_total": r["n_total"],
                    "layers_shown": shown, "tolerance": {"atol": tol.atol, "rtol": tol.rtol},
                    "rows": visible, "first_divergence": first, "summary": summary, "ok": ok,
                    "seconds": {k: round(v, 3) for k, v in {**r["seconds"], "total": wall}.items()}})
        save_reports(args)
        return 0 if ok else 1
    from rich.table import Table

    name = {"smollm2": "SmolLM2-135M", "minilm": "all-MiniLM-L6-v2"}[args.model]
    cut = f", cut to its first {r['n_run']} of {r['n_total']} layers" if r["n_run"] < r["n_total"] else ""
    table = Table(title=f"{name}{cut}, {len(r['tokens'])} tokens, {args.dtype}: ours vs Hugging Face, step by step")
    for col, just in (("layer", "right"), ("step", "left"), ("shape ours / HF", "left")):
        table.add_column(col, justify=just, no_wrap=True)
    labels = {"numpy": "NumPy", "jax": "JAX"}
    for b in backends:
        table.add_column(f"|{labels[b]}|", justify="right")
    table.add_column("|torch (HF)|", justify="right")
    for col in ("max |err| vs HF", "tolerance", "used", "verdict"):
        table.add_column(col, justify="right" if col != "verdict" else "left", no_wrap=True)
    tol_text = f"{tol.atol:.0e} + {tol.rtol:.0e}|ref|"
    last_layer = "start"
    for row in visible:
        if row["layer"] != last_layer and last_layer != "start":
            table.add_section()
        last_layer = row["layer"]
        used = max(row["used"].values())
        verdict = "[green]ok[/green]" if row["ok"] else "[red]BEYOND[/red] (" + ", ".join(
            b for b, u in row["used"].items() if u > 1) + ")"
        table.add_row("" if row["layer"] is None else str(row["layer"]), row["step"], _shape(row),
                      *[f"{row['norm'][b]:.5g}" for b in backends], f"{row['norm']['hf']:.5g}",
                      f"{max(row['max_abs_err'].values()):.2e}", tol_text, f"{used:.0%}" if used >= 0.1 else f"{used:.1%}", verdict)
    console.print(table)
    console.print(("[green]" if ok else "[red]") + summary + ("[/green]" if ok else "[/red]"), soft_wrap=True)
    sec = r["seconds"]
    console.print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in sec.items()) + f", total {wall:.1f}"
                  " ('used': the worst |err| / (atol + rtol |ref|) of the step; over 100% is beyond)", soft_wrap=True)
    save_reports(args)
    return 0 if ok else 1


# ----------------------------------------------------------------------------------------------
# model attention

MAX_TABLE_TOKENS = 16  # the terminal table shows at most this many tokens a side; the PNG shows all


def _table_positions(T: int) -> list[int | None]:
    """Which positions the table shows: all, or the first 4, a gap (None), and the last 11."""
    if T <= MAX_TABLE_TOKENS:
        return list(range(T))
    tail = MAX_TABLE_TOKENS - 5
    return [0, 1, 2, 3, None] + list(range(T - tail, T))


def _range_error(name: str, value: int, n: int, what: str) -> None:
    if not 0 <= value < n:
        raise CLIError(f"--{name}: expected an integer in [0, {n - 1}] (the model's {n} {what}), got {value}")


def _attention(args):
    """Ours and HF's probabilities for the chosen layer and head, (T, T) each, and the token labels."""
    if args.model == "smollm2":
        from triptych.pretrained import smollm2, trace

        ids, labels = _smollm2_inputs(args.text)
        params, config = smollm2.load_llama()
        _range_error("layer", args.layer, config.n_layers, "layers")
        _range_error("head", args.head, config.n_heads, "query heads")
        params, config = trace.cut_llama(params, config, args.layer + 1)  # later layers cannot matter
        ours = trace.llama_attention_weights(params, ids, config, args.layer)
        ref = trace.hf_llama_attention_weights(_smollm2_hf(params, config, "float32", eager=True), ids, args.layer)
    else:
        from triptych.pretrained import minilm, trace_bert

        batch, labels = _minilm_inputs(args.text)
        params, config = minilm.load()
        _range_error("layer", args.layer, config.num_hidden_layers, "layers")
        _range_error("head", args.head, config.num_attention_heads, "heads")
        ours = trace_bert.bert_attention_weights(params, batch, config, args.layer)
        ref = trace_bert.hf_bert_attention_weights(minilm.hf_model(), batch, args.layer)
    return ours[0, args.head], ref[0, args.head], labels


def plot_attention(ours, ref, labels: list[str], path, title: str) -> None:
    """Two heatmaps, query tokens down, key tokens across: ours, and |ours - HF|. Written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from triptych.common.io import atomic_save

    T = len(labels)
    side = min(16.0, 3.0 + 0.28 * T)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 2, side))
    step = max(1, T // 60)  # past ~60 tokens every label would overlap: keep every step-th
    ticks = list(range(0, T, step))
    for ax, data, name, cmap in ((axes[0], ours, "ours (NumPy)", "viridis"),
                                 (axes[1], np.abs(ours - ref), "|ours - HF|", "magma")):
        im = ax.imshow(data, cmap=cmap, vmin=0.0, vmax=1.0 if cmap == "viridis" else None)
        ax.set_xticks(ticks, [labels[i] for i in ticks], rotation=90, fontsize=7)
        ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=7)
        ax.set_xlabel("key token")
        ax.set_ylabel("query token")
        ax.set_title(name)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)


def run_attention(args) -> int:
    from pathlib import Path

    from triptych.commands._common import console, print_json, save_reports
    from triptych.common.tolerances import max_abs_err, within

    _text(args.text)
    t0 = time.perf_counter()
    ours, ref, labels = _attention(args)
    tol = _tolerance(args.model, "float32")
    err, ok = max_abs_err(ours, ref), within(ours, ref, tol)
    name = {"smollm2": "SmolLM2-135M", "minilm": "all-MiniLM-L6-v2"}[args.model]
    path = Path(args.out) / f"{args.model}-layer{args.layer}-head{args.head}.png"
    verdict = "within" if ok else "BEYOND"
    plot_attention(ours, ref, labels, path, f"{name}, layer {args.layer}, head {args.head}: "
                   f"max |ours - HF| = {err:.1e} ({verdict} tolerance)")
    wall = time.perf_counter() - t0
    if args.json:
        print_json({"model": args.model, "text": args.text, "tokens": labels, "layer": args.layer,
                    "head": args.head, "weights": ours.tolist(), "weights_hf": ref.tolist(), "max_abs_err": err,
                    "tolerance": {"atol": tol.atol, "rtol": tol.rtol}, "ok": bool(ok), "png": str(path),
                    "seconds": round(wall, 3)})
        save_reports(args)
        return 0 if ok else 1
    from triptych.commands._attention_view import attention_table, table_fits, top_keys_lines

    kind = "causal: a query sees only keys at or before it" if args.model == "smollm2" else "bidirectional"
    title = f"{name} layer {args.layer} head {args.head}: attention probabilities, ours (NumPy), {kind}"
    T = len(labels)
    shown = _table_positions(T)
    table = attention_table(ours, labels, shown, title, args.model == "smollm2")
    if table_fits(console, table):
        console.print(table)
    else:  # a table of slivers would show "…" in every cell: each query's strongest keys instead
        console.print(f"{title}; too wide for {console.width} columns (the heatmap has every cell), so each "
                      "query's strongest keys:", highlight=False)
        for line in top_keys_lines(ours, labels, console.width):
            console.print(line, highlight=False, markup=False)
    colour = "green" if ok else "red"
    console.print(f"max |ours - HF output_attentions| = {err:.2e}: [{colour}]{verdict}[/{colour}] the float32 "
                  f"tolerance (atol={tol.atol:g}, rtol={tol.rtol:g}); {wall:.1f} s")  # wrapped at spaces
    console.print(f"heatmap saved: {path}", soft_wrap=True, highlight=False)
    save_reports(args)
    return 0 if ok else 1
