"""What a notebook cell or function graded by the `%%check` / `%check NAME` magics (triptych/notebook.py)
needs from the kernel besides its own text: the notebook's import statements, the functions, classes
and constants of earlier cells that it uses, and the source of a function defined in a cell. Read from
IPython's input history and the user namespace (any `shell` with `history_manager.input_hist_raw`,
`transform_cell` and `user_ns`), parsed with ast; nothing here imports IPython.
"""
from __future__ import annotations

import ast
import inspect
import textwrap

__all__ = ["cell_python", "history_imports", "definition_source", "helper_sources", "cell_helpers"]


def cell_python(shell, raw: str) -> str | None:
    """A history cell as plain Python: a `%%check` cell's body, other cells through IPython's own
    transformation (`%matplotlib` and `!pip` become calls); None for other cell magics (%%bash)."""
    first, _, body = raw.lstrip().partition("\n")
    if first.startswith("%%"):
        return body if first.split()[0] == "%%check" else None
    try:
        return shell.transform_cell(raw)
    except Exception:  # noqa: BLE001 - a cell IPython cannot read adds nothing
        return None


def _trees(shell) -> list[tuple[str, ast.Module]]:
    found = []
    for raw in shell.history_manager.input_hist_raw:
        src = cell_python(shell, raw or "")
        if not src:
            continue
        try:
            found.append((src, ast.parse(src)))
        except SyntaxError:
            continue
    return found


def history_imports(shell) -> list[str]:
    """The notebook's top-level import statements, in order, each once (`from __future__` left out:
    it must open a file)."""
    seen: dict[str, None] = {}
    for src, tree in _trees(shell):
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "module", None) != "__future__":
                seen.setdefault(ast.get_source_segment(src, node), None)
    return list(seen)


def _definition_in(src: str, tree: ast.Module, name: str) -> str | None:
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            start = min([d.lineno for d in node.decorator_list] + [node.lineno])
            return "\n".join(src.splitlines()[start - 1:node.end_lineno])
    return None


def definition_source(shell, name: str, obj) -> str | None:
    """The source of the function or class `name`: inspect's (IPython keeps each cell's text), else
    the last history cell that defines it at its top level (a class in `__main__`, which inspect
    cannot find a file for)."""
    try:
        src = textwrap.dedent(inspect.getsource(obj))
        tree = ast.parse(src)
        if _definition_in(src, tree, name):
            return _definition_in(src, tree, name)
    except (TypeError, OSError, SyntaxError):
        pass
    for src, tree in reversed(_trees(shell)):
        found = _definition_in(src, tree, name)
        if found:
            return found
    return None


def _is_notebook_code(obj) -> bool:
    return (inspect.isfunction(obj) or inspect.isclass(obj)) and getattr(obj, "__module__", None) == "__main__"


def _literal(value) -> bool:
    if isinstance(value, (tuple, list)):
        return all(map(_literal, value))
    return value is None or isinstance(value, (bool, int, float, str))


def helper_sources(shell, source: str, skip: set[str], limit: int = 20) -> list[str]:
    """What the code uses from the notebook besides imports: functions and classes defined there
    (make_causal_mask for apply_causal_mask), their own helpers, and plain constants (EPS = 1e-5)."""
    ns, out, todo, seen = shell.user_ns, [], [source], set(skip)
    while todo and len(out) < limit:
        used = {n.id for n in ast.walk(ast.parse(todo.pop())) if isinstance(n, ast.Name)}
        for name in sorted(used - seen):
            seen.add(name)
            value = ns.get(name)
            if _is_notebook_code(value):
                src = definition_source(shell, name, value)
                if src:
                    out.insert(0, src)
                    todo.append(src)
            elif name in ns and not name.startswith("_") and _literal(value) and len(repr(value)) < 500:
                out.insert(0, f"{name} = {value!r}")
    return out


def cell_helpers(shell, code: str) -> list[str]:
    """The notebook's functions, classes and constants that a %%check cell uses but does not define
    (a self_attention calling the split_heads of an earlier cell): graded beside it, as %check NAME
    brings its helpers. What the cell defines itself is never taken from an earlier cell."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []  # check_file reports it, as a row
    own = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            own.update(t.id for t in targets if isinstance(t, ast.Name))
    return helper_sources(shell, code, own)
