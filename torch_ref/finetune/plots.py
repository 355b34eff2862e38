"""PNG figures for fine-tuning runs (matplotlib, Agg backend), each written atomically."""
from __future__ import annotations

from pathlib import Path

from triptych.common.io import atomic_save

__all__ = ["plot_curves", "plot_curve_sets", "plot_bars"]


def _save(fig, path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict], path, title: str) -> Path:
    """Train and validation loss (left) and accuracy (right) per epoch, in one figure."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "o-"), ("val", "s--")):
        ax_loss.plot(epochs, [h[f"{split}_loss"] for h in history], style, label=split)
        ax_acc.plot(epochs, [h[f"{split}_acc"] for h in history], style, label=split)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    return _save(fig, path)


def plot_curve_sets(histories: dict[str, list[dict]], path, title: str,
                    metrics=("train_loss", "val_loss", "val_acc")) -> Path:
    """Several runs' curves side by side, one panel per metric, one line per run."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name, history in histories.items():
            ax.plot([h["epoch"] for h in history], [h[metric] for h in history], "o-", label=name)
        ax.set(xlabel="epoch", ylabel=metric.replace("_", " "), title=metric.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    return _save(fig, path)


def plot_bars(names: list[str], panels: dict[str, list[float]], path, title: str, log_panels=()) -> Path:
    """One bar chart per panel (e.g. accuracy, trainable parameters, time, memory), bars = names."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 4), squeeze=False)
    for ax, (panel, values) in zip(axes[0], panels.items()):
        bars = ax.bar(names, values, color=[f"C{i}" for i in range(len(names))])
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=8)
        ax.set_title(panel)
        if panel in log_panels:
            ax.set_yscale("log")
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(title)
    return _save(fig, path)
