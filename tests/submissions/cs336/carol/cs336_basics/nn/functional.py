import torch
from jaxtyping import Float, Int
from torch import Tensor


def silu(x: Float[Tensor, "..."]) -> Float[Tensor, "..."]:
    return x * torch.sigmoid(x)


def softmax(x: Float[Tensor, "..."], dim: int = -1) -> Float[Tensor, "..."]:
    z = x - x.max(dim=dim, keepdim=True)[0]
    z = z.exp()
    return z / z.sum(dim=dim, keepdim=True)


def cross_entropy(logits: Float[Tensor, "... V"], target: Int[Tensor, "..."]) -> Float[Tensor, ""]:
    log_probs = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    return -log_probs.gather(-1, target.unsqueeze(-1)).mean()


@torch.no_grad()
def gradient_clip(params, max_norm: float, eps: float = 1e-6):
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    if total >= max_norm:
        for g in grads:
            g *= max_norm / (total + eps)
