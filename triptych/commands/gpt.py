"""`python cli.py gpt ...`: the tiny GPT trained on Jane Austen, three ways.

    gpt train --backend numpy|jax|torch [--arch gpt|llama] [model/optimizer flags] [--resume]
    gpt sample [--ckpt RUN_FOLDER] --prompt "It is a truth"   (default: the latest run of any backend)
    gpt experiment NAME|all [--report] [--resume]  the course's attention experiments (exercises.md I)
    gpt bench                               one training step of the default config, three backends
"""
from __future__ import annotations

import math

from triptych.common.argtypes import SEED, Default, count, nonneg_number, number, output_dir, positive_number, text, whole

ORDER = 60
MAX_THREADS = 1024  # far above any CPU this runs on; a larger count is a typo, not a machine


def _model_flags(p, defaults: bool = True) -> None:
    from triptych.common.gpt_config import ATTENTIONS, POSITIONS, SHARES, SIMILARITIES, GPTConfig
    d = GPTConfig()
    g = p.add_argument_group("model (GPTConfig)")
    g.add_argument("--block-size", type=count(), default=d.block_size if defaults else None)
    g.add_argument("--n-layer", type=count(), default=d.n_layer if defaults else None)
    g.add_argument("--n-head", type=count(), default=d.n_head if defaults else None)
    g.add_argument("--n-embd", type=count(), default=d.n_embd if defaults else None)
    g.add_argument("--dropout", type=number(0, 1, low_open=False, high_open=True), default=d.dropout)
    g.add_argument("--positions", choices=POSITIONS, default=d.positions)
    g.add_argument("--similarity", choices=SIMILARITIES, default=d.similarity)
    g.add_argument("--share-qkv", choices=SHARES, default=d.share_qkv)
    g.add_argument("--post-softmax-mask", action="store_true", help="the wrong masking (future leaks)")
    g.add_argument("--qkv-mlp", action="store_true", help="q, k, v from small MLPs")
    g.add_argument("--attention", choices=ATTENTIONS, default=d.attention)
    from triptych.common.llama_config import ROPE_LAYOUTS, LlamaConfig
    ld = LlamaConfig()
    g = p.add_argument_group("--arch llama (LlamaConfig; --block-size, --n-layer, --n-head, --n-embd above apply too)")
    g.add_argument("--n-kv-heads", type=count(), default=None, help="key/value heads for grouped-query attention "
                   "(default: --n-head, plain multi-head attention)")
    g.add_argument("--d-ff", type=count(), default=None, help="SwiGLU hidden size (default: 8/3 n_embd, rounded up to 8)")
    g.add_argument("--rope-base", type=positive_number(), default=ld.rope_base)
    g.add_argument("--rope-layout", choices=ROPE_LAYOUTS, default=ld.rope_layout)
    g.add_argument("--norm-eps", type=positive_number(), default=ld.norm_eps)
    g.add_argument("--untied", action="store_true", help="a separate output head (lm_head) instead of the embedding")


def _add_train(gsub, t) -> None:
    """gpt train: TrainArgs' fields, the model flags, --out and --resume."""
    from triptych.training.backends import ARCHS, BACKENDS
    s = gsub.add_parser("train", help="train (or --resume) a character-level GPT; checkpoints + loss.png under --out")
    s.add_argument("--backend", choices=BACKENDS, default=t.backend)
    s.add_argument("--arch", choices=ARCHS, default="gpt",
                   help="gpt: the GPT-2 block; llama: RMSNorm, RoPE, grouped-query attention, SwiGLU")
    s.add_argument("--dtype", choices=("float32", "float64"), default=t.dtype)
    s.add_argument("--steps", type=count(), default=None, help=f"total optimizer steps (default {t.steps})")
    s.add_argument("--batch-size", type=count(), default=t.batch_size)
    s.add_argument("--lr", type=positive_number(), default=t.lr)
    s.add_argument("--min-lr", type=nonneg_number(), default=t.min_lr)
    s.add_argument("--warmup", type=whole(), default=t.warmup)
    s.add_argument("--weight-decay", type=nonneg_number(), default=t.weight_decay)
    s.add_argument("--grad-clip", type=nonneg_number(), default=t.grad_clip, help="global-norm clip (0: off)")
    s.add_argument("--eval-interval", type=count(), default=t.eval_interval)
    s.add_argument("--eval-batches", type=count(), default=t.eval_batches)
    s.add_argument("--ckpt-interval", type=count(), default=t.ckpt_interval)
    s.add_argument("--seed", type=SEED, default=t.seed)
    s.add_argument("--max-minutes", type=nonneg_number(), default=t.max_minutes,
                   help="stop (and checkpoint) after this long (0: no limit)")
    s.add_argument("--limit-chars", type=count(), default=None, help="train on the first N characters only")
    s.add_argument("--out", type=output_dir, default=None, help="run folder (default runs/gpt/BACKEND)")
    s.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint with its own settings (run.json): other "
                        "flags need not be repeated; --steps N beyond the finished count extends it")
    s.add_argument("--threads", type=whole(MAX_THREADS), default=0,
                   help="torch threads (0: torch's default; 1 is often fastest on a busy CPU or one with few cores)")
    s.add_argument("--devices", type=count(), default=1,
                   help="jax: split each batch over this many JAX devices, weights replicated (GPUs, TPU cores; "
                        "on a CPU set XLA_FLAGS=--xla_force_host_platform_device_count=N first)")
    s.add_argument("--no-progress", action="store_true")
    _model_flags(s)
    from triptych.commands._resume import record_given
    record_given(s)  # --resume compares the typed flags with the run's own
    s.set_defaults(func=run_train)


def _add_sample(gsub) -> None:
    """gpt sample: text from a checkpoint."""
    from triptych.training.backends import BACKENDS
    s = gsub.add_parser("sample", help="generate text from a checkpoint")
    s.add_argument("--ckpt", default=None,
                   help="a run folder (what `gpt train` prints) or its ckpt.npz (default: the latest run under runs/gpt/)")
    s.add_argument("--prompt", type=text, default="It is a truth universally acknowledged")
    s.add_argument("--length", type=whole(), default=400)
    s.add_argument("--temperature", type=nonneg_number(), default=0.8,
                   help="0: greedy, the most likely character each time (as `model generate`); > 0: sample")
    s.add_argument("--top-k", type=count(), default=None)
    s.add_argument("--seed", type=SEED, default=0)
    s.add_argument("--backend", choices=BACKENDS, default="numpy", help="which implementation runs the forward")
    s.set_defaults(func=run_sample)


def _add_experiment(gsub) -> None:
    """gpt experiment: the course's attention experiments, each variant a small training run."""
    from triptych.training.backends import BACKENDS
    from triptych.training.experiments import EXPERIMENTS
    s = gsub.add_parser("experiment", help="the course's attention experiments: " + ", ".join(EXPERIMENTS) + " or all")
    s.add_argument("name", choices=(*EXPERIMENTS, "all"))
    s.add_argument("--backend", choices=BACKENDS, default="torch")
    s.add_argument("--steps", type=count(), default=None, help="training steps per variant (default 1000; numpy 200)")
    s.add_argument("--batch-size", type=count(), default=16)
    s.add_argument("--block-size", type=count(), default=64)
    s.add_argument("--n-layer", type=count(), default=2)
    s.add_argument("--n-head", type=count(), default=4)
    s.add_argument("--n-embd", type=count(), default=64)
    s.add_argument("--lr", type=positive_number(), default=3e-3)
    s.add_argument("--limit-chars", type=count(), default=None)
    s.add_argument("--threads", type=whole(MAX_THREADS), default=1, help="torch threads (tiny models run best on 1; 0: torch's default)")
    s.add_argument("--out", type=output_dir, default=Default("runs/gpt_experiments"))
    s.add_argument("--report", action="store_true", help="write report.md (table + plots) in --out")
    s.add_argument("--resume", action="store_true",
                   help="continue an interrupted study in --out: finished variants are read back, the rest resume from their checkpoints")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run_experiment)


def _add_bench(gsub, t) -> None:
    """gpt bench: one training step timed in the three backends."""
    s = gsub.add_parser("bench", help="time one training step of the default config in numpy, jax and torch")
    s.add_argument("--batch-size", type=count(), default=t.batch_size)
    s.add_argument("--repeats", type=count(), default=5)
    s.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    s.add_argument("--threads", type=whole(MAX_THREADS), default=1,
                   help="compute threads for every backend (0: each library's default; on a busy CPU extra "
                        "threads mostly spin)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run_bench)


def register(sub) -> None:
    from triptych.training.trainer import TrainArgs
    t = TrainArgs()
    p = sub.add_parser("gpt", help="tiny GPT on Jane Austen: train, sample, attention experiments, bench")
    gsub = p.add_subparsers(dest="gpt_command", metavar="ACTION")
    gsub.required = True
    _add_train(gsub, t)
    _add_sample(gsub)
    _add_experiment(gsub)
    _add_bench(gsub, t)


# GPT-only flags and their defaults: with --arch llama a changed one is an error, not silently ignored
_GPT_ONLY = {"dropout": 0.0, "positions": "learned", "similarity": "dot", "share_qkv": "none",
             "post_softmax_mask": False, "qkv_mlp": False, "attention": "softmax"}
_LLAMA_ONLY = {"n_kv_heads": None, "d_ff": None, "rope_base": 10000.0, "rope_layout": "half", "norm_eps": 1e-5,
               "untied": False}  # the flags' defaults (LlamaConfig's, or None: derived from the GPT flags)


def _config_from(args, vocab_size: int):
    from triptych.common.checks import InputError
    from triptych.common.gpt_config import GPTConfig
    from triptych.common.llama_config import LlamaConfig
    if getattr(args, "arch", "gpt") == "llama":
        changed = [k for k, v in _GPT_ONLY.items() if getattr(args, k) != v]
        if changed:
            raise InputError(f"--{changed[0].replace('_', '-')}: a GPT-only option; --arch llama has no "
                             f"dropout, learned positions or attention experiments")
        d_ff = args.d_ff or -(-8 * args.n_embd // 3 // 8) * 8  # Llama's 8/3 d, rounded up to a multiple of 8
        return LlamaConfig(vocab_size=vocab_size, block_size=args.block_size, d_model=args.n_embd,
                           n_layers=args.n_layer, n_heads=args.n_head, n_kv_heads=args.n_kv_heads or args.n_head,
                           d_ff=d_ff, rope_base=args.rope_base, rope_layout=args.rope_layout, norm_eps=args.norm_eps,
                           tie_embeddings=not args.untied)
    changed = [k for k, v in _LLAMA_ONLY.items() if getattr(args, k, v) != v]
    if changed:
        raise InputError(f"--{changed[0].replace('_', '-')}: an --arch llama option; add --arch llama")
    return GPTConfig(vocab_size=vocab_size, block_size=args.block_size, n_layer=args.n_layer, n_head=args.n_head,
                     n_embd=args.n_embd, dropout=args.dropout, positions=args.positions, similarity=args.similarity,
                     share_qkv=args.share_qkv, post_softmax_mask=args.post_softmax_mask, qkv_mlp=args.qkv_mlp,
                     attention=args.attention)


# flags of one invocation, not settings of the run: free to differ on --resume (a checkpoint of one
# backend continues in another)
_PER_INVOCATION = {"out", "resume", "threads", "no_progress", "max_minutes", "backend", "steps", "devices"}
_GPT_FLAGS = ("block_size", "n_layer", "n_head", "n_embd", *_GPT_ONLY)


def _flags_of(arch: str, config: dict) -> dict:
    """The model flags' values that built `config` (a config dict): what a typed flag is compared with."""
    if arch != "llama":
        return {k: config[k] for k in _GPT_FLAGS}
    return {"block_size": config["block_size"], "n_layer": config["n_layers"], "n_head": config["n_heads"],
            "n_embd": config["d_model"], "n_kv_heads": config["n_kv_heads"], "d_ff": config["d_ff"],
            "rope_base": config["rope_base"], "rope_layout": config["rope_layout"], "norm_eps": config["norm_eps"],
            "untied": not config["tie_embeddings"]}


def _resumed_settings(args, out):
    """-> (TrainArgs, config, finished step) of the run in `out`, from its run.json. Flags typed on the
    command line must agree with it (InputError naming the first that does not); --steps may extend it."""
    from triptych.commands._resume import check_length, check_same, given
    from triptych.training.backends import config_from_dict
    from triptych.training.checkpoint import read_run
    from triptych.training.trainer import TrainArgs

    run = read_run(out)
    saved = {**run["args"], "arch": run["arch"], **_flags_of(run["arch"], run["config"])}
    check_same(saved, {k: getattr(args, k) for k in sorted(given(args) - _PER_INVOCATION)}, out)
    check_length("steps", args.steps, run["step"], out)
    targs = TrainArgs(**run["args"])
    if args.steps is not None:
        targs.steps = args.steps
    if "backend" in given(args):
        targs.backend = args.backend
    return targs, config_from_dict(run["arch"], run["config"]), run["step"]


def run_train(args) -> int:
    from pathlib import Path

    from triptych.commands._common import console
    from triptych.common.invocation import command
    from triptych.training.data import load_char_data
    from triptych.training.trainer import TrainArgs, train

    out = Path(args.out or (f"runs/gpt/{args.backend}" if args.arch == "gpt" else f"runs/gpt/llama-{args.backend}"))
    if args.resume:  # the run's own settings (run.json); a typed flag must agree, --steps may extend
        targs, config, done = _resumed_settings(args, out)
        console.print(f"resuming {out} at step {done} of {targs.steps} (its settings from run.json)", highlight=False)
    else:
        targs = TrainArgs(backend=args.backend, dtype=args.dtype, steps=args.steps or TrainArgs.steps,
                          batch_size=args.batch_size, lr=args.lr, min_lr=args.min_lr, warmup=args.warmup,
                          weight_decay=args.weight_decay, grad_clip=args.grad_clip, eval_interval=args.eval_interval,
                          eval_batches=args.eval_batches, ckpt_interval=args.ckpt_interval, seed=args.seed,
                          max_minutes=args.max_minutes, limit_chars=args.limit_chars)
        config = None
    targs.max_minutes = args.max_minutes
    if args.threads and targs.backend == "torch":
        import torch
        torch.set_num_threads(args.threads)
    data = load_char_data(targs.limit_chars)
    config = config or _config_from(args, data.tokenizer.vocab_size)
    console.print(f"[bold]gpt train[/] {targs.backend} {targs.dtype}: {config}  "
                  f"{len(data.train):,} train / {len(data.val):,} val chars, batch {targs.batch_size}x{config.block_size}")
    res, _ = train(targs, config, data, out=out, resume=args.resume, progress=not args.no_progress,
                   devices=args.devices)
    state = "interrupted, checkpoint saved" if res.interrupted else "done"
    val = f"val loss {res.val_loss:.4f} nats/char (perplexity {math.exp(res.val_loss):.3f})" \
        if res.val_loss is not None else "no validation yet"
    console.print(f"{state} at step {res.step} in {res.seconds:.0f} s: train loss {res.train_loss:.4f}, {val}")
    console.print(f"checkpoint {res.checkpoint}; loss curve {out / 'loss.png'}")
    console.print(f"resume: {command('gpt', 'train', '--backend', targs.backend, '--out', str(out), '--resume')}",
                  highlight=False, soft_wrap=True)
    return 130 if res.interrupted else 0


def logits_fn_for(backend: str, params: dict, config):
    """idx (1, T) -> logits, by the chosen implementation (used by sampling); the GPT or, for a
    LlamaConfig, the Llama-style model."""
    from triptych.training.backends import arch_of, model_ops
    if arch_of(config) == "llama":
        _, _, forward = model_ops(backend, config)
        if backend == "torch":
            import torch

            def run_llama(idx):
                with torch.no_grad():
                    return forward(params, torch.from_numpy(idx), config).numpy()
            return run_llama
        import numpy as np
        return lambda idx: np.asarray(forward(params, idx, config))
    if backend == "numpy":
        from numpy_impl.gpt import gpt_forward
        return lambda idx: gpt_forward(params, idx, config)
    if backend == "jax":
        from jax_impl.gpt import gpt_forward
        return lambda idx: gpt_forward(params, idx, config)
    import torch

    from torch_ref.gpt import gpt_forward, params_to_torch
    tp = params_to_torch(params)

    def run(idx):
        with torch.no_grad():
            return gpt_forward(tp, torch.from_numpy(idx), config).numpy()
    return run


def run_sample(args) -> int:
    from triptych.commands._common import console
    from triptych.training.checkpoint import load_checkpoint, resolve_checkpoint
    from triptych.training.data import CharTokenizer
    from triptych.training.sample import generate

    args.ckpt = resolve_checkpoint(args.ckpt)
    params, _, meta = load_checkpoint(args.ckpt)
    config, tok = meta["config"], CharTokenizer(meta["chars"])
    # temperature 0 is greedy decoding, as in `model generate`: keeping only the most likely character
    # (top-k 1) makes the draw that character every time, whatever the seed.
    temperature, top_k = (1.0, 1) if args.temperature == 0 else (args.temperature, args.top_k)
    text = generate(logits_fn_for(args.backend, params, config), config.block_size, tok, args.prompt, args.length,
                    temperature, top_k, args.seed)
    console.print(f"[dim]{args.ckpt}: step {meta['step']}, {args.backend} forward, temperature {args.temperature}[/]")
    console.print(text, markup=False, highlight=False)
    return 0


def run_experiment(args) -> int:
    from triptych.training.experiments import run_experiments_cli
    return run_experiments_cli(args)


def run_bench(args) -> int:
    from triptych.training.bench import run_bench_cli
    return run_bench_cli(args)
