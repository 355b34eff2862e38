"""`triptych exercise new GROUP`: a file with one stub per exercise, each raising
NotImplementedError (which `check` reports as "not implemented yet" rather than as an error);
as a .py file, or as a notebook (.ipynb) with one cell per stub that `%%check` grades when run.

Function stubs are generated from the exercise's signature and shape contract; classes (course A)
carry their own stub per framework, because the checker loads reference weights through the
attribute names the stub fixes.
"""
from __future__ import annotations

from triptych.crosscheck.spec import Exercise

HEADERS = {
    "numpy": "import math\n\nimport numpy as np\n",
    "torch": "import math\n\nimport torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n",
    "jax": "import math\n\nimport jax\nimport jax.numpy as jnp\n",
}
ARRAY = {"numpy": "NumPy arrays", "torch": "torch tensors", "jax": "JAX arrays"}


def function_stub(ex: Exercise) -> str:
    if ex.target.get("kind") == "value":
        return (f"# {ex.checks}\n# {ex.contract}\n{ex.defines} = None  # TODO: your number "
                f"(an expression such as 2 * 48 * 16384**2 is fine)\n")
    lines = [f"def {ex.signature}:", f'    """{ex.contract}', "", f"    Checked: {ex.checks}."]
    if ex.notes:
        lines.append(f"    Note: {ex.notes}")
    lines += ['    """', "    # TODO: your code here", "    raise NotImplementedError", ""]
    return "\n".join(lines)


def render(group: str, title: str, exercises: list[Exercise], framework: str) -> str:
    """The whole skeleton file for one group in one framework."""
    parts = [f'"""{title}: your implementation.\n\n'
             f"Fill in each function ({ARRAY[framework]} in, {ARRAY[framework]} out), then run\n\n"
             f"    triptych check THIS_FILE.py\n\n"
             f"`triptych exercise show NAME` prints what each case checks.\n"
             f'"""\n', HEADERS[framework]]
    for ex in exercises:
        stub = ex.skeleton.get(framework) or function_stub(ex)
        parts.append("\n" + stub.rstrip() + "\n")
    return "\n".join(parts).rstrip() + "\n"


# ---------------------------------------------------------------- the same skeleton as a notebook

# nbformat 4.5: the first minor version with cell ids (Jupyter and Colab read it; nbformat
# warns about cells without ids in 4.5, so every cell gets one).
NBFORMAT, NBFORMAT_MINOR = 4, 5
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def _lines(text: str) -> list[str]:
    """Cell source the way Jupyter stores it: a list of lines, each but the last ending in \\n."""
    lines = text.rstrip("\n").split("\n")
    return [line + "\n" for line in lines[:-1]] + lines[-1:]


def _cell(kind: str, n: int, text: str) -> dict:
    cell = {"cell_type": kind, "id": f"cell-{n:02d}", "metadata": {}, "source": _lines(text)}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def check_name(ex: Exercise) -> str:
    """The name `%%check` takes: the plain name, or group.name where another group shares it."""
    from triptych.crosscheck.exercises import all_exercises

    shared = sum(e.name == ex.name for e in all_exercises())
    return ex.name if shared <= 1 else f"{ex.group}.{ex.name}"


def _called(obj) -> set[str]:
    """Names of the user's own functions an exercise's target calls to make an argument
    ({"call": "make_causal_mask"}: apply_causal_mask is graded with the student's own mask)."""
    if isinstance(obj, dict):
        return ({obj["call"]} if "call" in obj else set()).union(*map(_called, obj.values()))
    if isinstance(obj, (list, tuple)):
        return set().union(*map(_called, obj))
    return set()


def _cell_groups(exercises: list[Exercise]) -> list[list[Exercise]]:
    """One cell per exercise, except that an exercise which calls another one's function shares that
    one's cell: `%%check` grades a cell's own code, so both must be in it."""
    cells: list[list[Exercise]] = []
    home: dict[str, list[Exercise]] = {}
    for ex in exercises:
        needed = [home[name] for name in sorted(_called(ex.target)) if name in home]
        cell = needed[0] if needed else []
        if not needed:
            cells.append(cell)
        cell.append(ex)
        home[ex.defines] = cell
    return cells


def render_notebook(group: str, title: str, exercises: list[Exercise], framework: str) -> str:
    """The skeleton as a Jupyter notebook (nbformat 4 JSON): the imports and `%load_ext triptych`
    first, then one code cell per exercise whose first line is `%%check NAME`, so running the cell
    grades it in the sandbox (an exercise that calls another's function shares its cell).
    `triptych check FILE.ipynb` reads the same notebook: IPython lines (`%...`) are blanked there,
    so the stubs load as plain Python."""
    import json

    intro = (f"# {title}\n\n"
             f"Run the first cell once, then fill in each function ({ARRAY[framework]} in, "
             f"{ARRAY[framework]} out). Running a cell grades it: its first line, `%%check NAME`, runs "
             f"the cell's code in a sandboxed process against NumPy, JAX and torch, and names a known "
             f"mistake when your output matches one.\n\n"
             f"From a terminal, `triptych check THIS_NOTEBOOK.ipynb` grades every cell at once; "
             f"`%exercise show NAME` (or `triptych exercise show NAME`) prints what each case checks.")
    cells = [_cell("markdown", 0, intro),
             _cell("code", 1, HEADERS[framework].rstrip() + "\n\n%load_ext triptych")]
    for n, group_exs in enumerate(_cell_groups(exercises), start=2):
        stubs = "\n\n\n".join((ex.skeleton.get(framework) or function_stub(ex)).rstrip() for ex in group_exs)
        cells.append(_cell("code", n, f"%%check {' '.join(check_name(ex) for ex in group_exs)}\n" + stubs))
    nb = {"cells": cells,
          "metadata": {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}},
          "nbformat": NBFORMAT, "nbformat_minor": NBFORMAT_MINOR}
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
