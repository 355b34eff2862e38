"""Peak memory of a piece of work: torch.profiler on CPU, the CUDA allocator's counters on GPU.

On CPU the profiler (profile_memory=True) records every allocation and free with a timestamp: each
operator's *self* memory (what it allocated minus what it freed, children excluded) and "[memory]"
events for frees that happen between operators. Summing them in time order gives the bytes held at
each moment; the largest running sum is the peak above what was held when measuring started.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import contextmanager

import torch

__all__ = ["peak_bytes", "training_step_memory"]


@contextmanager
def _native_stderr_silenced():
    """Kineto writes "USDT: ... profiler_start/stop" lines straight to file descriptor 2 on every
    profile, whatever KINETO_LOG_LEVEL says; point fd 2 at /dev/null meanwhile. Exceptions still
    propagate (and are printed after the descriptor is restored); a warning printed inside the
    measured step itself is lost, the price of a quiet terminal for a one-step measurement."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _measure(fn: Callable[[], object], device: torch.device) -> tuple[int, int, object]:
    """(peak bytes held while fn() ran, bytes still held when it returned, fn's return value), both
    counted from the level just before fn() started."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        after = torch.cuda.memory_allocated(device)
        return max(0, torch.cuda.max_memory_allocated(device) - before), after - before, result
    from torch.profiler import ProfilerActivity, profile

    with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    held, peak = 0, 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        held += event.self_cpu_memory_usage
        peak = max(peak, held)
    return peak, held, result


def peak_bytes(fn: Callable[[], object], device: torch.device | str = "cpu") -> tuple[int, object]:
    """(peak bytes allocated while fn() ran, above the level before it; fn's return value)."""
    peak, _, result = _measure(fn, torch.device(device))
    return peak, result


def training_step_memory(model, batch: dict, device="cpu") -> dict:
    """Peak bytes of one training step's forward and backward passes, both counted from the level
    before the forward (weights and optimizer state excluded):
      forward_bytes   activations kept for the backward, plus the forward's temporaries;
      backward_bytes  what the forward left held (activations) plus, at the backward's worst
                      moment, the gradients and their temporaries. The backward frees activations
                      as it goes, so its peak above its own start alone can be near zero."""
    import torch.nn.functional as F

    device = torch.device(device)
    model.train()
    model.zero_grad(set_to_none=True)

    def forward():
        logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        return F.cross_entropy(logits.float(), batch["labels"])

    fwd_peak, held_after_forward, loss = _measure(forward, device)
    bwd_peak, _, _ = _measure(loss.backward, device)
    model.zero_grad(set_to_none=True)
    return {"forward_bytes": fwd_peak, "backward_bytes": held_after_forward + bwd_peak}
