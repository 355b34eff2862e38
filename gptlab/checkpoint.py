"""Checkpoints: one .npz holding everything a run needs to continue exactly where it stopped.

    param/<key>      the weight dict (common.gpt_config layout)
    adam_m/<key>     AdamW first moments     adam_v/<key>  second moments
    meta             JSON: arch ("gpt" or "llama"; older files have none: gpt), config,
                     optimizer step, data/run seed, the training arguments,
                     the tokenizer's characters and the loss history so far

Batches and dropout masks are functions of (seed, step) (gptlab.data.get_batch), so the step IS the
data position and the random state. Written atomically (common.io.atomic_save): an interrupted save
leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common.checks import InputError
from common.io import atomic_save
from gptlab.backends import config_from_dict

FORMAT = "triptych-gpt-checkpoint/1"


def save_checkpoint(path, params: dict, opt_state: dict, meta: dict) -> None:
    arrays = {f"param/{k}": np.asarray(v) for k, v in params.items()}
    arrays.update({f"adam_m/{k}": np.asarray(v) for k, v in opt_state["m"].items()})
    arrays.update({f"adam_v/{k}": np.asarray(v) for k, v in opt_state["v"].items()})
    meta = {**meta, "format": FORMAT, "opt_step": int(opt_state["step"])}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)

    def write(tmp: Path):
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a bare path
            np.savez(f, **arrays)

    atomic_save(path, write)


def load_checkpoint(path) -> tuple[dict, dict, dict]:
    """-> (params, opt_state {"step", "m", "v"}, meta); meta["config"] is a GPTConfig or, for
    meta["arch"] == "llama", a LlamaConfig."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint: expected an existing .npz file, got {str(path)!r} (train one with `gpt train`)")
    try:
        with np.load(path) as z:
            meta = json.loads(bytes(z["meta"]).decode("utf-8"))
            params = {k[6:]: z[k] for k in z.files if k.startswith("param/")}
            m = {k[7:]: z[k] for k in z.files if k.startswith("adam_m/")}
            v = {k[7:]: z[k] for k in z.files if k.startswith("adam_v/")}
    except (ValueError, KeyError, OSError) as e:
        raise InputError(f"checkpoint: expected a file written by `gpt train`, got {str(path)!r} ({e})") from None
    if meta.get("format") != FORMAT:
        raise InputError(f"checkpoint: expected format {FORMAT}, got {meta.get('format')!r}")
    meta["arch"] = meta.get("arch", "gpt")  # written before the Llama-style model existed
    meta["config"] = config_from_dict(meta["arch"], meta["config"])
    return params, {"step": meta["opt_step"], "m": m, "v": v}, meta
