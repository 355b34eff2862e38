"""The one-line notes a check prints above its tables: top-level statements the loader skipped,
exercise names a file does not define (with the closest name it does), what the loader did so that
a real project loads here, and why a submission did not load."""
from __future__ import annotations

import ast
import difflib

from triptych.crosscheck import exercises as catalogue
from triptych.crosscheck.sandbox.binding import names_for
from triptych.crosscheck.spec import Exercise


def skipped_note(skipped: list[dict], shown: int = 5) -> str | None:
    """One line for the top-level statements the loader skipped."""
    if not skipped:
        return None
    parts = [f"{'cell ' + str(s['cell']) if s.get('cell') else 'line ' + str(s['line'])} `{s['text']}` ({s['type']})"
             for s in skipped[:shown]]
    more = f", and {len(skipped) - shown} more" if len(skipped) > shown else ""
    n = len(skipped)
    return f"skipped {n} top-level statement{'s' if n > 1 else ''} that failed: {', '.join(parts)}{more}"


def _functions(tree: ast.Module) -> dict[str, list[str]]:
    """Top-level functions (and classes, by __init__) with their parameter names."""
    found = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found[node.name] = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
        elif isinstance(node, ast.ClassDef):
            init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
            found[node.name] = [a.arg for a in init.args.args[1:]] if init else []
    return found


def _same_arguments(target: dict, params: list[str]) -> bool:
    wanted = [a for a in target.get("args", []) if isinstance(a, str)]
    return bool(wanted) and len(params) >= len(wanted) and all(
        any(p in names_for(a, target) for p in params) for a in wanted)


def missing_note(tree: ast.Module, exs: list[Exercise], others_shown: int = 6) -> str | None:
    """For a file that answers part of a group: what it does not define, with the closest name it
    does first ("self_attention not found; zero_self_attention takes the same arguments")."""
    functions = _functions(tree)
    graded = {ex.defines for ex in exs}
    spare = [n for n in functions if n not in graded]
    hints, others = [], []
    for group in dict.fromkeys(ex.group for ex in exs):
        for ex in catalogue.groups()[group][1]:
            if ex.defines in graded:
                continue
            same = [n for n in spare if _same_arguments(ex.target, functions[n])]
            close = difflib.get_close_matches(ex.defines, same or spare, n=1, cutoff=0.5 if same else 0.75)
            if same and (close or len(same) == 1):
                hints.append(f"{ex.defines} not found; {(close or same)[0]} takes the same arguments: rename it?")
            elif close:
                hints.append(f"{ex.defines} not found; closest name: {close[0]}")
            else:
                others.append(ex.defines)
    if others:
        more = f" and {len(others) - others_shown} more" if len(others) > others_shown else ""
        hints.append(f"not defined either: {', '.join(others[:others_shown])}{more}")
    return "; ".join(hints) if hints else None


def import_note(hello: dict) -> str | None:
    """One line for what the loader did so that a real project loads here: modules whose file
    name differs in case, stand-ins for absent third-party modules."""
    parts = []
    if hello.get("case_fixes"):
        parts.append(f"imported {', '.join(hello['case_fixes'])}: the names differ only in case, which macOS and "
                     f"Windows allow and Linux does not; rename the file or the import")
    if hello.get("standins"):
        names = ", ".join(f"`{n}`" for n in hello["standins"])
        parts.append(f"{names} not installed for this Python: stand-ins let your package load, and code that uses "
                     f"them raises (--python PATH runs your code under your own environment)")
    for name in hello.get("absent_names") or []:
        lib = name.split(".")[0]
        installed = " ".join(filter(None, (lib, hello.get("versions", {}).get(lib))))
        parts.append(f"`{name}` is not in the {installed} running your code (your project may pin another "
                     f"version): a stand-in lets your package load, and code that uses it raises (--python PATH "
                     f"runs your code under your own environment)")
    return "; ".join(parts) or None


def _load_problem(hello: dict, name: str) -> str:
    err = hello.get("error") or {}
    if err:
        where = f" at {err['frames'][-1][0]}:{err['frames'][-1][1]}" if err.get("frames") else ""
        return f"loading {name} failed: {err.get('type')}: {err.get('message')}{where}"
    if "timeout" in hello:
        return f"loading {name} did not finish within {hello['timeout']:g} s"
    return f"loading {name} crashed the process running it ({hello.get('how', 'no reply')})"
