"""The checker as a Python API, for a user's own pytest file:

    from triptych.crosscheck import check, assert_matches

    def test_my_split_heads():
        assert_matches("split_heads", my_split_heads)      # raises with the diagnosis

    report = check("self_attention", my_module)            # a function, a class or a module

Your function runs in this process (it is your own code, in your own test run), on the same cases
and with the same judging as `triptych check FILE`, which runs a file in a sandboxed child instead.
In Jupyter or Colab the returned Report shows as the table `triptych check` prints (print() gives
its text); `%load_ext triptych` adds `%%check`, which grades a cell in the sandboxed child.
"""
from __future__ import annotations

import inspect
import types
from dataclasses import dataclass


from triptych.common.checks import InputError
from triptych.crosscheck import exercises as catalogue
from triptych.crosscheck.sandbox import worker
from triptych.crosscheck.session import FRAMEWORKS, grade_cases


@dataclass
class Report:
    exercise: str
    framework: str
    rows: list[dict]

    @property
    def ok(self) -> bool:
        return all(r["ok"] for r in self.rows)

    @property
    def diagnoses(self) -> list[str]:
        return [r["diagnosis"] for r in self.rows if r.get("diagnosis")]

    @property
    def mistakes(self) -> set[str]:
        """Names of the planted-mistake variants matched (e.g. {'no_scale'})."""
        return {r["mistake"] for r in self.rows if r.get("mistake")}

    # What a notebook, print() and the REPL show: the table `triptych check` prints, built by the
    # same code (triptych/crosscheck/report.py); repr() stays one line.
    def _renderables(self, width: int | None = None) -> list:
        from triptych.crosscheck.report import NOTEBOOK_WIDTH, rows_renderables

        return rows_renderables(self.exercise, self.exercise, self.framework, self.rows, self.ok,
                                width or NOTEBOOK_WIDTH)

    def _repr_html_(self) -> str:
        from triptych.crosscheck.report import renderables_html

        return renderables_html(self._renderables())

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self) if cycle else str(self))

    def __str__(self) -> str:
        from triptych.crosscheck.report import renderables_text

        return renderables_text(self._renderables())

    def __repr__(self) -> str:
        from triptych.crosscheck.report import short_repr

        return short_repr("Report", self.exercise, self.framework, self.rows, self.ok)


def _guess_framework(obj) -> str:
    g = getattr(obj, "__dict__", {}) if isinstance(obj, types.ModuleType) else getattr(obj, "__globals__", None)
    if g is None and inspect.isclass(obj):
        g = vars(inspect.getmodule(obj) or types.SimpleNamespace())
    g = g or {}
    mods = {getattr(v, "__name__", "").split(".")[0] for v in g.values() if isinstance(v, types.ModuleType)}
    return "torch" if "torch" in mods else "jax" if "jax" in mods else "numpy"


class InProcess:
    """The sandbox Worker's call() interface, calling a live object directly."""

    def __init__(self, namespace, framework: str, path: str | None):
        self.namespace, self.framework, self.path = namespace, framework, path or ""

    def call(self, target: dict, inputs: dict) -> dict:
        try:
            live = {k: worker.to_framework(v, self.framework) for k, v in inputs.items()}
            result = worker.call_target(self.namespace, target, live, self.framework)
            arrays, described = worker.describe_outputs(result)
            after = worker.flatten_arrays(live)
        except BaseException as exc:  # noqa: BLE001 - same verdicts as the sandbox
            if isinstance(exc, KeyboardInterrupt):
                raise
            return {"error": worker.describe_error(exc, self.path)}
        items = described["items"]
        return {"ok": True, "outputs": [arrays.get(f"out_{i}") for i in range(len(items))],
                "types": [it["type"] for it in items], "tuple": described["tuple"], "inputs_after": after}


def check(exercise: str, obj, framework: str | None = None, **helpers) -> Report:
    """Grade `obj` (a function, a class, or a module defining the exercise's name) on every case.
    `helpers` supplies other functions an exercise calls (apply_causal_mask uses your
    make_causal_mask=...)."""
    ex = catalogue.get(exercise)
    framework = framework or _guess_framework(obj)
    if framework not in FRAMEWORKS:
        raise InputError(f"framework: expected one of {', '.join(FRAMEWORKS)}, got {framework!r}")
    if isinstance(obj, types.ModuleType):
        namespace = obj
    else:
        namespace = types.SimpleNamespace(**{**helpers, ex.defines: obj})
    try:
        path = inspect.getsourcefile(obj)
    except TypeError:
        path = None
    rows = grade_cases(ex, InProcess(namespace, framework, path).call, "your code")
    return Report(ex.name, framework, rows)


def assert_matches(exercise: str, obj, framework: str | None = None, **helpers) -> Report:
    """check(), raising AssertionError with every failing case and its diagnosis."""
    report = check(exercise, obj, framework, **helpers)
    if not report.ok:
        raise AssertionError(str(report))
    return report


__all__ = ["check", "assert_matches", "Report"]
