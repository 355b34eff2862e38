"""Same init, same batches: NumPy (hand-written backward + NumPy AdamW), JAX (jax.grad + jitted
AdamW) and torch (autograd + torch.optim.AdamW + clip_grad_norm_) follow the same loss trajectory
for 20 steps: float64 within 1e-8 relative per step, float32 within 1e-3."""
from __future__ import annotations

import numpy as np
import pytest

from triptych.common.gpt_config import GPTConfig, init_gpt_params
from triptych.common.tolerances import assert_close
from triptych.training.backends import OptimConfig, make_backend
from triptych.training.data import get_batch, load_char_data
from triptych.training.trainer import TrainArgs, lr_at

STEPS = 20


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def data():
    return load_char_data(limit_chars=50_000)


def _trajectory(backend, config, data, dtype):
    args = TrainArgs(lr=3e-3, warmup=5, steps=STEPS, min_lr=3e-4)
    # clip at 0.5 so clipping is active in the early steps (its norm and scaling are compared too)
    b = make_backend(backend, config, init_gpt_params(config, seed=3, dtype=np.dtype(dtype)), None, dtype,
                     OptimConfig(grad_clip=0.5, weight_decay=0.1))
    losses = [b.train_step(*get_batch(data.train, 4, config.block_size, 11, s), lr_at(s, args), s) for s in range(STEPS)]
    return np.array(losses), b.params()


def test_three_backends_follow_the_same_trajectory_float64(data):
    cfg = GPTConfig(vocab_size=data.tokenizer.vocab_size, block_size=32, n_layer=2, n_head=4, n_embd=32)
    ref, ref_params = _trajectory("torch", cfg, data, "float64")
    assert ref[-1] < ref[0] - 0.5  # it is learning, so the comparison is not between constants
    for name in ("numpy", "jax"):
        losses, params = _trajectory(name, cfg, data, "float64")
        assert_close(losses, ref, "float64", kind="trajectory", what=f"{name} vs torch losses")
        for k in ref_params:  # and the weights after 20 updates
            assert_close(params[k], ref_params[k], "float64", kind="grad", what=f"{name} {k} after {STEPS} steps")


def test_three_backends_follow_the_same_trajectory_float32(data):
    cfg = GPTConfig(vocab_size=data.tokenizer.vocab_size, block_size=32, n_layer=2, n_head=4, n_embd=32)
    ref, _ = _trajectory("torch", cfg, data, "float32")
    for name in ("numpy", "jax"):
        losses, params = _trajectory(name, cfg, data, "float32")
        assert all(p.dtype == np.float32 for p in params.values())
        assert_close(losses, ref, "float32", kind="trajectory", what=f"{name} vs torch float32 losses")
