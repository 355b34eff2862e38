"""Loss curves as PNG (matplotlib, Agg backend), written atomically."""
from __future__ import annotations

import numpy as np

from triptych.common.io import atomic_save


def _smooth(y, k: int):
    if len(y) < 2 * k or k <= 1:
        return np.asarray(y, dtype=float)
    kernel = np.ones(k) / k
    return np.convolve(y, kernel, mode="valid")


def plot_loss_curves(runs: dict[str, dict], path, title: str = "tiny GPT on Jane Austen") -> None:
    """runs: label -> {"train": [(step, loss), ...], "val": [(step, loss), ...]}.
    Train curves are smoothed (moving average), validation points are drawn as markers."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (label, h) in enumerate(runs.items()):
        color = f"C{i % 10}"
        if h.get("train"):
            steps, losses = np.array(h["train"], dtype=float).T
            k = max(1, len(losses) // 50)
            ys = _smooth(losses, k)
            ax.plot(steps[len(steps) - len(ys):], ys, color=color, lw=1.2, label=f"{label} train")
        if h.get("val"):
            vs, vl = np.array(h["val"], dtype=float).T
            ax.plot(vs, vl, "o--", color=color, ms=4, lw=0.8, label=f"{label} val")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/char)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def plot_length_curves(runs: dict[str, dict[str, list]], path, block_size: int,
                       title: str = "train short, test long") -> None:
    """runs: method -> {panel title: [(eval length, loss or None), ...]}: one panel per key (the whole
    window; the positions past the training block only), one line per method, loss against the eval
    length on a log2 axis. None (learned positions past their table) leaves a gap."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys(k for curves in runs.values() for k in curves))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for i, (label, curves) in enumerate(runs.items()):
            pts = [(L, y) for L, y in curves.get(panel, []) if y is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, "o-", color=f"C{i % 10}", lw=1.5, ms=5, label=label)
        ax.axvline(block_size, color="0.6", ls=":", lw=1)  # the training length
        ax.set_xscale("log", base=2)
        ax.set_xlabel("eval length (characters, log scale)")
        ax.set_ylabel("held-out cross-entropy (nats/char)")
        ax.set_title(panel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
