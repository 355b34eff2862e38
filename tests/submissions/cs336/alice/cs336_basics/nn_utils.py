from collections.abc import Iterable

import torch
from jaxtyping import Float, Int
from torch import Tensor


def softmax(x: Tensor, dim: int) -> Tensor:
    shifted = x - x.amax(dim=dim, keepdim=True)
    e = torch.exp(shifted)
    return e / e.sum(dim=dim, keepdim=True)


def cross_entropy(logits: Float[Tensor, "... vocab"], targets: Int[Tensor, "..."]) -> Float[Tensor, ""]:
    logits = logits - logits.amax(dim=-1, keepdim=True)
    log_z = torch.log(torch.exp(logits).sum(dim=-1))
    correct = torch.gather(logits, -1, targets.unsqueeze(-1)).squeeze(-1)
    return (log_z - correct).mean()


def clip_gradients(parameters: Iterable[torch.nn.Parameter], max_l2_norm: float, eps: float = 1e-6) -> None:
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    total = torch.sqrt(sum((g.detach() ** 2).sum() for g in grads))
    if total > max_l2_norm:
        factor = max_l2_norm / (total + eps)
        for g in grads:
            g.mul_(factor)
