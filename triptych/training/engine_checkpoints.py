"""Checkpoints of `finetune train --backend numpy|jax` (bert_classify.py), in the torch backend's layout
(torch_ref/finetune/checkpoints.py), so `finetune predict` and `finetune train --resume` treat both alike:

    out/run.json   the run's settings, its backend included (checkpoints.write_run_file)
    out/best/      a torch-backend checkpoint: the torch EncoderClassifier for the run's ModelSpec holding
                   the engine's weights (our keys <-> the torch / peft names: torch_ref/bert_finetune.py's
                   trainable_of), written by checkpoints.save_checkpoint with the torch backend's run.json
    out/last/      the engine's own state for --resume: engine_state.npz (trainable weights, AdamW's
                   moments), trainer.json (steps taken, history, best accuracy, settings) and run.json
                   (what read_run reads). No model.safetensors: `finetune predict` reads best/.

Every folder is written beside its target and renamed into place (checkpoints._replace_dir), so a
crash leaves the previous copy whole. best/ is the one record of the best weights: the test pass
reads them back from it, so a resumed run tests what an uninterrupted one would.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from triptych.common.checks import InputError

__all__ = ["put_weights", "weights_of", "save_best", "load_best", "save_last", "load_last"]

_STATE = "engine_state.npz"
_TRAINER = "trainer.json"
# npz member prefixes: a fixed word before our key ("layers.0.attn.w_q.lora_A"), never ambiguous
_PARTS = ("param", "adam_m", "adam_v")


def put_weights(model, trainable: dict) -> None:
    """Copy trainable (our keys, NumPy or JAX arrays) into the torch model's trainable tensors."""
    import torch

    from torch_ref.bert_finetune import trainable_of

    tensors = trainable_of(model)
    if sorted(tensors) != sorted(trainable):
        raise ValueError(f"trainable: the torch model trains {sorted(set(tensors) ^ set(trainable))[:4]} differently")
    with torch.no_grad():
        for k, t in tensors.items():
            t.copy_(torch.as_tensor(np.array(trainable[k])).to(t.dtype))  # a copy: JAX arrays are read-only


def weights_of(model) -> dict:
    """The torch model's trainable tensors under our keys, float32 NumPy copies."""
    from torch_ref.bert_finetune import trainable_of

    return {k: t.detach().cpu().numpy().astype(np.float32) for k, t in trainable_of(model).items()}


def save_best(out, model, tokenizer, trainable: dict, meta: dict) -> None:
    """out/best/: the engine's weights in the torch model, saved as the torch backend saves its best."""
    from torch_ref.finetune.checkpoints import save_checkpoint

    put_weights(model, trainable)
    save_checkpoint(Path(out) / "best", model, tokenizer, meta)


def load_best(out, model) -> dict:
    """The weights in out/best/ (read into the torch model), under our keys."""
    from safetensors.torch import load_model

    from torch_ref.finetune.checkpoints import _existing_dir

    found = _existing_dir(Path(out) / "best")
    if found is None:
        raise InputError(f"checkpoint: expected {Path(out) / 'best'} (written after the first epoch), got none")
    load_model(model, str(found / "model.safetensors"))
    return weights_of(model)


def save_last(out, trainable: dict, opt: dict, meta: dict, trainer: dict) -> None:
    """out/last/: trainable and AdamW's state {"step", "m", "v"} as npz; trainer (JSON-able) beside it."""
    from torch_ref.finetune.checkpoints import _replace_dir

    arrays = {f"{part}.{k}": np.asarray(v) for part, d in zip(_PARTS, (trainable, opt["m"], opt["v"]))
              for k, v in d.items()}

    def fill(tmp: Path):
        with open(tmp / _STATE, "wb") as fh:  # a file object: np.savez would append .npz to a name
            np.savez(fh, **arrays)
        (tmp / _TRAINER).write_text(json.dumps({**trainer, "adam_step": int(opt["step"])}, indent=2) + "\n")
        (tmp / "run.json").write_text(json.dumps(meta, indent=2) + "\n")

    _replace_dir(Path(out) / "last", fill)


def load_last(out) -> tuple[dict, dict, dict] | None:
    """(trainable, AdamW state, trainer record) from out/last/, or None when the run has no last/ yet.
    A last/ of the torch backend (no engine state) is refused: its optimizer state is not ours."""
    from torch_ref.finetune.checkpoints import _existing_dir

    last = _existing_dir(Path(out) / "last")
    if last is None:
        return None
    if not (last / _STATE).is_file():
        raise InputError(f"resume: expected {last} to hold a numpy/jax engine's state ({_STATE}), got a torch "
                         f"backend's checkpoint; resume it with --backend torch")
    trainer = json.loads((last / _TRAINER).read_text())
    with np.load(last / _STATE) as z:
        parts = {part: {name[len(part) + 1:]: z[name] for name in z.files if name.startswith(part + ".")}
                 for part in _PARTS}
    opt = {"step": trainer["adam_step"], "m": parts["adam_m"], "v": parts["adam_v"]}
    return parts["param"], opt, trainer
