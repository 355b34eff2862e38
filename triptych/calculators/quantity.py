"""One computed number with its unit and the one-line formula that produced it, numbers substituted.

Every calculator returns Quantity objects, so the CLI prints the same explanation a test reads and
`--json` names every number by its key."""
from __future__ import annotations

from dataclasses import dataclass

GB = 10 ** 9   # SI gigabyte (disk and marketing sizes)
GiB = 2 ** 30  # binary gibibyte (what nvidia-smi and torch.cuda report as "GB")


def fmt_int(n: int) -> str:
    return f"{int(n):,}"


def fmt_bytes(n: int | float) -> str:
    """'25,769,803,776 bytes = 25.770 GB = 24.000 GiB'"""
    return f"{fmt_int(n)} bytes = {n / GB:,.3f} GB = {n / GiB:,.3f} GiB"


@dataclass(frozen=True)
class Quantity:
    key: str       # the JSON key
    label: str     # what it is, in words
    value: int | float
    unit: str      # "params", "bytes", "ratio", "probability", "nats"
    formula: str   # one line: the formula with the numbers substituted

    def value_text(self) -> str:
        if self.unit == "bytes":
            return fmt_bytes(self.value)
        if self.unit == "params":
            return f"{fmt_int(self.value)} params"
        if self.unit == "ratio":
            return f"{self.value:.6g} ({self.value:.4%})"
        return f"{self.value:.6g}" + (f" {self.unit}" if self.unit not in ("probability", "") else "")

    def line(self) -> str:
        return f"{self.label}: {self.value_text()}    [{self.formula}]"

    def to_json(self) -> dict:
        out = {"value": self.value, "unit": self.unit, "label": self.label, "formula": self.formula}
        if self.unit == "bytes":
            out["GB"] = self.value / GB
            out["GiB"] = self.value / GiB
        return out


def as_dict(quantities) -> dict[str, int | float]:
    """{key: value}: the flat object `calc ... --json` prints (with details under "explain")."""
    return {q.key: q.value for q in quantities}
