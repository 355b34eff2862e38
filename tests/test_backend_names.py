"""The three backends tell the same story: same modules, same public names, same signatures.

Allowed differences are declared, not silent: NumPy alone carries the hand-written `*_backward`
functions (the other two differentiate automatically), and a module may list names that exist in
one backend only in `__backend_only__`, with a comment saying why."""
import importlib
import inspect
import pkgutil

import pytest

import jax_impl  # noqa: F401
import numpy_impl
import torch_ref

PACKAGES = {"numpy_impl": numpy_impl, "jax_impl": jax_impl, "torch_ref": torch_ref}
# Modules one backend alone has, each with its reason. numpy_impl/fast.py holds in-place forms of
# NumPy's softmax, GELU and LayerNorm that save passes over memory; XLA and torch fuse those
# elementwise steps themselves, so the other two have nothing to write there.
BACKEND_ONLY_MODULES = {"numpy_impl": {"fast"}, "jax_impl": set(), "torch_ref": set()}


def _modules(pkg):
    # Plain modules only: subpackages such as torch_ref/finetune are backend-specific by design.
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_") and not m.ispkg)


def _public(mod):
    names = getattr(mod, "__all__", None)
    if names is None:
        names = [n for n, obj in vars(mod).items() if not n.startswith("_") and getattr(obj, "__module__", None) == mod.__name__
                 and (inspect.isfunction(obj) or inspect.isclass(obj))]
    skip = set(getattr(mod, "__backend_only__", ()))
    return {n for n in names if n not in skip and not n.endswith("_backward")}


def test_same_modules_in_all_three_backends():
    mods = {name: [m for m in _modules(pkg) if m not in BACKEND_ONLY_MODULES[name]] for name, pkg in PACKAGES.items()}
    assert mods["numpy_impl"] == mods["jax_impl"] == mods["torch_ref"], mods


@pytest.mark.parametrize("module", [m for m in _modules(numpy_impl) if m not in BACKEND_ONLY_MODULES["numpy_impl"]])
def test_same_public_names_and_parameters(module):
    loaded = {name: importlib.import_module(f"{name}.{module}") for name in PACKAGES}
    names = {name: _public(mod) for name, mod in loaded.items()}
    assert names["numpy_impl"] == names["jax_impl"] == names["torch_ref"], names
    for fn in sorted(names["numpy_impl"]):
        params = {}
        for name, mod in loaded.items():
            obj = getattr(mod, fn)
            target = obj.__init__ if inspect.isclass(obj) else obj
            params[name] = [p for p in inspect.signature(target).parameters if p not in ("self", "dtype")]
        assert params["numpy_impl"] == params["jax_impl"] == params["torch_ref"], (fn, params)
