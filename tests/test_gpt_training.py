"""The GPT training package: data, exact resume after an interruption (in-process and a real
SIGINT to `cli.py gpt train`), checkpoints, sampling, experiments and CLI errors."""
from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from triptych.common.checks import InputError
from triptych.common.gpt_config import GPTConfig
from triptych.common.tolerances import assert_close
from triptych.training.checkpoint import load_checkpoint, save_checkpoint
from triptych.training.data import VAL_FRACTION, CharTokenizer, get_batch, load_char_data
from triptych.training.trainer import TrainArgs, train
from torch_ref.gpt import gpt_loss, params_to_torch

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def data():
    return load_char_data(limit_chars=30_000)


def _tiny(data, **kw):
    return GPTConfig(vocab_size=data.tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16, **kw)


def test_tokenizer_split_and_batches(data):
    from triptych.corpora.austen import load_austen_text
    text = load_austen_text()
    tok = data.tokenizer
    assert tok.chars == "".join(sorted(set(text)))  # every character of the corpus, once
    assert tok.decode(tok.encode(text[:5000])) == text[:5000]
    ids = tok.encode(text[:30_000])
    n_val = int(30_000 * VAL_FRACTION)
    assert np.array_equal(data.val, ids[-n_val:]) and np.array_equal(data.train, ids[:-n_val])
    x, y = get_batch(data.train, 4, 16, seed=1, step=5)
    assert x.shape == y.shape == (4, 16)
    assert np.array_equal(x[:, 1:], y[:, :-1])  # targets are the next characters
    assert np.array_equal(get_batch(data.train, 4, 16, 1, 5)[0], x)  # a function of (seed, step)
    with pytest.raises(InputError, match="text"):
        CharTokenizer("ab").encode("abc")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_interrupted_run_resumes_to_the_same_losses(tmp_path, data, backend):
    cfg = _tiny(data, dropout=0.1)  # dropout too: its masks must be re-drawn identically
    args = TrainArgs(backend=backend, steps=10, batch_size=4, warmup=2, eval_interval=5, eval_batches=2, ckpt_interval=100)
    full, b_full = train(args, cfg, data, out=tmp_path / "full", progress=False)
    cut, _ = train(args, cfg, data, out=tmp_path / "cut", progress=False, interrupt_at=4)
    assert cut.interrupted and cut.step == 4 and load_checkpoint(tmp_path / "cut" / "ckpt.npz")[2]["step"] == 4
    resumed, b_res = train(args, cfg, data, out=tmp_path / "cut", progress=False, resume=True)
    assert resumed.step == 10 and not resumed.interrupted
    assert [l for _, l in resumed.history["train"]] == [l for _, l in full.history["train"]]
    assert resumed.val_loss == full.val_loss
    for k, v in b_full.params().items():
        assert np.array_equal(b_res.params()[k], v), k


def test_sigint_to_the_cli_saves_a_checkpoint_that_resumes_exactly(tmp_path, data):
    out = tmp_path / "run"
    flags = ["--backend", "numpy", "--steps", "100000", "--batch-size", "4", "--block-size", "16", "--n-layer", "1",
             "--n-head", "2", "--n-embd", "16", "--limit-chars", "30000", "--eval-interval", "1000",
             "--eval-batches", "2", "--ckpt-interval", "1000", "--no-progress", "--warmup", "3"]
    proc = subprocess.Popen([sys.executable, "cli.py", "gpt", "train", *flags, "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and "gpt train" not in proc.stdout.readline():  # started training
        pass
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        raise AssertionError(f"still running 60 s after SIGINT\nstdout:\n{stdout}\nstderr:\n{stderr}") from None
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stdout
    params, opt, meta = load_checkpoint(out / "ckpt.npz")
    k = meta["step"]
    assert k >= 1 and opt["step"] == k and len(meta["history"]["train"]) == k
    # the killed run's first k steps, then 3 more after resuming, equal an uninterrupted run's k + 3
    args = TrainArgs(**meta["args"])
    resumed, _ = train(args, meta["config"], data, out=out, resume=True, progress=False, interrupt_at=k + 3)
    ref, _ = train(args, meta["config"], data, out=tmp_path / "ref", progress=False, interrupt_at=k + 3)
    assert [l for _, l in resumed.history["train"]] == [l for _, l in ref.history["train"]]


def test_checkpoint_round_trip_and_bad_files(tmp_path, data):
    cfg = _tiny(data, positions="rope", similarity="cosine")
    from triptych.common.gpt_config import init_gpt_params
    p = init_gpt_params(cfg, 0)
    state = {"step": 3, "m": {k: v + 1 for k, v in p.items()}, "v": {k: v * 0 + 2 for k, v in p.items()}}
    save_checkpoint(tmp_path / "c.npz", p, state, {"config": cfg.to_dict(), "step": 3})
    p2, s2, meta = load_checkpoint(tmp_path / "c.npz")
    assert meta["config"] == cfg and s2["step"] == 3
    assert all(np.array_equal(p2[k], p[k]) and np.array_equal(s2["m"][k], state["m"][k]) for k in p)
    (tmp_path / "junk.npz").write_bytes(b"not a checkpoint")
    for bad in (tmp_path / "missing.npz", tmp_path / "junk.npz"):
        with pytest.raises(InputError, match="checkpoint"):
            load_checkpoint(bad)


def test_sampling_follows_the_model(data):
    from triptych.common.gpt_config import init_gpt_params
    from triptych.training.sample import generate
    from numpy_impl.gpt import gpt_forward
    cfg = _tiny(data)
    p = init_gpt_params(cfg, 1)
    tok = data.tokenizer
    fwd = lambda idx: gpt_forward(p, idx, cfg)  # noqa: E731
    text = generate(fwd, cfg.block_size, tok, "Emma", 30, top_k=1)
    # top_k=1 is greedy decoding: recompute each argmax with torch's forward on the same context
    tp = params_to_torch(p)
    ids = list(tok.encode("Emma"))
    from torch_ref.gpt import gpt_forward as torch_forward
    for _ in range(30):
        logits = torch_forward(tp, torch.tensor([ids[-cfg.block_size:]]), cfg)
        ids.append(int(logits[0, -1].argmax()))
    assert text == tok.decode(ids)
    assert generate(fwd, cfg.block_size, tok, "Emma", 30, seed=3) == generate(fwd, cfg.block_size, tok, "Emma", 30, seed=3)
    with pytest.raises(InputError, match="temperature"):
        generate(fwd, cfg.block_size, tok, "Emma", 3, temperature=0)


def test_every_experiment_runs_in_numpy_and_reports_torch_checked_losses(data):
    from triptych.training.experiments import EXPERIMENTS, Budget, run_experiment
    budget = Budget(backend="numpy", steps=2, batch_size=2, block_size=16, n_layer=1, n_head=2, n_embd=16,
                    eval_batches=1)
    cache = {}
    for name in EXPERIMENTS:
        rows = run_experiment(name, budget, data, progress=False, cache=cache)
        assert len(rows) == len(EXPERIMENTS[name][1])
        for r in rows:
            assert math.isfinite(r.train_loss) and math.isclose(r.val_ppl, math.exp(r.val_loss))
    # the reported validation loss of a trained variant equals torch's loss of its weights on the same windows
    from triptych.training.trainer import VAL_SEED
    for (backend_name, cfg), (res, backend, _) in list(cache.items())[:4]:
        x, y = get_batch(data.val, budget.batch_size, cfg.block_size, VAL_SEED, 0)
        ref = gpt_loss(params_to_torch(backend.params()), torch.tensor(x), torch.tensor(y), cfg)
        assert_close(res.val_loss, float(ref), "float32", what=str(cfg))
    pos = run_experiment("positions", budget, data, progress=False, cache=cache)
    assert [r.variant for r in pos] == ["learned", "sinusoidal x sqrt(C)", "rope", "alibi", "none"]
    assert pos[0].extra["val@16"] is not None and pos[0].extra["val@32"] is None  # learned cannot extrapolate
    for r in pos[1:]:  # the others are scored at 1x, 2x, 4x, 8x the training block
        assert all(math.isfinite(r.extra[f"val@{L}"]) for L in (16, 32, 64, 128))
        assert all(math.isfinite(r.extra[f"beyond@{L}"]) for L in (32, 64, 128))


def _cli(*argv):
    return subprocess.run([sys.executable, "cli.py", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cli_errors_are_one_line_exit_2(tmp_path):
    r = _cli("gpt", "sample", "--ckpt", str(tmp_path / "none.npz"))
    assert r.returncode == 2 and "checkpoint" in r.stderr and "Traceback" not in r.stderr
    r = _cli("gpt", "train", "--n-embd", "30", "--n-head", "4", "--out", str(tmp_path / "x"), "--steps", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def _positions_budget():
    from triptych.training.experiments import Budget
    return Budget(backend="numpy", steps=3, batch_size=2, block_size=8, n_layer=1, n_head=2, n_embd=16, eval_batches=1)


def test_long_window_losses_score_the_same_characters_as_torch_cross_entropy(data):
    """Every length scores the same characters (one draw at 8x, cut into shorter windows): torch's
    F.cross_entropy on those windows gives the whole-window loss, and with the first block's targets
    ignored (-100) the loss past the training block."""
    import torch.nn.functional as F

    from triptych.training.backends import make_backend
    from triptych.training.data import get_batch
    from triptych.training.experiments import EVAL_TOKENS_PER_BATCH, long_window_losses
    from triptych.training.trainer import VAL_SEED
    from triptych.common.gpt_config import init_gpt_params
    from torch_ref.gpt import gpt_forward

    budget = _positions_budget()
    cfg = GPTConfig(vocab_size=data.tokenizer.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16, positions="alibi")
    params = init_gpt_params(cfg, 1, np.float64)
    got = long_window_losses(make_backend("numpy", cfg, params, dtype="float64"), data.val, budget, [8, 16, 64])
    draws = [get_batch(data.val, 1, 64, VAL_SEED, i) for i in range(budget.eval_batches * EVAL_TOKENS_PER_BATCH)]
    tp = params_to_torch(params)
    for L in (8, 16, 64):
        x = torch.tensor(np.concatenate([d[0].reshape(-1, L) for d in draws]))
        y = torch.tensor(np.concatenate([d[1].reshape(-1, L) for d in draws]))
        logits = gpt_forward(tp, x, cfg).reshape(-1, cfg.vocab_size)
        assert_close(got[L][0], float(F.cross_entropy(logits, y.reshape(-1))), "float64", what=f"loss at {L}")
        if L == 8:
            assert got[L][1] is None
        else:
            y_beyond = y.clone()
            y_beyond[:, :8] = -100
            assert_close(got[L][1], float(F.cross_entropy(logits, y_beyond.reshape(-1), ignore_index=-100)), "float64",
                         what=f"loss past the block at {L}")


def test_positions_study_resumes_and_writes_table_plot_and_report(tmp_path, data, monkeypatch):
    import triptych.training.experiments as ex
    from triptych.training.experiments import Budget, run_experiment, save_plot, write_report

    budget = _positions_budget()
    rows = run_experiment("positions", budget, data, progress=False, out=tmp_path)
    assert all((tmp_path / "runs" / "positions" / ex._slug(r.variant) / "row.json").is_file() for r in rows)

    def no_training(*a, **k):
        raise AssertionError("resume retrained a finished variant")
    monkeypatch.setattr(ex, "train", no_training)
    again = run_experiment("positions", budget, data, progress=False, out=tmp_path, resume=True)
    assert [(r.variant, r.extra) for r in again] == [(r.variant, r.extra) for r in rows]  # read back, not retrained
    with pytest.raises(InputError, match="resume: the run in"):  # another budget does not reuse these runs
        run_experiment("positions", Budget(**{**budget.__dict__, "lr": 1e-3}), data, progress=False, out=tmp_path,
                       resume=True)
    monkeypatch.undo()

    png = save_plot("positions", rows, tmp_path, budget.block_size)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = write_report(rows, budget, tmp_path, {"positions": png}).read_text()
    assert "| method | 8 (1x) | 16 (2x) | 32 (4x) | 64 (8x) | 64 - 8 |" in report
    assert "| learned | " in report and "n/a" in report and "positions.png" in report
