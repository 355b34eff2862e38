"""`python cli.py calc ...`: parameter, memory, LoRA and loss calculators (package `accounting`).

    calc aether            exercise G.2: a 48-layer decoder's score memory, FFN size, LoRA and Adam state
    calc encoder-course    exercise G.3: a small RoBERTa-style encoder, by formula and instantiated in torch
    calc mlm-toy           exercise G.1: probability of the correct word and cross-entropy
    calc model --layers .. any architecture from flags: GPT-2 to Llama (--kv-heads, --head-dim, --ffn swiglu,
                           --norm rmsnorm), a KV-cache line; --check-torch counts a torch and an HF build too
    calc loss --logits ..  probability and cross-entropy for any logits vector
    calc lora-demo         train only A and B of a frozen layer (NumPy backward) to fit a low-rank change

Every number comes with its formula, numbers substituted; --json prints {key: value, ...} plus the
details (units, GB/GiB, formulas) under "details".
"""
from __future__ import annotations

from triptych.common.argtypes import SEED, Default, count, output_dir, positive_number, whole

ORDER = 40


def _add_json(p) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON object keyed by quantity instead of a table")


def _add_exercises(calc) -> None:
    """The course's fixed scenarios: G.2 (aether), G.3 (encoder-course), G.1 (mlm-toy)."""
    s = calc.add_parser("aether", help="G.2: GPT-style decoder L=48, H=6144, h=48, T=16384")
    _add_json(s)
    s.set_defaults(func=run_aether)
    s = calc.add_parser("encoder-course", help="G.3: RoBERTa-style encoder, formula vs instantiated torch model")
    _add_json(s)
    s.set_defaults(func=run_encoder_course)
    s = calc.add_parser("mlm-toy", help="G.1: p(correct word) and cross-entropy for the masked-LM toy")
    _add_json(s)
    s.set_defaults(func=run_mlm_toy)


def _add_model(calc) -> None:
    """calc model: any architecture from flags, with memory, LoRA and optimizer-state settings."""
    s = calc.add_parser("model", help="any architecture from flags: parameters, score memory, LoRA, optimizer state")
    s.add_argument("--layers", type=count(), required=True)
    s.add_argument("--hidden", type=count(), required=True, help="d_model")
    s.add_argument("--heads", type=count(), required=True)
    s.add_argument("--context", type=count(), required=True, help="tokens per sequence")
    s.add_argument("--vocab", type=count(), default=None, help="vocabulary size (without it: no embedding/head/total)")
    ffn = s.add_mutually_exclusive_group()
    ffn.add_argument("--ffn-inner", type=count(), default=None, help="FFN inner size d_ff")
    ffn.add_argument("--ffn-mult", type=count(), default=4, help="d_ff = mult * d_model (default 4)")
    s.add_argument("--ffn", choices=["gelu", "swiglu"], default="gelu",
                   help="gelu: d -> d_ff -> d; swiglu: gate, up and down (Llama; GeGLU counts the same)")
    s.add_argument("--norm", choices=["layernorm", "rmsnorm"], default="layernorm",
                   help="rmsnorm has a weight and no bias (Llama)")
    s.add_argument("--kv-heads", type=count(), default=None,
                   help="key/value heads, a divisor of --heads (grouped-query attention; 1 = multi-query)")
    s.add_argument("--head-dim", type=count(), default=None,
                   help="size of one head (default hidden / heads; heads x head-dim may differ from hidden: Gemma)")
    s.add_argument("--kind", choices=["decoder", "encoder"], default="decoder")
    s.add_argument("--positions", choices=["learned", "sinusoidal", "rope", "none"], default="learned")
    s.add_argument("--n-positions", type=count(), default=None, help="rows of the learned position table (default: context)")
    s.add_argument("--no-bias", action="store_true", help="no biases on Linear and LayerNorm layers")
    s.add_argument("--qkv-bias", action="store_true", help="biases on W_q, W_k, W_v even with --no-bias (Qwen2)")
    s.add_argument("--untied", action="store_true", help="decoder LM head not tied to the token embedding")
    s.add_argument("--token-types", type=whole(), default=0, help="segment-embedding rows (BERT 2, RoBERTa 1)")
    s.add_argument("--pooler", action="store_true", help="encoder: add BERT's d x d pooler")
    s.add_argument("--bytes-per-score", type=count(16), default=2, help="bytes per attention score (default 2: fp16)")
    s.add_argument("--batch", type=count(), default=1, help="sequences for the score and KV-cache lines (default 1)")
    s.add_argument("--kv-bytes", type=count(16), default=2, help="bytes per cached key/value number (default 2: fp16/bf16)")
    s.add_argument("--lora-rank", type=count(), default=8)
    s.add_argument("--lora-targets", default="q,v", help="comma list from q,k,v,o,ffn_in,ffn_out (default q,v)")
    s.add_argument("--optimizer", choices=["adam", "adamw", "sgd-momentum", "sgd"], default="adam")
    s.add_argument("--bytes-per-state", type=count(16), default=4, help="bytes per optimizer state value (default 4: fp32)")
    s.add_argument("--check-torch", action="store_true",
                   help="also build the model in torch and as its Hugging Face family where one has this shape "
                        "(GPT-2, GPT-NeoX, Llama, Qwen2; meta device: no memory) and compare counts")
    _add_json(s)
    s.set_defaults(func=run_model)


def _add_loss(calc) -> None:
    """calc loss: probability and cross-entropy for given logits."""
    s = calc.add_parser("loss", help="probability of the target and cross-entropy from logits")
    s.add_argument("--logits", required=True, help="comma-separated numbers, e.g. 0.5,0.1,3.0")
    s.add_argument("--target", type=whole(), required=True, help="index of the correct class")
    s.add_argument("--labels", default=None, help="optional comma-separated class names")
    _add_json(s)
    s.set_defaults(func=run_loss)


def _add_lora_demo(calc) -> None:
    """calc lora-demo: train only A and B of a frozen layer."""
    s = calc.add_parser("lora-demo", help="train only LoRA's A and B (NumPy backward) to fit a low-rank change")
    s.add_argument("--d-in", type=count(), default=64)
    s.add_argument("--d-out", type=count(), default=48)
    s.add_argument("--rank", type=count(), default=4, help="adapter rank r")
    s.add_argument("--target-rank", type=count(), default=4, help="rank of the change to learn")
    s.add_argument("--steps", type=count(), default=300)
    s.add_argument("--lr", type=positive_number(), default=0.02)
    s.add_argument("--seed", type=SEED, default=0)
    s.add_argument("--out", type=output_dir, default=Default("runs/lora_demo"), help="folder for loss.png and result.json")
    _add_json(s)
    s.set_defaults(func=run_lora_demo)


def register(sub) -> None:
    p = sub.add_parser("calc", help="parameter / memory / LoRA / loss calculators (exercises G.1-G.3) and a LoRA demo")
    calc = p.add_subparsers(dest="calc_command", metavar="SCENARIO")
    calc.required = True
    _add_exercises(calc)
    _add_model(calc)
    _add_loss(calc)
    _add_lora_demo(calc)


# ----------------------------------------------------------------------------------------------

def _report(title: str, quantities, args, arch=None, extra: dict | None = None) -> int:
    from triptych.calculators.quantity import GB, GiB
    from triptych.commands._common import console, print_json

    if args.json:
        obj = {q.key: q.value for q in quantities}
        if extra:
            obj.update(extra)
        if arch is not None:
            obj["architecture"] = {k: v for k, v in vars(arch).items() if k != "name"}
        obj["details"] = {q.key: q.to_json() for q in quantities}
        print_json(obj)
        return 0
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    table.add_column("quantity", overflow="fold", max_width=42)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("formula, numbers substituted", overflow="fold")
    for q in quantities:
        if q.unit == "bytes":
            value = f"{q.value:,} bytes\n{q.value / GB:,.3f} GB\n{q.value / GiB:,.3f} GiB"
        else:
            value = q.value_text()
        table.add_row(q.label, value, q.formula)
    if arch is not None:
        console.print(f"[bold]{arch.name or 'model'}[/]: {arch.describe()}")
    console.print(table)
    return 0


def run_aether(args) -> int:
    from triptych.calculators.scenarios import aether

    arch, qs = aether()
    return _report("Exercise G.2 (aether): score memory, FFN parameters, LoRA and its Adam state", qs, args, arch)


def run_encoder_course(args) -> int:
    from triptych.commands._common import console

    from triptych.calculators.scenarios import encoder_course

    arch, qs = encoder_course(instantiate=True)
    values = {q.key: q.value for q in qs}
    rc = _report("Exercise G.3 (encoder-course): trainable parameters, formula and torch", qs, args, arch)
    same = values["params_formula"] == values["params_torch"] and values["params_roberta_formula"] == values[
        "params_roberta_torch"]
    if not args.json:
        console.print("Assumptions: FFN inner size = d_model (W1, W2 are d x d); 256 + 2 = 258 learned positions; "
                      "biases on every projection and LayerNorm; 2 LayerNorms per layer + 1 on the embeddings; "
                      "no token-type table, no pooler, no output head.")
        console.print(f"formula {values['params_formula']:,} vs torch {values['params_torch']:,}: "
                      + ("[green]equal[/]" if same else "[bold red]DIFFERENT[/]"))
    return rc if same else 1


def run_mlm_toy(args) -> int:
    from triptych.calculators.scenarios import MLM_TOY_LABELS, MLM_TOY_LOGITS, MLM_TOY_TARGET, mlm_toy
    from triptych.commands._common import console

    _, qs = mlm_toy()
    if not args.json:
        console.print("vocabulary " + ", ".join(f"{w}={z:g}" for w, z in zip(MLM_TOY_LABELS, MLM_TOY_LOGITS))
                      + f"; correct word '{MLM_TOY_LABELS[MLM_TOY_TARGET]}' (index {MLM_TOY_TARGET})")
    return _report("Exercise G.1 (mlm-toy): probability of the correct word and cross-entropy", qs, args)


def _csv_floats(text: str, name: str) -> list[float]:
    from triptych.commands._common import CLIError

    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CLIError(f"{name}: expected comma-separated numbers, got {text!r}") from None


def run_loss(args) -> int:
    from triptych.calculators.loss import target_probability_and_loss
    from triptych.commands._common import CLIError

    logits = _csv_floats(args.logits, "--logits")
    labels = [w.strip() for w in args.labels.split(",")] if args.labels else None
    if labels is not None and len(labels) != len(logits):
        raise CLIError(f"--labels: expected {len(logits)} names (one per logit), got {len(labels)}")
    qs = target_probability_and_loss(logits, args.target, labels)
    return _report("Probability of the target and cross-entropy", qs, args)


def run_model(args) -> int:
    from triptych.calculators.architecture import Architecture, count_parameters
    from triptych.calculators.lora import lora_params
    from triptych.calculators.memory import attention_scores_bytes, kv_cache_bytes, optimizer_state_bytes, ratio

    arch = Architecture(
        n_layers=args.layers, d_model=args.hidden, n_heads=args.heads, context=args.context, vocab_size=args.vocab,
        d_ff=args.ffn_inner, ffn_mult=args.ffn_mult, positions=args.positions, n_positions=args.n_positions,
        bias=not args.no_bias, tied_embeddings=not args.untied, kind=args.kind, token_types=args.token_types,
        pooler=args.pooler, n_kv_heads=args.kv_heads, head_dim=args.head_dim, ffn=args.ffn, norm=args.norm,
        qkv_bias=True if args.qkv_bias else None)
    targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
    qs = count_parameters(arch)
    by_key = {q.key: q for q in qs}
    qs.append(attention_scores_bytes(arch.n_heads, arch.context, args.bytes_per_score, batch=args.batch))
    if arch.kind == "decoder":  # an encoder reads its whole input at once: nothing is cached
        qs.extend(kv_cache_bytes(arch, arch.context, args.batch, args.kv_bytes))
    lora = lora_params(arch, args.lora_rank, targets)
    qs.append(lora)
    lora_state = optimizer_state_bytes(lora.value, args.optimizer, args.bytes_per_state, key="lora_optimizer_bytes",
                                       what="the LoRA parameters")
    qs.append(lora_state)
    # Compare with the full model's state when its size is known, else with the FFN's (as G.2 does).
    full = by_key.get("total_params", by_key["ffn_params"])
    full_key = "full" if "total_params" in by_key else "ffn"
    full_state = optimizer_state_bytes(full.value, args.optimizer, args.bytes_per_state, key=f"{full_key}_optimizer_bytes",
                                       what="all parameters" if full_key == "full" else "the FFN parameters")
    qs.append(full_state)
    qs.append(ratio(lora_state, full_state, f"lora_to_{full_key}_optimizer_ratio",
                    f"LoRA {args.optimizer} state / {'full' if full_key == 'full' else 'FFN'} {args.optimizer} state"))
    extra = None
    if args.check_torch:
        from triptych.calculators.torch_models import torch_counts
        from triptych.commands._common import CLIError

        if arch.vocab_size is None:
            raise CLIError("--check-torch: expected --vocab too (a torch model needs its embedding table)")
        counted, family, same = torch_counts(arch)
        qs.extend(counted)
        extra = {"params_match": same, "hf_model": family}
    rc = _report("Architecture accounting", qs, args, arch, extra)
    if extra is not None and not args.json:
        from triptych.commands._common import console

        vs = (f"the torch build and Hugging Face {extra['hf_model']}" if extra["hf_model"] else
              "the torch build (no Hugging Face family has this shape; looked at GPT-2, GPT-NeoX, Llama, Qwen2)")
        console.print(f"formula vs {vs}: " + ("[green]equal[/]" if extra["params_match"] else "[bold red]DIFFERENT[/]"))
    return rc if extra is None or extra["params_match"] else 1


def run_lora_demo(args) -> int:
    from pathlib import Path

    import numpy as np
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from triptych.common.io import atomic_save, atomic_write_json
    from triptych.commands._common import console, print_json
    from numpy_impl.lora import fit_low_rank_change

    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  TextColumn("step {task.completed}/{task.total}"), TextColumn("loss {task.fields[loss]:.3e}"),
                  TimeElapsedColumn(), console=console, transient=True, disable=args.json) as progress:
        task = progress.add_task("training A and B only", total=args.steps, loss=float("nan"))
        result = fit_low_rank_change(d_in=args.d_in, d_out=args.d_out, r=args.rank, target_rank=args.target_rank,
                                     steps=args.steps, lr=args.lr, seed=args.seed,
                                     on_step=lambda step, loss: progress.update(task, advance=1, loss=loss))
    losses = result["losses"]
    out = Path(args.out)

    def save_plot(path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.semilogy(np.arange(len(losses)), losses)
        ax.set_xlabel("step (Adam, full batch)")
        ax.set_ylabel("mean squared error")
        ax.set_title(f"LoRA r={args.rank} learns a rank-{args.target_rank} change; W frozen")
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=120)
        plt.close(fig)

    atomic_save(out / "loss.png", save_plot)
    summary = {
        "loss_initial": float(losses[0]),
        "loss_final": float(losses[-1]),
        "loss_ratio": float(losses[-1] / losses[0]),
        "delta_relative_error": result["delta_error"],
        "trainable_params": result["trainable_params"],
        "frozen_params": result["frozen_params"],
        "steps": args.steps,
        "plot": str(out / "loss.png"),
        "losses_every_10": [float(v) for v in losses[::10]],
    }
    atomic_write_json(out / "result.json", summary)
    if args.json:
        print_json(summary)
        return 0
    picks = sorted({0, len(losses) // 10, len(losses) // 4, len(losses) // 2, len(losses) - 1})
    console.print(f"Frozen layer {args.d_out}x{args.d_in} ({result['frozen_params']:,} params); trainable A "
                  f"({args.rank}x{args.d_in}) and B ({args.d_out}x{args.rank}): {result['trainable_params']:,} params")
    console.print("loss: " + "  ".join(f"step {i}: {losses[i]:.3e}" for i in picks))
    console.print(f"learned s*B*A vs the target change: relative Frobenius error {result['delta_error']:.2e}")
    console.print(f"plot: {out / 'loss.png'}   numbers: {out / 'result.json'}")
    return 0
