"""What every fine-tuning study shares: its task, its tables on the console, its results.json."""
from __future__ import annotations

from pathlib import Path

from triptych.common.io import atomic_write_json
from torch_ref.finetune.config import TrainConfig
from torch_ref.finetune.data import Task, load_task

__all__ = ["print_table", "study_task", "finish", "majority_acc"]


def print_table(console, title: str, columns: list[str], rows: list[list], caption: str | None = None):
    """A rich table: first column left, the rest right; floats with 4 significant digits, None as "-"."""
    from rich.table import Table

    table = Table(title=title, caption=caption)
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*["-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v) for v in r])
    console.print(table)


def study_task(cfg: TrainConfig, task: Task | None) -> Task:
    """The task a test passed in, else cfg.task loaded."""
    return task or load_task(cfg.task, seed=cfg.seed, data_files=cfg.data_files)


def finish(out: Path, result: dict, console, quiet: bool) -> dict:
    """Write results.json (atomically), say where, return the result."""
    atomic_write_json(out / "results.json", result)
    if not quiet:
        console.print(f"wrote {out}/results.json" + "".join(f", {p}" for p in result.get("plots", [])))
    return result


def majority_acc(task: Task) -> float:
    """Test accuracy of always answering the most common training label."""
    from torch_ref.finetune.data import dataset_summary

    return dataset_summary(task)[2]["majority_acc"]
