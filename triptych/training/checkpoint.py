"""Checkpoints: one .npz holding everything a run needs to continue exactly where it stopped.

    param/<key>      the weight dict (common.gpt_config layout)
    adam_m/<key>     AdamW first moments     adam_v/<key>  second moments
    meta             JSON: arch ("gpt" or "llama"; older files have none: gpt), config,
                     optimizer step, data/run seed, the training arguments,
                     the tokenizer's characters and the loss history so far

Batches and dropout masks are functions of (seed, step) (training.data.get_batch), so the step IS the
data position and the random state. Written atomically (common.io.atomic_save): an interrupted save
leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from triptych.common.checks import InputError
from triptych.common.io import atomic_save
from triptych.training.backends import config_from_dict

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


RUN_FORMAT = "triptych-gpt-run/1"


def write_run_file(out, arch: str, args: dict, config: dict) -> None:
    """out/run.json: the settings a run was started with (`gpt train --resume` reads them, so no flag
    needs repeating). Written once, atomically; rewritten only when a resume extends --steps."""
    from triptych.common.io import atomic_write_json

    path = Path(out) / "run.json"
    run = {"format": RUN_FORMAT, "arch": arch, "args": {k: v for k, v in args.items() if k != "max_minutes"},
           "config": config}
    if path.is_file():
        try:
            if json.loads(path.read_text()) == json.loads(json.dumps(run)):
                return
        except ValueError:
            pass  # unreadable: written again below
    atomic_write_json(path, run)


def read_run(out) -> dict:
    """The settings of the run in folder `out`: {"arch", "args", "config" (a dict), "step" (finished)}:
    run.json when present, else the checkpoint's own record (runs written before run.json existed)."""
    out = Path(out)
    if not (out / "ckpt.npz").is_file():
        raise InputError(f"--resume: expected a run folder with ckpt.npz, got {str(out)!r} "
                         f"(train without --resume first, or give --out RUN_FOLDER)")
    _, _, meta = load_checkpoint(out / "ckpt.npz")
    run = {"arch": meta["arch"], "args": dict(meta.get("args", {})), "config": meta["config"].to_dict()}
    if (out / "run.json").is_file():
        try:
            saved = json.loads((out / "run.json").read_text())
            run.update({k: saved[k] for k in ("arch", "args", "config")})
        except (ValueError, KeyError):
            pass  # a damaged run.json: the checkpoint holds the same settings
    run["args"].pop("max_minutes", None)  # a limit of one invocation, not a setting of the run
    run["step"] = meta["step"]
    return run


def resolve_checkpoint(path=None, root="runs/gpt") -> Path:
    """A checkpoint file from what a person gives: the .npz itself, a run folder holding ckpt.npz (what
    `gpt train` prints), or nothing: the most recently written run under `root`, any backend or arch."""
    if path is None:
        found = sorted(Path(root).glob("*/ckpt.npz"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise InputError(f"--ckpt: expected a run under {root}/, found none (train one with `gpt train`, "
                             f"or give --ckpt RUN_FOLDER)")
        return found[-1]
    path = Path(path)
    if path.is_dir():
        if not (path / "ckpt.npz").is_file():
            raise InputError(f"--ckpt: expected a run folder holding ckpt.npz, got {str(path)!r} (it has none)")
        return path / "ckpt.npz"
    return path
