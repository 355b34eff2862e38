"""Calling a user's function with an exercise's arguments, mapped onto the user's own parameters.

People name their parameters their own way (CS336's `softmax(in_features, dim)`, `Q, K, V`,
`attn_mask`) and leave out what they never needed (no `scale=`). The exercise names its arguments
(target "args": required, "kwargs": optional); bind() maps them by name, then by the usual synonyms
below (plus a target's own "synonyms"), and the remaining required ones by position. An optional
argument is passed only when the function can take it; a None one is simply left out; one the case
needs but the function cannot take raises NotGraded, which the parent shows as "not graded". A
required parameter of the user's that nothing fills gets the exercise's declared default when its
name means that argument (target "defaults": {"axis": -1} fills `dim`).

Like worker.py this runs in the sandboxed child (loaded by its path) and imports only the standard
library; the parent imports it too, to describe the accepted forms (`exercise show`).
"""
from __future__ import annotations

import inspect

# One group per argument: names that mean the same thing in the code people write. A name is in at
# most one group; case matters only where both spellings are listed (q, Q).
SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("dim", "axis"),
    ("x", "X", "in_features", "input", "inputs", "features", "hidden_states", "in_feature"),
    ("mask", "attn_mask", "attention_mask"),
    ("q", "Q", "query", "queries"),
    ("k", "K", "key", "keys"),
    ("v", "V", "value", "values"),
    ("scale", "softmax_scale", "sm_scale", "scaling"),
    ("eps", "epsilon"),
    ("n_heads", "num_heads", "n_head", "nheads", "heads"),
    ("n_embd", "d_model", "embed_dim", "hidden_size", "dim_model"),
    ("targets", "target", "labels"),
    ("weight", "gamma"),
    ("bias", "beta"),
    ("positions", "pos", "position_ids", "token_positions"),
    ("base", "theta", "rope_theta"),
)

_EMPTY = inspect.Parameter.empty
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_VAR = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


class NotGraded(Exception):
    """The case needs an argument the user's function cannot take: not graded, not wrong."""


class _Unbindable(Exception):
    """No sensible mapping: the call is made as the exercise writes it, and Python's own TypeError
    (a missing or extra argument) becomes the verdict."""


def names_for(name: str, target: dict | None = None) -> tuple[str, ...]:
    """Every name accepted for the exercise argument `name`: itself first, then its synonyms."""
    extra = tuple((target or {}).get("synonyms", {}).get(name, ()))
    group = next((g for g in SYNONYMS if name in g), ())
    return tuple(dict.fromkeys((name, *extra, *group)))


def _find(name: str | None, params: list, taken: dict, target: dict):
    """The user's parameter for the exercise argument `name`: exact name first, then a synonym."""
    if name is None:
        return None
    for candidate in names_for(name, target):
        for p in params:
            if p.name == candidate and p.name not in taken:
                return p
    return None


def bind(fn, target: dict, required: list, optional: dict, signature_of=None) -> tuple[list, dict]:
    """(args, kwargs) for fn. required: [(argument name or None, value)] in the exercise's order;
    optional: {argument name: value}. Raises NotGraded when a needed optional argument has nowhere
    to go."""
    try:
        return _bind(fn if signature_of is None else signature_of, target, required, optional)
    except _Unbindable:
        return [v for _, v in required], {k: v for k, v in optional.items() if v is not None}


def _bind(fn, target: dict, required: list, optional: dict) -> tuple[list, dict]:
    """The call (args, kwargs) that gives fn the exercise's arguments: required ones by name, synonym,
    then position; optional ones by name or synonym; the exercise's defaults for what is left."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or C function without a signature
        raise _Unbindable from None
    params = [p for p in sig.parameters.values() if p.kind not in _VAR]
    var_pos = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in sig.parameters.values())
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    assign: dict = {}
    overflow = _assign_required(params, target, required, optional, assign)
    if overflow and not var_pos:
        raise _Unbindable
    extra_kwargs = _assign_optional(params, target, optional, assign, var_kw)
    _assign_defaults(params, target, assign)
    args, kwargs, open_ = _call_form(params, assign)
    if overflow:
        if not open_:
            raise _Unbindable
        args.extend(overflow)
    kwargs.update(extra_kwargs)
    return args, kwargs


def _assign_required(params, target, required, optional, assign) -> list:
    """Required values by name or synonym, then the rest by position; returns what found no place."""
    left = []
    for name, value in required:
        p = _find(name, params, assign, target)
        if p is None:
            left.append(value)
        else:
            assign[p.name] = value
    free = [p for p in params if p.name not in assign and p.kind in _POSITIONAL]
    # Positional filling must not take a parameter an optional argument names (`mask`).
    optional_params = {p.name for name in optional for p in [_find(name, params, {}, target)] if p is not None}
    free = [p for p in free if p.name not in optional_params] + [p for p in free if p.name in optional_params]
    overflow = []
    for value in left:
        if free:
            assign[free.pop(0).name] = value
        else:
            overflow.append(value)
    return overflow


def _assign_optional(params, target, optional, assign, var_kw: bool) -> dict:
    """Optional values by name or synonym; returns those only **kwargs can take. An optional value
    the function has no place for makes the case "not graded" (NotGraded)."""
    extra_kwargs = {}
    for name, value in optional.items():
        p = _find(name, params, assign, target)
        if p is not None:
            if value is None and p.default is not _EMPTY:
                continue  # their own default stands for "none given"
            assign[p.name] = value
        elif value is None:
            continue
        elif var_kw:
            extra_kwargs[name] = value
        else:
            raise NotGraded(f"your function takes no `{name}`")
    return extra_kwargs


def _assign_defaults(params, target, assign) -> None:
    """A required parameter nothing filled: the exercise's default for that meaning."""
    for p in params:
        if p.name in assign or p.default is not _EMPTY:
            continue
        for name, value in target.get("defaults", {}).items():
            if p.name in names_for(name, target):
                assign[p.name] = value
                break


def _call_form(params, assign) -> tuple[list, dict, bool]:
    """Positional arguments while the parameters are filled in order, keywords after a gap;
    open_ says whether positions are still open at the end (for *args)."""
    args, kwargs, open_ = [], {}, True
    for p in params:
        if p.kind in _POSITIONAL:
            if p.name not in assign:
                open_ = False
            elif open_:
                args.append(assign[p.name])
            elif p.kind is inspect.Parameter.POSITIONAL_ONLY:
                raise _Unbindable
            else:
                kwargs[p.name] = assign[p.name]
        elif p.name in assign:
            kwargs[p.name] = assign[p.name]
    return args, kwargs, open_


def describe(target: dict) -> list[str]:
    """The forms `check` accepts for a function target, one line each (for `exercise show`)."""
    if target.get("kind", "function") not in ("function", "class"):
        return []
    lines = []
    for name in [a for a in target.get("args", []) if isinstance(a, str)]:
        others = names_for(name, target)[1:]
        lines.append(f"`{name}`" + (f" (or {', '.join(others)})" if others else "") + ": by name, else by position")
    for name in target.get("kwargs", []):
        others = names_for(name, target)[1:]
        lines.append(f"`{name}`" + (f" (or {', '.join(others)})" if others else "") +
                     ": optional; passed only if your function takes it (or **kwargs); a case that needs it "
                     "is 'not graded' otherwise")
    for name, value in target.get("defaults", {}).items():
        lines.append(f"a parameter named {'/'.join(names_for(name, target))} without a default gets {value!r}")
    return lines
