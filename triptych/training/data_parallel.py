"""Data-parallel training of the tiny GPT (or the Llama-style decoder) over several JAX devices.

    mesh = Mesh(devices, ("data",))                          one axis: the batch
    params, m, v  ->  NamedSharding(mesh, P())                every device holds all of them
    x, y          ->  NamedSharding(mesh, P("data"))          each device holds B / n rows
    jit(step)(params, m, v, x, y, ...)                        the same program as on one device

No code here sums gradients across devices. The step is JaxBackend's own jitted function (forward,
value_and_grad, clipping, AdamW); given a batch split along its first axis and replicated weights,
XLA's partitioner runs each device's rows locally and inserts the all-reduce where the loss's mean
(and so every gradient) sums over the batch. jit's meaning does not depend on the sharding, so the
result is the one-device step up to the order of those sums; dropout masks are drawn for the global
batch shape and are the same too. tests/test_jax_data_parallel.py checks 1 device against 2.

On CPUs, XLA_FLAGS=--xla_force_host_platform_device_count=N (set before jax is imported) splits
the host into N devices: the way to run this without accelerators. On GPUs or TPU cores, jax.devices()
lists them and the same code runs unchanged.
"""
from __future__ import annotations

import numpy as np

from triptych.common.checks import InputError
from triptych.training.backends import JaxBackend, OptimConfig

__all__ = ["DataParallelJaxBackend", "device_count"]


def device_count() -> int:
    """How many devices JAX sees (CPU: 1 unless XLA_FLAGS forces more)."""
    import jax

    return jax.device_count()


class DataParallelJaxBackend(JaxBackend):
    """JaxBackend whose weights are replicated over `devices` JAX devices and whose batches are split
    across them (batch_size must be a multiple of devices). The same interface and checkpoints."""

    name = "jax"

    def __init__(self, config, params, opt_state, dtype, hp: OptimConfig, seed: int = 0, devices: int = 2):
        super().__init__(config, params, opt_state, dtype, hp, seed)
        import jax
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        have = jax.devices()
        if isinstance(devices, bool) or not isinstance(devices, int) or not 1 <= devices <= len(have):
            hint = ("; on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N set before the program "
                    "starts splits it into N devices") if have[0].platform == "cpu" else ""
            raise InputError(f"devices: expected an integer from 1 to {len(have)} (the devices JAX sees), "
                             f"got {devices!r}{hint}")
        self.devices = devices
        self.mesh = Mesh(np.array(have[:devices]), ("data",))
        self._replicated = NamedSharding(self.mesh, PartitionSpec())
        self._rows = NamedSharding(self.mesh, PartitionSpec("data"))
        self._p, self._m, self._v = (jax.device_put(tree, self._replicated) for tree in (self._p, self._m, self._v))
        # The outputs stay replicated, so the next step's inputs need no copy (and can be donated).
        rep = self._replicated
        self._step = jax.jit(self._step_fn, donate_argnums=(0, 1, 2), out_shardings=(rep, rep, rep, rep))

    def _batch(self, a):
        """(B, T) ids -> a global array whose rows are split over the devices."""
        a = np.asarray(a)
        if a.ndim < 1 or a.shape[0] % self.devices:
            raise InputError(f"batch_size: expected a multiple of devices={self.devices} (each device takes "
                             f"an equal share of the rows), got {a.shape[0] if a.ndim else a.shape}")
        return self.jax.device_put(a, self._rows)

    def loss(self, x, y):
        if np.shape(x)[0] % self.devices:  # an evaluation batch that does not split: on replicated weights
            return super().loss(x, y)
        return float(self._loss(self._p, self._batch(x), self._batch(y), self.config))
