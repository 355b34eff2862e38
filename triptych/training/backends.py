"""One training interface over the three GPTs, so the trainer, the checkpoints and the experiments
are written once:

    b = make_backend("jax", config, params, opt_state, dtype, hp)
    loss = b.train_step(x, y, lr, step)     forward, backward, clip, AdamW; returns the batch loss
    b.loss(x, y)  b.logits(idx)             evaluation (no dropout)
    b.params(), b.opt_state()               NumPy dicts, the same layout for every backend

The optimizer state is {"step", "m", "v"} with NumPy arrays keyed like the params, so a checkpoint
written by one backend resumes in any other.

The model is the GPT (common.gpt_config.GPTConfig) or the Llama-style decoder
(common.llama_config.LlamaConfig): the config's type picks it, and `model_ops` hands each backend
the same three functions for either, so nothing below the constructors knows which it trains.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from triptych.common.checks import InputError
from triptych.common.gpt_config import GPTConfig, init_gpt_params
from triptych.common.llama_config import LlamaConfig, init_llama_params

BACKENDS = ("numpy", "jax", "torch")
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class OptimConfig:
    betas: tuple = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # global-norm clipping; 0 switches it off


ARCHS = ("gpt", "llama")


def arch_of(config) -> str:
    """"gpt" or "llama", from the config's type (what checkpoints record)."""
    if isinstance(config, LlamaConfig):
        return "llama"
    if isinstance(config, GPTConfig):
        return "gpt"
    raise InputError(f"config: expected a GPTConfig or a LlamaConfig, got {type(config).__name__}")


def config_from_dict(arch: str, d: dict):
    if arch not in ARCHS:
        raise InputError(f"arch: expected one of {', '.join(ARCHS)}, got {arch!r}")
    return (LlamaConfig if arch == "llama" else GPTConfig).from_dict(d)


def init_params(config, seed: int = 0, dtype=np.float32) -> dict:
    """GPT-2's init for a GPTConfig, HF Llama's (N(0, 0.02), unit norms) for a LlamaConfig."""
    if arch_of(config) == "llama":
        return init_llama_params(config, seed, dtype)
    return init_gpt_params(config, seed, dtype)


def model_ops(backend: str, config):
    """(loss_and_grads, loss, logits) of the backend's module for the config's model, all with the
    GPT's argument order (params, x, y, config, rng); the Llama-style model has no dropout, so rng
    is accepted and unused. For JAX, loss_and_grads is the pure (unjitted) loss, for jax.grad."""
    mod = {"numpy": "numpy_impl", "jax": "jax_impl", "torch": "torch_ref"}[backend]
    import importlib

    if arch_of(config) == "llama":
        m = importlib.import_module(f"{mod}.llama")
        loss_fn = m._loss if backend == "jax" else m.llama_loss_and_grads
        return ((lambda p, x, y, c, rng=None: loss_fn(p, x, y, c)),
                (lambda p, x, y, c, rng=None: m.llama_loss(p, x, y, c)),
                (lambda p, idx, c: m.llama_forward(p, idx, c)))
    m = importlib.import_module(f"{mod}.gpt")
    return (m._loss if backend == "jax" else m.gpt_loss_and_grads), m.gpt_loss, m.gpt_forward


def _dropout(config) -> float:
    return getattr(config, "dropout", 0.0)


def _step_seed(seed: int, step: int) -> int:
    """A per-step seed for dropout, so a resumed run draws the same masks."""
    return int(np.random.default_rng((seed, step, 7)).integers(2**31))


class NumpyBackend:
    name = "numpy"

    def __init__(self, config, params, opt_state, dtype, hp: OptimConfig, seed: int = 0):
        from numpy_impl import optim
        self._loss_and_grads, self._loss, self._logits = model_ops("numpy", config)
        self.optim, self.config, self.hp, self.seed = optim, config, hp, seed
        self._p = {k: np.asarray(v, dtype=dtype).copy() for k, v in params.items()}
        self._s = {"step": opt_state["step"], "m": {k: np.asarray(v, dtype=dtype) for k, v in opt_state["m"].items()},
                   "v": {k: np.asarray(v, dtype=dtype) for k, v in opt_state["v"].items()}}

    def train_step(self, x, y, lr, step):
        rng = np.random.default_rng(_step_seed(self.seed, step)) if _dropout(self.config) > 0 else None
        loss, grads = self._loss_and_grads(self._p, x, y, self.config, rng)
        if self.hp.grad_clip:
            grads, _ = self.optim.clip_grad_norm(grads, self.hp.grad_clip)
        self._p, self._s = self.optim.adamw_step(self._p, grads, self._s, lr, self.hp.betas, self.hp.eps, self.hp.weight_decay)
        return float(loss)

    def loss(self, x, y):
        return float(self._loss(self._p, x, y, self.config))

    def logits(self, idx):
        return self._logits(self._p, idx, self.config)

    def params(self):
        return {k: v.copy() for k, v in self._p.items()}

    def opt_state(self):
        return {"step": self._s["step"], "m": dict(self._s["m"]), "v": dict(self._s["v"])}


class JaxBackend:
    """The whole step (value_and_grad, clipping, AdamW) is ONE jitted function."""
    name = "jax"

    def __init__(self, config, params, opt_state, dtype, hp: OptimConfig, seed: int = 0):
        import jax
        import jax.numpy as jnp

        import jax_impl  # noqa: F401  (x64 on)
        from jax_impl import optim
        pure_loss, self._loss, self._logits = model_ops("jax", config)
        self.jax, self.jnp, self.config, self.hp, self.seed = jax, jnp, config, hp, seed
        self._p = {k: jnp.asarray(np.asarray(v, dtype=dtype)) for k, v in params.items()}
        self._m = {k: jnp.asarray(np.asarray(v, dtype=dtype)) for k, v in opt_state["m"].items()}
        self._v = {k: jnp.asarray(np.asarray(v, dtype=dtype)) for k, v in opt_state["v"].items()}
        self._t = opt_state["step"]
        decays = tuple(sorted((k, v.ndim >= 2) for k, v in self._p.items()))
        b1b2eps = (float(hp.betas[0]), float(hp.betas[1]), float(hp.eps))
        clip = float(hp.grad_clip)

        def step_fn(p, m, v, x, y, t, lr, wd, key):
            loss, g = jax.value_and_grad(pure_loss)(p, x, y, config, key)
            if clip:
                g, _ = optim._clip(g, clip)
            p, m, v = optim._update(p, g, m, v, b1b2eps, decays, t, lr, wd)
            return loss, p, m, v

        self._step_fn = step_fn  # data_parallel.py jits the same function with its shardings
        self._step = jax.jit(step_fn, donate_argnums=(0, 1, 2))

    def _batch(self, a):
        """A batch as the step takes it (data_parallel.py splits its rows over devices)."""
        return self.jnp.asarray(a)

    def train_step(self, x, y, lr, step):
        jnp = self.jnp
        key = self.jax.random.PRNGKey(_step_seed(self.seed, step)) if _dropout(self.config) > 0 else None
        self._t += 1
        loss, self._p, self._m, self._v = self._step(
            self._p, self._m, self._v, self._batch(x), self._batch(y), self._t,
            jnp.asarray(lr, jnp.float64), jnp.asarray(self.hp.weight_decay, jnp.float64), key)
        return float(loss)

    def loss(self, x, y):
        return float(self._loss(self._p, x, y, self.config))

    def logits(self, idx):
        return np.asarray(self._logits(self._p, idx, self.config))

    def params(self):
        return {k: np.asarray(v).copy() for k, v in self._p.items()}

    def opt_state(self):
        return {"step": self._t, "m": {k: np.asarray(v) for k, v in self._m.items()},
                "v": {k: np.asarray(v) for k, v in self._v.items()}}


class TorchBackend:
    """Leaf tensors + torch.optim.AdamW (two groups: decay on ndim >= 2) + clip_grad_norm_."""
    name = "torch"

    def __init__(self, config, params, opt_state, dtype, hp: OptimConfig, seed: int = 0):
        import torch

        from torch_ref import gpt, optim
        _, self._loss, self._logits = model_ops("torch", config)
        self.torch, self.gpt, self.config, self.hp, self.seed = torch, gpt, config, hp, seed
        tdtype = getattr(torch, np.dtype(dtype).name)
        self._p = {k: torch.nn.Parameter(t) for k, t in gpt.params_to_torch(params, tdtype).items()}
        self._opt = optim.make_adamw(self._p, 0.0, hp.betas, hp.eps, hp.weight_decay)
        optim.adamw_state_from_dict(self._opt, self._p, opt_state)
        self._optim = optim

    def train_step(self, x, y, lr, step):
        torch = self.torch
        rng = torch.Generator().manual_seed(_step_seed(self.seed, step)) if _dropout(self.config) > 0 else None
        for group in self._opt.param_groups:
            group["lr"] = lr
        self._opt.zero_grad(set_to_none=True)
        loss = self._loss(self._p, torch.from_numpy(np.asarray(x)), torch.from_numpy(np.asarray(y)), self.config, rng)
        loss.backward()
        for p in self._p.values():  # a parameter the config never reads still steps (decay) with grad 0
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if self.hp.grad_clip:
            torch.nn.utils.clip_grad_norm_(list(self._p.values()), self.hp.grad_clip)
        self._opt.step()
        return float(loss.detach())

    def loss(self, x, y):
        with self.torch.no_grad():
            return float(self._loss(self._p, self.torch.from_numpy(np.asarray(x)),
                                    self.torch.from_numpy(np.asarray(y)), self.config))

    def logits(self, idx):
        with self.torch.no_grad():
            return self._logits(self._p, self.torch.from_numpy(np.asarray(idx)), self.config).numpy()

    def params(self):
        return self.gpt.params_from_torch(self._p)

    def opt_state(self):
        return self._optim.adamw_state_to_dict(self._opt, self._p)


def make_backend(name: str, config: GPTConfig | LlamaConfig, params: dict, opt_state: dict | None = None,
                 dtype: str = "float32", hp: OptimConfig = OptimConfig(), seed: int = 0, devices: int = 1):
    """A backend holding a copy of `params` (NumPy dict) and the optimizer state (fresh if None).
    devices > 1 (jax only): data-parallel over that many JAX devices (training/data_parallel.py)."""
    if name not in BACKENDS:
        raise InputError(f"backend: expected one of {', '.join(BACKENDS)}, got {name!r}")
    if dtype not in DTYPES:
        raise InputError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    if opt_state is None:
        opt_state = {"step": 0, "m": {k: np.zeros_like(v) for k, v in params.items()},
                     "v": {k: np.zeros_like(v) for k, v in params.items()}}
    arch_of(config)  # a clear error for anything but the two configs
    if devices != 1:
        if name != "jax":
            raise InputError(f"devices: expected 1 for the {name} backend (only jax splits a batch over "
                             f"devices), got {devices!r}")
        from triptych.training.data_parallel import DataParallelJaxBackend

        return DataParallelJaxBackend(config, params, opt_state, np.dtype(dtype), hp, seed, devices)
    cls = {"numpy": NumpyBackend, "jax": JaxBackend, "torch": TorchBackend}[name]
    return cls(config, params, opt_state, np.dtype(dtype), hp, seed)
