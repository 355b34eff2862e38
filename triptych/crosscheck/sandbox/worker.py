"""The child process that runs a user's code, and nothing else.

It is started as `python -I worker.py` (isolated: no PYTHONPATH, no user site, not even this folder
on sys.path), so it imports only the standard library, NumPy and the user's framework. It never
judges anything: it loads the user's file, calls what the parent names, and hands back plain arrays.
References, comparisons and verdicts are computed in the checker's own process, so a submission that
patches numpy or torch here (`np.allclose = lambda *a, **k: True`) changes nothing that is judged.

Protocol (one JSON object per line, on two private pipes so the user's print() and input() cannot
touch it): the parent sends {"id", "target", "inputs": npz path, "scalars", "framework", "out": npz
path}; the worker answers {"id", "ok": true, "outputs": [...]} or {"id", "error": {...}}. Before
that, once loaded (loader.py), it says hello: {"ready", "root" (the submission's folder), "skipped"
(top-level statements that failed), "package", "loaded" (frameworks the code imported), "error"?}.
Arrays travel as .npz files written with np.savez and read with allow_pickle=False: reading an npz
cannot run code, unlike unpickling an object whose __reduce__ was chosen by the user.

This module is also imported by the parent for the in-process API (crosscheck.check on a function
object), so its helpers take the framework as an argument and import it lazily.
"""
from __future__ import annotations

import json
import os
import sys
import traceback

if __name__ == "__main__" and os.environ.get("TRIPTYCH_ISOLATION"):
    # Walls that must go up before NumPy starts a thread (a user namespace needs a single-threaded
    # process): isolation.early(); restrict() follows in main(), before the user's code loads.
    import importlib.util as _util
    _spec = _util.spec_from_file_location("_triptych_isolation", os.path.join(os.path.dirname(__file__), "isolation.py"))
    sys.modules[_spec.name] = _util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_spec.name])
    sys.modules[_spec.name].early()

import numpy as np  # noqa: E402


# ---------------------------------------------------------------- helper modules, by path

def _sibling(name: str):
    """triptych/crosscheck/sandbox/NAME.py, loaded by its path: this child runs with `python -I` (and maybe
    under the user's own interpreter, --python), so the checker's packages are not importable here.
    loader.py loads the user's code, binding.py maps arguments, kinds.py drives objects."""
    key = f"_triptych_{name}"
    if key not in sys.modules:
        import importlib.util
        spec = importlib.util.spec_from_file_location(key, os.path.join(os.path.dirname(__file__), f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def read_source(path: str) -> tuple[str, list[tuple[int, int]]]:
    """The file's source (a notebook's code cells joined): loader.read_source."""
    return _sibling("loader").read_source(path)


# ---------------------------------------------------------------- arrays in and out

def import_framework(framework: str):
    if framework == "torch":
        import torch
        return torch
    if framework == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)  # float64 cases must stay float64
        import jax.numpy as jnp
        return jnp
    return np


def load_inputs(npz_path: str, scalars: dict) -> dict:
    """npz arrays (dict entries flattened as 'params/w_q') plus JSON scalars -> one dict."""
    inputs: dict = dict(scalars)
    with np.load(npz_path, allow_pickle=False) as data:
        for key in data.files:
            *outer, inner = key.split("/")
            d = inputs
            for part in outer:
                d = d.setdefault(part, {})
            d[inner] = data[key]
    return inputs


def to_framework(value, framework: str):
    """NumPy -> the user's framework. Copies, so an in-place edit by the user is visible to us
    afterwards (torch.from_numpy would share memory with our own record of the input)."""
    if isinstance(value, dict):
        return {k: to_framework(v, framework) for k, v in value.items()}
    if not isinstance(value, np.ndarray):
        return value
    if framework == "torch":
        import torch
        return torch.tensor(value)
    if framework == "jax":
        import jax.numpy as jnp
        return jnp.asarray(value)
    return value.copy()


def to_numpy(value) -> tuple[np.ndarray | None, str]:
    """(array or None, type name). Only real arrays and Python/NumPy numbers come back as arrays;
    anything else is reported by its type name, for a 'wrong return type' verdict."""
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    if isinstance(value, np.ndarray):
        arr = value
    elif type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        arr = value.detach().cpu().numpy()
    elif type(value).__module__.startswith(("jax", "jaxlib")) and hasattr(value, "shape"):
        arr = np.asarray(value)
    elif isinstance(value, (bool, int, float, np.generic)):
        arr = np.asarray(value)
    else:
        return None, kind
    if arr.dtype == object:
        return None, kind + " (object array)"
    return np.array(arr, order="C", copy=True), kind  # ascontiguousarray would make 0-d arrays 1-d


def flatten_arrays(value, prefix: str = "") -> dict[str, np.ndarray]:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(flatten_arrays(v, f"{prefix}{k}/"))
        return out
    arr, _ = to_numpy(value)
    return {prefix.rstrip("/"): arr} if arr is not None and arr.ndim > 0 else {}


# ---------------------------------------------------------------- calling the user's code

class Missing(Exception):
    """The file does not define what the exercise calls."""


_ABSENT = object()


def _lookup(module, name: str):
    # A sentinel, not None: `G1_P_MAT = None  # TODO` (a value skeleton) is defined, just unanswered.
    obj = getattr(module, name, _ABSENT) if module is not None else _ABSENT
    if obj is _ABSENT:
        raise Missing(name)
    return obj


def _argument(spec, live: dict, module):
    """An argument is an input key, or {"call": name, "args": [...]}: the user's own function
    applied first (apply_causal_mask is graded with the user's own make_causal_mask)."""
    if isinstance(spec, dict) and "call" in spec:
        fn = _lookup(module, spec["call"])
        return fn(*[_argument(a, live, module) for a in spec.get("args", [])])
    return live[spec]


def _set_weight(obj, path: str, value, framework: str) -> None:
    """Put a reference weight where the skeleton fixed its name: 'W_q.weight' walks attributes.
    A torch Parameter is overwritten in place (keeping it registered); anything else is replaced."""
    *outer, last = path.split(".")
    for part in outer:
        obj = getattr(obj, part)
    current = getattr(obj, last, None)
    if framework == "torch" and current is not None and hasattr(current, "copy_"):
        import torch
        if tuple(current.shape) != tuple(value.shape):
            raise ValueError(f"attribute {path}: expected shape {tuple(value.shape)}, got {tuple(current.shape)}")
        with torch.no_grad():
            current.copy_(value)
    else:
        setattr(obj, last, value)


def _plain_numbers(value):
    """A list or tuple of numbers (`q = [1.5, -2.0, 0.3]`) as one float64 array, so an answer written
    as a list is one answer, not a tuple of 0-d outputs; anything else is returned as it is."""
    if isinstance(value, (list, tuple)):
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            return value
        return arr if arr.ndim > 0 else value
    return value


def call_target(module, target: dict, live: dict, framework: str):
    """Run what the exercise names, on inputs already in the user's framework (`live`): a
    function, a class (built, weights loaded, then called), a module-level value, or an "answer":
    a value the user assigns OR a function of the inputs returning it (exercise C's queries:
    `query_v0 = np.array([...])` or `def query_v0(K, V): ...`). An answer's "with" names other
    answers returned beside it (C.5 keeps the user's own query of C.4)."""
    kind = target.get("kind", "function")
    obj = _lookup(module, target["name"])
    if kind == "value":
        return obj
    args = [_argument(a, live, module) for a in target.get("args", [])]
    kwargs = {k: _argument(k, live, module) for k in target.get("kwargs", [])}
    if kind == "answer":
        answers = [obj] + [_lookup(module, name) for name in target.get("with", [])]
        got = [_plain_numbers(a(*args, **kwargs) if callable(a) else a) for a in answers]
        return tuple(got) if target.get("with") else got[0]
    # The user's own parameter names and optional arguments (binding.py): `softmax(x, dim)`,
    # `scaled_dot_product_attention(Q, K, V, mask)` without `scale`.
    required = [(a if isinstance(a, str) else None, v) for a, v in zip(target.get("args", []), args)]
    if kind == "function":
        call_args, call_kwargs = _sibling("binding").bind(obj, target, required, kwargs)
        return obj(*call_args, **call_kwargs)
    if kind != "class":
        # Targets that drive an object rather than call it once (an optimizer class stepped on
        # parameters, a tokenizer's encode and decode, a sampler drawn many times): kinds.py.
        _sibling("binding")  # kinds.py maps its arguments with it too
        return _kinds().call(kind, obj, target, live, framework)
    instance = obj(*[live[a] for a in target.get("init", [])])
    if framework == "torch" and hasattr(instance, "eval"):
        import torch
        instance.eval()  # dropout off: the reference has none
        # Cast BEFORE loading the weights: copied into nn.Linear's default float32 parameters,
        # float64 reference weights would be rounded to float32 and miss the float64 tolerance.
        instance.to(getattr(torch, target.get("dtype", "float64")))
    for path, key in target.get("weights", {}).get(framework, []):
        _set_weight(instance, path, live[key], framework)
    method = target.get("method")
    fn = getattr(instance, method) if method else instance
    # An nn.Module's __call__ takes (*args, **kwargs): its parameters are forward's.
    shown = getattr(instance, "forward", None) if not method and framework == "torch" else None
    call_args, call_kwargs = _sibling("binding").bind(fn, target, required, kwargs, signature_of=shown)
    return fn(*call_args, **call_kwargs)


def _kinds():
    """triptych/crosscheck/sandbox/kinds.py (targets that drive an object), loaded by its path."""
    return _sibling("kinds")


def describe_outputs(result) -> tuple[dict[str, np.ndarray], list[dict]]:
    """(arrays to save, one description per returned item). A tuple or list is several outputs."""
    items = list(result) if isinstance(result, (tuple, list)) else [result]
    arrays, described = {}, []
    for i, item in enumerate(items):
        arr, kind = to_numpy(item)
        described.append({"type": kind, "saved": arr is not None})
        if arr is not None:
            arrays[f"out_{i}"] = arr
    return arrays, {"items": described, "tuple": isinstance(result, (tuple, list))}


_HERE = os.path.dirname(os.path.realpath(__file__))


def _is_library(path: str) -> bool:
    # A project's own virtual environment (uv's .venv inside a CS336 repository) is not the user's
    # code, nor is this checker's sandbox (a submission folder may sit inside our repository).
    parts = path.split(os.sep)
    return "site-packages" in parts or "dist-packages" in parts or os.path.dirname(path) == _HERE


def user_frames(tb, where: str) -> list[list]:
    """The traceback trimmed to the user's frames: `where` is their file, or the folder of their
    submission (every file under it: a package's modules, a CS336 adapters.py and the package it
    calls), never ours, numpy's or torch's. Files are named relative to that folder."""
    real = os.path.realpath(where)
    if os.path.isdir(real):
        def mine(f):
            return f.startswith(real + os.sep) and not _is_library(f)
        base = real
    else:
        def mine(f):
            return f == real
        base = os.path.dirname(real)
    frames = []
    for f in traceback.extract_tb(tb):
        name = os.path.realpath(f.filename)
        if mine(name):
            frames.append([os.path.relpath(name, base), f.lineno, f.name, (f.line or "").strip()])
    return frames


def describe_error(exc: BaseException, where: str) -> dict:
    name = type(exc).__name__
    message = " ".join([str(exc), *map(str, getattr(exc, "__notes__", None) or [])])
    memory = isinstance(exc, MemoryError) or "can't allocate memory" in message or "out of memory" in message.lower()
    not_graded = message if type(exc).__name__ == "NotGraded" and type(exc).__module__.endswith("binding") else None
    # A module no finder has and the submission does not hold: a package of the user's environment.
    top = (getattr(exc, "name", None) or "").split(".")[0] if isinstance(exc, ModuleNotFoundError) else ""
    folder = where if os.path.isdir(where) else os.path.dirname(where)
    absent = top if top and top not in _sibling("loader").local_packages(folder) and top != "submission" else None
    return {"type": name, "message": message[:500], "frames": user_frames(exc.__traceback__, where),
            "not_implemented": isinstance(exc, NotImplementedError), "memory": memory,
            "missing": exc.args[0] if isinstance(exc, Missing) else None, "not_graded": not_graded,
            "absent_module": absent, "python": "%d.%d" % sys.version_info[:2],
            "exit_code": (exc.code if isinstance(exc.code, int) else 1) if isinstance(exc, SystemExit) else None}


def serve_one(module, request: dict, path: str) -> dict:
    framework = request["framework"]
    reply = {"id": request["id"]}
    try:
        inputs = load_inputs(request["inputs"], request.get("scalars", {}))
        live = {k: to_framework(v, framework) for k, v in inputs.items()}
        result = call_target(module, request["target"], live, framework)
        arrays, described = describe_outputs(result)
        # The inputs as they are after the call: the parent compares them with its own copy.
        for key, arr in flatten_arrays(live).items():
            arrays[f"in/{key}"] = arr
        np.savez(request["out"], **arrays)
        reply.update(ok=True, outputs=described)
    except BaseException as exc:  # everything the user's code does becomes a verdict
        reply["error"] = describe_error(exc, path)
    # What the loader had to do for imports made inside the user's functions (a module whose file
    # name differs in case): the parent reports it once.
    finder = getattr(_sibling("loader"), "FINDER", None)
    if finder is not None and finder.case_fixes:
        reply["case_fixes"] = list(finder.case_fixes)
    return reply


# ---------------------------------------------------------------- the child's main loop

def _limit_memory(limit_bytes: int) -> None:
    """Cap the address space at what the imports already use plus the limit, so one runaway
    allocation raises MemoryError in the user's code instead of exhausting the machine."""
    try:
        import resource
        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
        cap = vm + limit_bytes
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    except (OSError, ValueError, StopIteration, ImportError):
        pass  # not Linux: the parent's resident-memory watch still applies


def main(argv: list[str]) -> int:
    path, framework, limit, rfd, wfd = argv[0], argv[1], int(argv[2]), int(argv[3]), int(argv[4])
    requests = os.fdopen(rfd, "r", encoding="utf-8")
    replies = os.fdopen(wfd, "w", encoding="utf-8")

    def send(obj):
        replies.write(json.dumps(obj) + "\n")
        replies.flush()

    import_framework(framework)
    if framework == "torch":
        import torch
        torch.set_num_threads(1)  # tiny cases: threads cost more than they give, and CI has 2 cores
    if limit > 0:
        _limit_memory(limit)
    loader = _sibling("loader")
    root = loader.locate(path)[0]
    hello = {"ready": True, "root": root}
    if "_triptych_isolation" in sys.modules:  # Landlock and capabilities: the last step before the user's code
        hello["isolation"] = sys.modules["_triptych_isolation"].restrict()
    os.environ[SUBMISSION_ROOT] = root  # for the processes the user's code starts (see the end of this file)
    try:
        module, info = loader.load(path)
        os.environ[STANDINS] = ",".join(info["standins"])
        os.environ[ABSENT_NAMES] = ",".join(info["absent_names"])
        hello.update(skipped=info["skipped"], package=info["package"], standins=info["standins"],
                     absent_names=info["absent_names"], case_fixes=info["case_fixes"])
    except BaseException as exc:  # the user's own import error: a verdict for every case
        hello.update(ready=False, error=describe_error(exc, root))
        module = None
    hello["loaded"] = loader.frameworks_loaded()
    hello["versions"] = {name: getattr(sys.modules[name], "__version__", "")
                         for name in {n.split(".")[0] for n in hello.get("absent_names") or []} if name in sys.modules}
    send(hello)
    if module is None:
        return 0
    for line in requests:
        try:
            request = json.loads(line)
        except ValueError:
            continue
        if request.get("stop"):
            break
        send(serve_one(module, request, root))
    return 0


# A process that the user's code starts with multiprocessing's "spawn" or "forkserver" (a BPE
# trainer's Pool) imports this file first, as its main module, before it unpickles its task: it gets
# the same view of the submission as this child (its uninstalled package's metadata, stand-ins),
# else it dies importing the user's package and the pool waits for it forever.
SUBMISSION_ROOT, STANDINS, ABSENT_NAMES = "TRIPTYCH_SUBMISSION_ROOT", "TRIPTYCH_STANDINS", "TRIPTYCH_ABSENT_NAMES"
if __name__ == "__mp_main__" and os.environ.get(SUBMISSION_ROOT):
    _sibling("loader").prepare_subprocess(os.environ[SUBMISSION_ROOT],
                                          [n for n in os.environ.get(STANDINS, "").split(",") if n],
                                          [n for n in os.environ.get(ABSENT_NAMES, "").split(",") if n])

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
