"""`finetune lm`: LoRA fine-tuning of SmolLM2-135M as a causal language model on Jane Austen, in any
of the three backends (triptych/training/lora_lm.py), then the adapters merged into the weights and a
greedy sample from the merged model (numpy_impl.llama's KV-cache decoder).

    finetune lm --backend numpy|jax|torch [--steps 30 --layers K --lr 2e-3 --targets q,v --rank 8]

Writes under --out: results.json (validation loss before / after, every step's loss and seconds, the
sample) and checkpoint/ (adapters, optimizer state, step); --resume continues from checkpoint/.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from triptych.commands._common import SEED, CLIError, console, count, output_dir, positive_number, print_json, text

DEFAULT_OUT = "runs/finetune-lm"


def register_lm(ft) -> None:
    """Adds `lm` to the `finetune` subcommands."""
    s = ft.add_parser("lm", help="LoRA-tune SmolLM2 as a language model on Austen (numpy / jax / torch backends)")
    s.add_argument("--model", choices=["smollm2"], default="smollm2")
    s.add_argument("--method", choices=["lora"], default="lora")
    s.add_argument("--backend", choices=["numpy", "jax", "torch"], default="numpy")
    s.add_argument("--steps", type=count(), default=30)
    s.add_argument("--layers", type=count(), default=None, help="keep the first K layers (default: all 30)")
    s.add_argument("--lr", type=positive_number(), default=2e-3)
    s.add_argument("--targets", default="q,v", help="projections to adapt: any of q,k,v,o,gate,up,down")
    s.add_argument("--rank", type=count(), default=8)
    s.add_argument("--alpha", type=positive_number(), default=16.0, help="scaling alpha / rank")
    s.add_argument("--batch-size", type=count(), default=4)
    s.add_argument("--block", type=count(), default=128, help="tokens per row")
    s.add_argument("--val-rows", type=count(), default=8, help="validation rows (the end of Persuasion)")
    s.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    s.add_argument("--seed", type=SEED, default=0)
    s.add_argument("--prompt", type=text, default="Elizabeth", help="the merged model's greedy sample starts here")
    s.add_argument("--sample-tokens", type=count(low=0), default=30)
    s.add_argument("--out", type=output_dir, default=DEFAULT_OUT)
    s.add_argument("--resume", action="store_true", help="continue from --out/checkpoint up to --steps")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--json", action="store_true", help="print results.json's content at the end")
    s.set_defaults(func=run_lm)


def _load(args):
    from triptych.bpe.tokenizer import Tokenizer
    from triptych.pretrained import smollm2
    from triptych.training.lora_lm import austen_rows

    params, config = smollm2.load_llama(n_layers=args.layers, dtype=args.dtype)
    tok = Tokenizer.from_gguf(smollm2.gguf_path())
    data = austen_rows(tok, block=args.block)
    if len(data.val) < args.val_rows:
        raise CLIError(f"--val-rows: expected at most {len(data.val)} rows of {args.block + 1} tokens, got {args.val_rows}")
    data.val = data.val[:args.val_rows]
    return params, config, tok, data


def _val_loss(trainer, data, batch_size: int) -> float:
    """Token-weighted mean loss over the validation rows."""
    total = n = 0
    for idx, targets in data.val_batches(batch_size):
        k = int((targets != -100).sum())
        total, n = total + trainer.loss(idx, targets) * k, n + k
    return total / n


# ----------------------------------------------------------------------------------------------
# checkpoint: adapters.npz, optimizer (npz or torch), state.json written last (it names a complete set)


def _savez(path: Path, arrays: dict) -> None:
    with open(path, "wb") as f:  # an open file: np.savez would add .npz to the temporary name
        np.savez(f, **arrays)


def _save(folder: Path, trainer, backend: str, step: int, history: list, val_before: float) -> None:
    from triptych.common.io import atomic_save, atomic_write_json

    atomic_save(folder / "adapters.npz", lambda p: _savez(p, trainer.adapters()))
    state = trainer.opt_state()
    if backend == "torch":
        import torch
        atomic_save(folder / "optimizer.pt", lambda p: torch.save(state, p))
    else:
        flat = {f"{part}/{k}": np.asarray(v) for part in ("m", "v") for k, v in state[part].items()}
        atomic_save(folder / "optimizer.npz", lambda p: _savez(p, {"step": np.asarray(state["step"]), **flat}))
    atomic_write_json(folder / "state.json", {"backend": backend, "step": step, "history": history,
                                              "val_loss_before": val_before})


def _restore(folder: Path, backend: str):
    """(adapters, optimizer state, step, history, val_loss_before) from a checkpoint folder."""
    try:
        meta = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise CLIError(f"--resume: expected a checkpoint in {folder} (state.json), got {type(e).__name__}") from None
    if meta["backend"] != backend:
        raise CLIError(f"--backend: expected {meta['backend']} to resume this checkpoint, got {backend}")
    with np.load(folder / "adapters.npz") as z:
        adapters = {k: z[k] for k in z.files}
    if backend == "torch":
        import torch
        opt = torch.load(folder / "optimizer.pt", weights_only=True)
    else:
        with np.load(folder / "optimizer.npz") as z:
            opt = {"step": int(z["step"]), "m": {}, "v": {}}
            for key in z.files:
                if key != "step":
                    part, name = key.split("/", 1)
                    opt[part][name] = z[key]
        if backend == "jax":
            import jax.numpy as jnp
            opt = {"step": opt["step"], **{p: {k: jnp.asarray(v) for k, v in opt[p].items()} for p in ("m", "v")}}
    return adapters, opt, meta["step"], meta["history"], meta["val_loss_before"]


def _progress(disable: bool, backend: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn(f"[bold]{backend}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]}  {task.fields[sec]} s/step"), TimeRemainingColumn(),
                    console=console, disable=disable, transient=False)


def _train(args, trainer, data, start: int, history: list, ckpt: Path, val_before: float) -> list:
    with _progress(args.no_progress or args.json, args.backend) as bar:
        task = bar.add_task("train", total=args.steps, completed=start, loss="-", sec="-")
        for step in range(start, args.steps):
            idx, targets = data.batch(args.batch_size, step, args.seed)
            t0 = time.perf_counter()
            loss = trainer.step(idx, targets, args.lr)
            sec = time.perf_counter() - t0
            if not math.isfinite(loss):
                raise CLIError(f"--lr: the loss became {loss} at step {step}; expected a smaller learning rate than {args.lr:g}")
            history.append({"step": step, "loss": loss, "seconds": sec})
            bar.update(task, advance=1, loss=f"{loss:.3f}", sec=f"{sec:.2f}")
    _save(ckpt, trainer, args.backend, args.steps, history, val_before)
    return history


def _sample(params, adapters, config, tok, args) -> str:
    from numpy_impl.llama import llama_generate
    from numpy_impl.llama_lora import merge_llama_lora

    merged = merge_llama_lora(params, {k: v.astype(params["embed.weight"].dtype) for k, v in adapters.items()},
                              config, args.alpha)
    ids = np.asarray([tok.encode(args.prompt)], dtype=np.int64)
    return tok.decode(llama_generate(merged, ids, config, args.sample_tokens)[0].tolist())


def run_lm(args) -> int:
    from triptych.common.checks import InputError
    from triptych.common.io import atomic_write_json
    from triptych.common.llama_lora import check_llama_lora_targets
    from numpy_impl.llama_lora import init_llama_lora
    from triptych.training.lora_lm import make_lora_trainer

    try:
        targets = check_llama_lora_targets(args.targets)
    except InputError as e:
        raise CLIError(f"--{e}") from None
    out = Path(args.out)
    params, config, tok, data = _load(args)
    adapters = init_llama_lora(params, config, r=args.rank, targets=targets, seed=args.seed)
    start, history, opt = 0, [], None
    if args.resume:
        adapters, opt, start, history, val_before = _restore(out / "checkpoint", args.backend)
    trainer = make_lora_trainer(args.backend, params, config, adapters, args.alpha)
    if opt is not None:
        trainer.load_opt_state(opt)
    else:  # B = 0: the pretrained model's own validation loss
        val_before = _val_loss(trainer, data, args.batch_size)
    history = _train(args, trainer, data, start, history, out / "checkpoint", val_before)
    val_after = _val_loss(trainer, data, args.batch_size)
    sample = _sample(params, trainer.adapters(), config, tok, args) if args.sample_tokens else ""
    secs = [h["seconds"] for h in history[1:]] or [h["seconds"] for h in history]
    results = {"model": args.model, "method": args.method, "backend": args.backend, "layers": config.n_layers,
               "dtype": args.dtype, "targets": list(targets), "rank": args.rank, "alpha": args.alpha,
               "steps": args.steps, "lr": args.lr, "batch_size": args.batch_size, "block": args.block,
               "trainable_params": int(sum(v.size for v in adapters.values())),
               "val_loss_before": val_before, "val_loss_after": val_after,
               "median_step_seconds": float(np.median(secs)) if secs else None,
               "history": history, "prompt": args.prompt, "sample": sample}
    atomic_write_json(out / "results.json", results)
    if args.json:
        print_json(results)
        return 0
    console.print(f"validation loss {val_before:.4f} -> {val_after:.4f} (ppl {math.exp(val_before):.1f} -> "
                  f"{math.exp(val_after):.1f}), {results['trainable_params']:,} trainable parameters, "
                  f"median step {results['median_step_seconds'] or 0:.2f} s")
    if sample:
        console.print("merged model, greedy:", markup=False)
        console.print(sample, markup=False, highlight=False)
    console.print(f"wrote {out / 'results.json'}")
    return 0
