"""`finetune train --backend numpy|jax`: fine-tune all-MiniLM-L6-v2 for classification with our own
engines (numpy_impl/bert_finetune.py's hand-written backward, or jax_impl/bert_finetune.py's jax.grad)
on the torch backend's data pipeline (torch_ref/finetune/data.py: the same tasks, subsets, tokenizer,
length-grouped batches) and its schedule (linear warmup then linear decay, gradient clipping, AdamW).

What differs from the torch backend, by design of the engines: dropout is off (the encoder's and
LoRA's), AdamW decays matrices only (numpy_impl/optim.py's rule), and the best epoch's trainable
weights are kept as best_trainable.npz (no HF checkpoint folder). The model is MiniLM only.
"""
from __future__ import annotations

import importlib
import time
from pathlib import Path

import numpy as np

from triptych.common.bert_finetune import DEFAULT_LORA_TARGETS

__all__ = ["ENGINES", "init_classifier", "train_engine"]

ENGINES = ("numpy", "jax")


def init_classifier(method: str, n_classes: int, prefix_length: int = 128, lora_r: int = 8, seed: int = 0):
    """(frozen, trainable, n_heads, eps) float32 on the real checkpoint, initialised as the torch backend
    does: the checkpoint's pooler, a new classifier N(0, 0.02) with zero bias for full / lora (HF's
    init) and U(+-1/sqrt(C)) for head / prefix (nn.Linear's), prefix N(0, 0.02), LoRA A as peft
    (kaiming-uniform) and B = 0."""
    from safetensors.numpy import load_file

    from numpy_impl.lora import init_lora_params
    from triptych.pretrained import minilm

    params, config = minilm.load("float32")
    raw = load_file(str(minilm.model_path() / "model.safetensors"))
    params["pooler.w"], params["pooler.b"] = raw["pooler.dense.weight"], raw["pooler.dense.bias"]
    rng = np.random.default_rng(seed)
    C = config.hidden_size
    if method in ("full", "lora"):
        t = {"classifier.w": rng.normal(0, 0.02, (n_classes, C)), "classifier.b": np.zeros(n_classes)}
    else:
        bound = 1.0 / np.sqrt(C)
        t = {"classifier.w": rng.uniform(-bound, bound, (n_classes, C)), "classifier.b": rng.uniform(-bound, bound, n_classes)}
    t = {k: v.astype(np.float32) for k, v in t.items()}
    if method == "full":
        t.update(params)
    elif method == "prefix":
        t["prefix"] = rng.normal(0, 0.02, (prefix_length, C)).astype(np.float32)
    elif method == "lora":
        for i in range(config.num_hidden_layers):
            for j, w in enumerate(DEFAULT_LORA_TARGETS):
                d_out, d_in = params[f"layers.{i}.{w}"].shape
                lora = init_lora_params(int(d_in), int(d_out), lora_r, "default", seed + 2 * i + j, np.float32)
                t[f"layers.{i}.{w}.lora_A"], t[f"layers.{i}.{w}.lora_B"] = lora["lora_A"], lora["lora_B"]
    frozen = {} if method == "full" else {k: v for k, v in params.items() if k not in t}
    return frozen, t, config.num_attention_heads, config.layer_norm_eps


def _factor(step: int, warmup: int, total: int) -> float:
    """torch_ref/finetune/train.py's warmup_linear multiplier."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def _arrays(batch):
    return tuple(batch[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids", "labels"))


def _evaluate(mod, method, frozen, trainable, loader, n_heads, eps, alpha) -> dict:
    loss_sum = right = n = 0.0
    for batch in loader:
        ids, mask, types, labels = _arrays(batch)
        logits = np.asarray(mod.bert_finetune_logits(method, frozen, trainable, ids, mask, types, n_heads, eps, alpha),
                            dtype=np.float64)
        shifted = logits - logits.max(-1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        loss_sum += float(-logp[np.arange(len(labels)), labels].sum())
        right += float((logits.argmax(-1) == labels).sum())
        n += len(labels)
    return {"loss": loss_sum / n, "acc": right / n}


def _loaders(cfg, task):
    from torch_ref.finetune.data import make_loader
    from triptych.pretrained import minilm

    tok = minilm.tokenizer()
    return {"train": make_loader(task.train, tok, cfg.batch_size, cfg.max_length, shuffle=True, seed=cfg.seed),
            "val": make_loader(task.val, tok, 2 * cfg.batch_size, cfg.max_length, shuffle=False),
            "test": make_loader(task.test, tok, 2 * cfg.batch_size, cfg.max_length, shuffle=False)}


def _epoch(engine, mod, optim, run: dict, loader, epoch: int) -> dict:
    cfg, method = run["cfg"], run["cfg"].method
    loader.batch_sampler.set_epoch(epoch)
    t0, loss_sum, n = time.perf_counter(), 0.0, 0
    for batch in loader:
        ids, mask, types, labels = _arrays(batch)
        loss, grads = mod.bert_finetune_loss_and_grads(method, run["frozen"], run["trainable"], ids, mask, types,
                                                       labels, run["n_heads"], run["eps"], float(cfg.lora_alpha))
        if cfg.max_grad_norm > 0:
            grads, _ = optim.clip_grad_norm(grads, cfg.max_grad_norm)
        lr = cfg.lr * _factor(run["step"], run["warmup"], run["total"])
        run["trainable"], run["opt"] = optim.adamw_step(run["trainable"], grads, run["opt"], lr, (0.9, 0.999), 1e-8,
                                                        cfg.weight_decay)
        run["step"] += 1
        loss_sum, n = loss_sum + float(loss) * len(labels), n + len(labels)
    return {"epoch": epoch, "train_loss": loss_sum / n, "train_time_s": time.perf_counter() - t0}


def train_engine(cfg, engine: str = "numpy", console=None, quiet: bool = False) -> dict:
    """Fine-tune with `engine` (numpy or jax) under cfg (torch_ref/finetune/config.py's TrainConfig);
    keep the best validation epoch, test it, write results.json and best_trainable.npz to cfg.out."""
    from torch_ref.finetune.data import dataset_summary, load_task
    from torch_ref.finetune.train import _subset
    from triptych.common.io import atomic_write_json

    say = (lambda *a, **k: None) if quiet or console is None else console.print
    mod = importlib.import_module(f"{engine}_impl.bert_finetune")
    optim = importlib.import_module(f"{engine}_impl.optim")
    task = _subset(load_task(cfg.task, seed=cfg.seed, data_files=cfg.data_files), cfg)
    loaders = _loaders(cfg, task)
    frozen, trainable, n_heads, eps = init_classifier(cfg.method, task.n_classes, cfg.prefix_length, cfg.lora_r, cfg.seed)
    total = cfg.epochs * len(loaders["train"])
    run = {"cfg": cfg, "frozen": frozen, "trainable": trainable, "n_heads": n_heads, "eps": eps, "step": 0,
           "total": total, "warmup": max(1, int(cfg.warmup * total)), "opt": optim.adamw_init(trainable)}
    n_train = sum(int(np.prod(v.shape)) for v in trainable.values())
    say(f"{engine} engine, method {cfg.method}: {n_train:,} trainable parameters; dropout off")
    history, best, best_acc = [], None, -1.0
    for epoch in range(1, cfg.epochs + 1):
        row = _epoch(engine, mod, optim, run, loaders["train"], epoch)
        val = _evaluate(mod, cfg.method, frozen, run["trainable"], loaders["val"], n_heads, eps, float(cfg.lora_alpha))
        row.update(val_loss=val["loss"], val_acc=val["acc"])
        history.append(row)
        say(f"epoch {epoch}: train loss {row['train_loss']:.4f}, val loss {val['loss']:.4f}, "
            f"val acc {val['acc']:.2%} ({row['train_time_s']:.1f}s)")
        if val["acc"] > best_acc:
            best_acc, best = val["acc"], {k: np.asarray(v) for k, v in run["trainable"].items()}
    test = _evaluate(mod, cfg.method, frozen, best, loaders["test"], n_heads, eps, float(cfg.lora_alpha))
    majority = dataset_summary(task)[2]["majority_acc"]
    results = {"task": task.name, "model": cfg.model, "method": cfg.method, "backend": engine,
               "trainable_params": n_train, "sizes": {s: len(getattr(task, s)) for s in ("train", "val", "test")},
               "majority_test_acc": majority, "best_epoch": max(history, key=lambda h: h["val_acc"])["epoch"],
               "best_val_acc": best_acc, "test_loss": test["loss"], "test_acc": test["acc"], "history": history,
               "train_time_s": sum(h["train_time_s"] for h in history)}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", results)
    np.savez(out / "best_trainable.npz", **best)
    say(f"test (best epoch {results['best_epoch']}): loss {test['loss']:.4f}, accuracy [bold]{test['acc']:.2%}[/] "
        f"vs majority class {majority:.2%}; wrote {out}/results.json, best_trainable.npz")
    return results
