"""Checkpoints of a fine-tuning run: folders written beside their target and renamed into place.

    out/run.json        the run's settings (TrainConfig), written when it starts: `--resume` needs no flags
    out/best/           the best epoch by validation accuracy: model.safetensors, run.json, encoder/ (config
                        and tokenizer), enough to rebuild the classifier without the base weights
    out/last/           the last finished epoch, plus trainer.pt (optimizer, scheduler, history, random
                        states of every process) for `--resume`

Only the main process writes (train.py calls these there); every process reads when resuming.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from triptych.common.checks import InputError
from triptych.common.io import atomic_write_json
from torch_ref.finetune.config import TrainConfig
from torch_ref.finetune.models import ModelSpec, build_classifier, load_tokenizer

__all__ = ["RUN_FORMAT", "checkpoint_dir", "run_settings", "read_run", "write_run_file", "save_checkpoint",
           "load_checkpoint", "predict"]

def _replace_dir(target: Path, fill) -> None:
    """fill(tmp_dir) writes a folder beside target, then it is renamed into place. The previous one is
    moved aside first and deleted last, so at every moment one complete copy exists."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    old = target.parent / f".{target.name}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _existing_dir(target: Path) -> Path | None:
    """The checkpoint folder, or the previous copy if a crash came between the two renames."""
    target = Path(target)
    if (target / "run.json").is_file():
        return target
    old = target.parent / f".{target.name}.old"
    return old if (old / "run.json").is_file() else None


def checkpoint_dir(folder) -> Path:
    """The checkpoint a person means: a best/ or last/ folder itself, or a run folder (what `finetune
    train` prints), whose best/ it is."""
    folder = Path(folder)
    # best/ first: a run folder holds a run.json too (its settings), beside best/ and last/
    found = _existing_dir(folder / "best") or _existing_dir(folder)
    if found is None or not (found / "model.safetensors").is_file():
        raise InputError(f"checkpoint: expected a run folder of `finetune train` or its best/ or last/ "
                         f"(with run.json and model.safetensors), got {str(folder)!r}")
    return found


RUN_FORMAT = "triptych-finetune-run/1"
_NOT_SETTINGS = ("out", "resume", "save_checkpoints")  # where and how this invocation runs, not what


def run_settings(cfg: TrainConfig) -> dict:
    """What out/run.json records: the TrainConfig fields that define the run."""
    return {k: v for k, v in asdict(cfg).items() if k not in _NOT_SETTINGS}


def read_run(out) -> dict | None:
    """The settings of the run in folder `out` ({"config": {...}, "epoch": finished epochs}), or None
    when it holds no run: out/run.json, else (runs written before it existed) last/'s record."""
    out = Path(out)
    last = _existing_dir(out / "last")
    done = json.loads((last / "run.json").read_text()).get("epoch", 0) if last is not None else 0
    if (out / "run.json").is_file():
        try:
            return {"config": json.loads((out / "run.json").read_text())["config"], "epoch": done}
        except (ValueError, KeyError):
            pass  # damaged: last/ holds the same settings
    if last is not None:
        config = json.loads((last / "run.json").read_text())["config"]
        return {"config": {k: v for k, v in config.items() if k not in _NOT_SETTINGS}, "epoch": done}
    return None


def write_run_file(cfg: TrainConfig) -> None:
    """out/run.json, atomically: written when a run starts, rewritten only when a resume extends --epochs."""
    path = Path(cfg.out) / "run.json"
    run = {"format": RUN_FORMAT, "config": run_settings(cfg)}
    try:
        if json.loads(path.read_text()) == json.loads(json.dumps(run)):
            return
    except (OSError, ValueError):
        pass  # absent or unreadable: written below
    atomic_write_json(path, run)


def save_checkpoint(folder, model, tokenizer, meta: dict, trainer_state: dict | None = None) -> None:
    from safetensors.torch import save_model

    def fill(tmp: Path):
        save_model(model, str(tmp / "model.safetensors"))
        model.config.save_pretrained(tmp / "encoder")
        tokenizer.save_pretrained(tmp / "encoder")
        if trainer_state is not None:
            torch.save(trainer_state, tmp / "trainer.pt")
        (tmp / "run.json").write_text(json.dumps(meta, indent=2) + "\n")

    _replace_dir(Path(folder), fill)


def load_checkpoint(folder):
    """(model, tokenizer, meta) rebuilt from a checkpoint folder alone (no base weights needed); a run
    folder stands for its best/."""
    from safetensors.torch import load_model

    found = checkpoint_dir(folder)
    meta = json.loads((found / "run.json").read_text())
    spec = ModelSpec(**{**meta["spec"], "pretrained": False})
    model = build_classifier(spec, path=str(found / "encoder"))
    load_model(model, str(found / "model.safetensors"))
    model.eval()
    return model, load_tokenizer(str(found / "encoder")), meta


@torch.no_grad()
def predict(folder, texts: list[str], text_pairs: list[str] | None = None, batch_size: int = 32) -> list[dict]:
    """Label and class probabilities for each text (or text pair) from a saved checkpoint."""
    model, tokenizer, meta = load_checkpoint(folder)
    names = meta["label_names"]
    if bool(meta.get("is_pair")) != (text_pairs is not None):
        want = "pairs (--pair B for each text)" if meta.get("is_pair") else "single texts"
        raise InputError(f"texts: this checkpoint ({meta['task']}) expects {want}")
    out = []
    for i in range(0, len(texts), batch_size):
        a = texts[i:i + batch_size]
        b = None if text_pairs is None else text_pairs[i:i + batch_size]
        enc = tokenizer(a, b, truncation=True, max_length=meta["max_length"], padding=True, return_tensors="pt")
        probs = torch.softmax(model(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids")).float(), -1)
        for row in probs:
            out.append({"label": names[int(row.argmax())], "probs": {n: float(p) for n, p in zip(names, row)}})
    return out
