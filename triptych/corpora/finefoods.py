"""Amazon fine-food reviews (Debian r-cran-modeldata: training_data / testing_data), binary sentiment.

4,000 training and 1,000 test reviews; label 1 = the reviewer's score was "great", 0 = "other"
(about 65/35, so always guessing "great" scores about 65%: the baseline to beat).
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

from triptych.corpora import require

if TYPE_CHECKING:
    import pandas

__all__ = ["load_fine_foods"]


def _read(path) -> "pandas.DataFrame":
    import pandas as pd

    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    frame = pd.DataFrame.from_records(rows, columns=["text", "label", "product"])
    return frame.astype({"text": str, "label": "int64", "product": str})


def load_fine_foods() -> tuple["pandas.DataFrame", "pandas.DataFrame"]:
    """(train, test) DataFrames with columns text (the review), label (1 = great, 0 = other), product
    (Amazon product id), in the package's row order. Shapes: (4000, 3) and (1000, 3)."""
    folder = require("fine-foods")
    return _read(folder / "train.jsonl"), _read(folder / "test.jsonl")
