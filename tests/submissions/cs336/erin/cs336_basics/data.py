import numpy as np
import torch


def get_batch(dataset, batch_size, context_length, device="cpu"):
    # the label window needs one more token, so stop one early
    idx = np.random.randint(0, len(dataset) - context_length - 1, size=(batch_size,))
    x = torch.stack([torch.from_numpy((dataset[i : i + context_length]).astype(np.int64)) for i in idx])
    y = torch.stack([torch.from_numpy((dataset[i + 1 : i + context_length + 1]).astype(np.int64)) for i in idx])
    if "cuda" in device:
        x, y = x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    else:
        x, y = x.to(device), y.to(device)
    return x, y
