"""Peak memory of a piece of work: torch.profiler on CPU, the CUDA allocator's counters on GPU.

On CPU the profiler (profile_memory=True) records every allocation and free with a timestamp: each
operator's *self* memory (what it allocated minus what it freed, children excluded) and "[memory]"
events for frees that happen between operators. Summing them in time order gives the bytes held at
each moment; the largest running sum is the peak above what was held when measuring started.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["peak_bytes", "training_step_memory"]


def peak_bytes(fn: Callable[[], object], device: torch.device | str = "cpu") -> tuple[int, object]:
    """(peak bytes allocated while fn() ran, above the level before it; fn's return value)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        return max(0, torch.cuda.max_memory_allocated(device) - before), result
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    held, peak = 0, 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        held += event.self_cpu_memory_usage
        peak = max(peak, held)
    return peak, result


def training_step_memory(model, batch: dict, device="cpu") -> dict:
    """Peak bytes of the forward pass (activations kept for backward) and of the backward pass
    (gradients and their temporaries, measured while the forward's activations are still held)."""
    import torch.nn.functional as F

    model.train()
    model.zero_grad(set_to_none=True)

    def forward():
        logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        return F.cross_entropy(logits.float(), batch["labels"])

    fwd, loss = peak_bytes(forward, device)
    bwd, _ = peak_bytes(loss.backward, device)
    model.zero_grad(set_to_none=True)
    return {"forward_bytes": fwd, "backward_bytes": bwd}
