import torch


def clip_grad(parameters, max_norm, eps=1e-6):
    for p in parameters:
        if p.grad is None:
            continue
        norm = torch.linalg.norm(p.grad)
        if norm > max_norm:
            p.grad *= max_norm / (norm + eps)


def cross_entropy(logits, targets):
    logits = logits - logits.max(dim=-1, keepdim=True).values
    logsumexp = torch.log(torch.sum(torch.exp(logits), dim=-1))
    return torch.mean(logsumexp - logits[torch.arange(logits.shape[0]), targets])
