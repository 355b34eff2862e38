"""Data parallelism for the fine-tuning loop: every process sees its part of the same global batch.

`accelerate launch --num_processes P cli.py finetune train ...` starts P copies of the program; accelerate
wraps the model in torch's DistributedDataParallel, which averages the gradients over the processes
after each backward pass. For P processes to take the very steps one process takes, three things
must hold, and this module provides them:

1. The same batches. Every process builds the same global batch order (LengthGroupedSampler, fixed
   by seed and epoch) and keeps a contiguous slice of each batch: process r of P takes
   batch[r*m//P : (r+1)*m//P] of a batch of m examples. So --batch-size stays the GLOBAL batch, the
   number of optimizer steps per epoch does not depend on P, and no example is dropped or repeated.
   (accelerate's own sharding of a batch sampler expects equal batches in a fixed order; ours are
   grouped by length and shuffled, with one shorter batch somewhere in the epoch.)
2. The same loss. A slice may be one example shorter than another, or, when a batch has fewer than
   P examples, empty: such a process gets a copy of the batch's first example with weight 0, since
   every process must take part in the gradient all-reduce. Each process scales its sum of
   per-example losses by P / (examples in the whole batch); DDP's average over P then gives exactly
   the mean loss over the global batch.
3. The same metrics: loss sums, counts and correct predictions are summed over processes.

Weights go into the batch as `weight` (1.0 real, 0.0 a padding copy); a padding copy travels through
the sampler as index -1 - i ("example i, weight 0").
"""
from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["ShardedBatches", "WeightedItems", "forget_other_precision", "reduce_sums", "rng_states", "set_rng_states"]


class ShardedBatches:
    """This process's slice of every batch of `batches` (a batch sampler with set_epoch)."""

    def __init__(self, batches, num_processes: int, process_index: int):
        if not 0 <= process_index < num_processes:
            raise ValueError(f"process_index: expected 0..{num_processes - 1}, got {process_index}")
        self.batches, self.num_processes, self.process_index = batches, num_processes, process_index

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def __iter__(self):
        P, r = self.num_processes, self.process_index
        for batch in self.batches:
            m = len(batch)
            part = list(batch[r * m // P:(r + 1) * m // P])
            yield part if part else [-1 - batch[0]]  # weight 0: see the module docstring

    def __len__(self) -> int:
        return len(self.batches)


class WeightedItems:
    """A list of examples indexed as the sampler says: i -> example i with weight 1.0, -1 - i -> weight 0.0."""

    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int) -> dict:
        if key < 0:
            return {**self.items[-1 - key], "weight": 0.0}
        return {**self.items[key], "weight": 1.0}


def reduce_sums(accelerator, values: list[torch.Tensor]) -> torch.Tensor:
    """The sums over all processes of a few scalars, in one all-reduce: shape (len(values),), float64
    so that counts stay exact and sums of many losses do not lose digits."""
    local = torch.stack([v.detach().to(torch.float64).reshape(()) for v in values]).to(accelerator.device)
    return accelerator.reduce(local, reduction="sum") if accelerator.num_processes > 1 else local


def rng_states(accelerator) -> list[dict]:
    """Every process's Python, NumPy and torch random states (dropout draws differ per process), in
    process order, gathered so the main process can save them for --resume."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if accelerator.num_processes == 1:
        return [state]
    from accelerate.utils import gather_object

    return gather_object([state])


def set_rng_states(accelerator, saved) -> None:
    """Restore this process's states from rng_states' list. A checkpoint written with another number of
    processes (or before every process's states were kept: one dict) restores the main process's
    states everywhere: the data order still matches, only dropout draws may differ."""
    states = saved if isinstance(saved, list) else [saved]
    state = states[accelerator.process_index] if len(states) == accelerator.num_processes else states[0]
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def leave_process_group(wait: bool = True) -> None:
    """Every process leaves the gloo/NCCL group before the interpreter exits. A group still open at
    exit is torn down by C++ destructors while its threads run, and the process aborts ("terminate
    called without an active exception", exit -6), which fails the launch after a finished run.
    One process (no group) has nothing to leave. wait=False after an error: the others may never
    reach a barrier."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def forget_other_precision(mixed: str) -> None:
    """accelerate keeps one AcceleratorState per process and refuses a second Accelerator with another
    mixed precision; a notebook or a test that trains in fp32 and then bf16 must start afresh. Only
    that state is dropped (its private reset, accelerate 1.16): the process group stays joined."""
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and str(state.get("_mixed_precision", mixed)) != mixed:
        AcceleratorState._reset_state(reset_partial_state=False)
