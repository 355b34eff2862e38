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


def _grouped(ax, names: list[str], series: dict[str, list]) -> None:
    """Bars side by side per name, one colour per series (e.g. torch vs numpy); None = not measured."""
    import numpy as np

    x = np.arange(len(names))
    width = 0.8 / len(series)
    for j, (label, values) in enumerate(series.items()):
        shown = [np.nan if v is None else v for v in values]
        bars = ax.bar(x + (j - (len(series) - 1) / 2) * width, shown, width, label=label, color=f"C{j}")
        ax.bar_label(bars, labels=["-" if v is None else f"{v:.0f}" if 100 <= v < 1e5 else f"{v:.3g}"
                                   for v in values], fontsize=7)
    ax.set_xticks(x, names)
    ax.margins(y=0.12)  # headroom for the labels above the tallest bars
    ax.legend(fontsize=8, loc="best")


def plot_bars(names: list[str], panels: dict, path, title: str, log_panels=(), columns: int | None = None) -> Path:
    """One bar chart per panel (e.g. accuracy, trainable parameters, time, memory), bars = names. A
    panel's value is a list (one bar per name) or a dict {series: list} (grouped bars, a legend).
    columns: panels per row (default: all in one row)."""
    import math

    plt = _pyplot()
    ncols = min(columns or len(panels), len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.6 * nrows + 0.4), squeeze=False)
    for ax, (panel, values) in zip(axes.flat, panels.items()):
        if isinstance(values, dict):
            _grouped(ax, names, values)
        else:
            bars = ax.bar(names, values, color=[f"C{i}" for i in range(len(names))])
            ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=8)
        ax.set_title(panel)
        if panel in log_panels:
            ax.set_yscale("log")
        ax.tick_params(axis="x", rotation=30)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title)
    return _save(fig, path)
