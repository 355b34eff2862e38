"""`gpt train --arch llama`: the Llama-style model through the GPT's trainer, checkpoints, exact
resume and sampling; the CLI's flags, and GPT-only / Llama-only options refused by name."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from triptych.common.checks import InputError
from triptych.common.llama_config import LlamaConfig, init_llama_params
from triptych.training.backends import make_backend
from triptych.training.checkpoint import load_checkpoint, save_checkpoint
from triptych.training.data import load_char_data
from triptych.training.trainer import TrainArgs, train

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def data():
    return load_char_data(limit_chars=30_000)


def _tiny(data, **kw):
    base = dict(vocab_size=data.tokenizer.vocab_size, block_size=16, d_model=16, n_layers=1, n_heads=2,
                n_kv_heads=1, d_ff=24)
    return LlamaConfig(**{**base, **kw})


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_interrupted_run_resumes_to_the_same_losses(tmp_path, data, backend):
    cfg = _tiny(data, tie_embeddings=False, rope_layout="interleaved")
    args = TrainArgs(backend=backend, steps=10, batch_size=4, warmup=2, eval_interval=5, eval_batches=2, ckpt_interval=100)
    full, b_full = train(args, cfg, data, out=tmp_path / "full", progress=False)
    assert full.history["train"][-1][1] < full.history["train"][0][1]  # it learns
    cut, _ = train(args, cfg, data, out=tmp_path / "cut", progress=False, interrupt_at=4)
    _, _, meta = load_checkpoint(tmp_path / "cut" / "ckpt.npz")
    assert cut.interrupted and meta["step"] == 4 and meta["arch"] == "llama" and meta["config"] == cfg
    resumed, b_res = train(args, cfg, data, out=tmp_path / "cut", progress=False, resume=True)
    assert resumed.step == 10 and not resumed.interrupted
    assert [l for _, l in resumed.history["train"]] == [l for _, l in full.history["train"]]
    assert resumed.val_loss == full.val_loss
    for k, v in b_full.params().items():
        assert np.array_equal(b_res.params()[k], v), k


def test_a_checkpoint_of_one_backend_resumes_in_another(tmp_path, data):
    cfg = _tiny(data)
    args = TrainArgs(backend="numpy", steps=6, batch_size=4, warmup=2, eval_interval=100, eval_batches=1,
                     ckpt_interval=100, dtype="float64")
    train(args, cfg, data, out=tmp_path / "run", progress=False, interrupt_at=3)
    ref, _ = train(args, cfg, data, out=tmp_path / "ref", progress=False)
    args.backend = "torch"
    resumed, _ = train(args, cfg, data, out=tmp_path / "run", progress=False, resume=True)
    np.testing.assert_allclose([l for _, l in resumed.history["train"]], [l for _, l in ref.history["train"]], rtol=1e-8)


def test_checkpoints_record_the_arch_and_old_ones_read_as_gpt(tmp_path, data):
    from triptych.common.gpt_config import GPTConfig, init_gpt_params
    cfg = _tiny(data)
    p = init_llama_params(cfg, 0)
    state = {"step": 0, "m": p, "v": p}
    save_checkpoint(tmp_path / "l.npz", p, state, {"arch": "llama", "config": cfg.to_dict(), "step": 0})
    assert load_checkpoint(tmp_path / "l.npz")[2]["config"] == cfg
    g = GPTConfig(vocab_size=cfg.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16)
    gp = init_gpt_params(g, 0)
    save_checkpoint(tmp_path / "g.npz", gp, {"step": 0, "m": gp, "v": gp}, {"config": g.to_dict(), "step": 0})
    meta = load_checkpoint(tmp_path / "g.npz")[2]
    assert meta["arch"] == "gpt" and meta["config"] == g
    with pytest.raises(InputError, match="arch: expected one of gpt, llama"):
        save_checkpoint(tmp_path / "x.npz", p, state, {"arch": "mamba", "config": cfg.to_dict(), "step": 0})
        load_checkpoint(tmp_path / "x.npz")
    with pytest.raises(InputError, match="config: expected a GPTConfig or a LlamaConfig"):
        make_backend("numpy", {"vocab_size": 3}, p)


def test_sampling_a_llama_checkpoint_is_greedy_decoding_at_top_k_1(data):
    from triptych.commands.gpt import logits_fn_for
    from triptych.training.sample import generate
    from numpy_impl.llama import llama_generate
    cfg = _tiny(data, block_size=64)
    p = init_llama_params(cfg, 1, std=0.3)
    tok = data.tokenizer
    prompt = list(tok.encode("Emma"))
    ref = tok.decode(list(llama_generate(p, np.array([prompt]), cfg, 20)[0]))  # the KV-cache path
    for backend in ("numpy", "torch"):
        assert generate(logits_fn_for(backend, p, cfg), cfg.block_size, tok, "Emma", 20, top_k=1) == ref


def _cli(*argv):
    return subprocess.run([sys.executable, "cli.py", *argv], cwd=ROOT, capture_output=True, text=True, timeout=180)


def test_cli_trains_and_samples_llama(tmp_path):
    out = tmp_path / "run"
    flags = ["gpt", "train", "--arch", "llama", "--backend", "numpy", "--steps", "3", "--batch-size", "2",
             "--block-size", "16", "--n-layer", "1", "--n-head", "4", "--n-kv-heads", "2", "--n-embd", "16",
             "--untied", "--rope-layout", "interleaved", "--limit-chars", "20000", "--eval-interval", "3",
             "--eval-batches", "1", "--no-progress", "--out", str(out)]
    r = _cli(*flags)
    assert r.returncode == 0, r.stderr
    params, _, meta = load_checkpoint(out / "ckpt.npz")
    c = meta["config"]
    assert meta["arch"] == "llama" and (c.n_heads, c.n_kv_heads, c.d_ff, c.tie_embeddings, c.rope_layout) == (4, 2, 48, False, "interleaved")
    assert "lm_head.weight" in params
    r = _cli("gpt", "sample", "--ckpt", str(out / "ckpt.npz"), "--length", "5", "--backend", "numpy")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr


def test_cli_refuses_options_of_the_other_arch_by_name():
    from triptych.cli import build_parser
    from triptych.commands.gpt import _config_from

    def config(*flags):
        return _config_from(build_parser().parse_args(["gpt", "train", *flags]), 80)

    with pytest.raises(InputError, match="--positions: a GPT-only option"):
        config("--arch", "llama", "--positions", "sinusoidal")
    with pytest.raises(InputError, match="--n-kv-heads: an --arch llama option"):
        config("--n-kv-heads", "2")
    with pytest.raises(InputError, match="n_kv_heads: expected a divisor of n_heads=4, got 3"):
        config("--arch", "llama", "--n-head", "4", "--n-kv-heads", "3")
    c = config("--arch", "llama", "--n-embd", "64")  # Llama's d_ff = 8/3 d rounded up to 8; MHA by default
    assert (c.d_ff, c.n_kv_heads, c.tie_embeddings) == (176, c.n_heads, True)
    assert type(config()).__name__ == "GPTConfig"
