"""Data-parallel JAX training (triptych/training/data_parallel.py) takes the steps of one device.

XLA_FLAGS=--xla_force_host_platform_device_count=2 splits the CPU into two JAX devices, and it must
be set before jax is imported, so the runs happen in a subprocess (this test process has imported
jax already). There, the tiny GPT (with dropout, so the masks must match too) trains 20 AdamW steps
on one device and on two (batch rows split, weights replicated); here the losses and final weights
are compared within the data-parallel float32 tolerance.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from triptych.common.checks import InputError
from triptych.common.tolerances import assert_close

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import json, sys
import numpy as np
import jax
import jax_impl  # noqa: F401  (x64 on, as in training)
from triptych.common.gpt_config import GPTConfig, init_gpt_params
from triptych.training.backends import make_backend

out = sys.argv[1]
config = GPTConfig(vocab_size=17, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.1)
params = init_gpt_params(config, 0, np.float32)
# 20 steps of 8 windows of 16 + 1 tokens counting up mod 17 from random starts: learnable in a few steps
data = (np.random.default_rng(0).integers(0, 17, (20, 8, 1)) + np.arange(17)) % 17
runs, info = {}, {"device_count": jax.device_count()}
for devices in (1, 2):
    b = make_backend("jax", config, params, None, "float32", seed=3, devices=devices)
    losses = [b.train_step(w[:, :-1], w[:, 1:], 1e-2, step) for step, w in enumerate(data)]
    val = b.loss(data[0, :, :-1], data[0, :, 1:])
    runs[devices] = {"losses": np.array(losses), "val": np.array(val), **b.params()}
    if devices == 2:
        info["batch_devices"] = len(b._batch(data[0, :, :-1]).sharding.device_set)
        info["batch_shard_rows"] = sorted({s.data.shape[0] for s in b._batch(data[0, :, :-1]).addressable_shards})
        info["params_replicated"] = all(v.sharding.is_fully_replicated for v in b._p.values())
np.savez(out + "/runs.npz", **{f"{d}/{k}": v for d, r in runs.items() for k, v in r.items()})
json.dump(info, open(out + "/info.json", "w"))
'''


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("jax_dp")
    env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip(),
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = np.load(out / "runs.npz")
    split = {d: {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith(f"{d}/")} for d in (1, 2)}
    return split, json.loads((out / "info.json").read_text())


def test_the_batch_is_split_and_the_weights_replicated(runs):
    _, info = runs
    assert info["device_count"] == 2
    assert info["batch_devices"] == 2 and info["batch_shard_rows"] == [4]  # 8 rows: 4 on each device
    assert info["params_replicated"]


def test_two_devices_take_the_steps_of_one(runs):
    one, two = runs[0][1], runs[0][2]
    assert_close(two["losses"], one["losses"], "float32", "data_parallel", "training losses, 2 devices vs 1")
    assert_close(two["val"], one["val"], "float32", "data_parallel", "evaluation loss")
    names = set(one) - {"losses", "val"}
    assert names and names == set(two) - {"losses", "val"}
    # The key bias adds q.b_k to every score of a query, which the softmax cancels: its exact gradient
    # is zero, so rounding alone moves it (AdamW scales even a 1e-9 gradient to a step), differently
    # under any other order of sums. Both runs must leave it near zero; its value is not compared.
    noise = {n for n in names if n.endswith("attn.b_k")}
    assert noise and all(float(np.abs(run[n]).max()) < 1e-3 for run in (one, two) for n in noise)
    for name in sorted(names - noise):
        assert_close(two[name], one[name], "float32", "data_parallel", f"final {name}")
    # Training moved the weights far beyond the tolerance: the agreement is not that of two idle runs.
    from triptych.common.gpt_config import GPTConfig, init_gpt_params

    start = init_gpt_params(GPTConfig(vocab_size=17, block_size=16, n_layer=2, n_head=2, n_embd=16), 0, np.float32)
    assert max(float(np.abs(one[k] - start[k]).max()) for k in names) > 1e-2
    assert one["losses"][-1] < 0.8 * one["losses"][0]  # and it learned


def test_devices_beyond_jax_or_for_another_backend_are_refused():
    from triptych.common.gpt_config import GPTConfig, init_gpt_params
    from triptych.training.backends import make_backend

    config = GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4)
    params = init_gpt_params(config, 0, np.float32)
    with pytest.raises(InputError, match="devices: expected 1 for the torch backend"):
        make_backend("torch", config, params, devices=2)
    with pytest.raises(InputError, match="devices: expected an integer from 1 to"):
        make_backend("jax", config, params, devices=10_000)


def _gpt_train(tmp_path, *flags, devices_flag: str | None = None):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "COLUMNS": "150"}
    if devices_flag:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices_flag}").strip()
    cmd = [sys.executable, str(REPO / "cli.py"), "gpt", "train", "--steps", "4", "--batch-size", "4",
           "--block-size", "16", "--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--eval-interval", "2",
           "--eval-batches", "1", "--limit-chars", "20000", "--no-progress", "--out", str(tmp_path / "run"), *flags]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_gpt_train_devices_flag(tmp_path):
    """`gpt train --backend jax --devices 2` trains from the command line (2 forced host devices) and
    writes the usual checkpoint; --devices with torch, or more devices than JAX sees, is one line, exit 2."""
    proc = _gpt_train(tmp_path, "--backend", "jax", "--devices", "2", devices_flag="2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "ckpt.npz").is_file()
    for flags, words in ((("--backend", "torch", "--devices", "2"), "devices: expected 1 for the torch backend"),
                         (("--backend", "jax", "--devices", "3"), "xla_force_host_platform_device_count")):
        proc = _gpt_train(tmp_path, *flags)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and words in errors[0], proc.stderr
