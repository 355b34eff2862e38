import numpy as np
import torch


def get_batch(x: np.ndarray, batch_size: int, context_length: int, device: str = "cpu"):
    starts = np.random.randint(0, len(x) - context_length, batch_size)
    offsets = starts[:, None] + np.arange(context_length)[None, :]
    inputs = torch.tensor(x[offsets], dtype=torch.long, device=device)
    targets = torch.tensor(x[offsets + 1], dtype=torch.long, device=device)
    return inputs, targets
