"""`check` on the habits of real repositories that the tidy corpus does not have: a module imported
under a name that differs in case from its file (written on macOS), a training-time package the
grader's Python lacks (wandb), syntax newer than the grader's Python, adapters that rename the
handout's parameters, attention that goes causal when no mask is given, and a tokenizer that takes
a merge's occurrences in another order than left to right.

Every submission is written here, in tmp_path. Verdicts come from the checker's references (torch,
Hugging Face `tokenizers`); the assertions name what a user must be told.
"""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from triptych.crosscheck.session import check_path

STOCK_INIT = 'import importlib.metadata\n\n__version__ = importlib.metadata.version("cs336_basics")\n'

REPO = {
    "pyproject.toml": '[project]\nname = "cs336_basics"\nversion = "1.0.2"\n',
    "cs336_basics/__init__.py": STOCK_INIT,
    # Written on a Mac: the file is Activations.py, every import says `activations`.
    "cs336_basics/Activations.py": """
        import torch


        def silu(x: torch.Tensor) -> torch.Tensor:
            return x * torch.sigmoid(x)
    """,
    # Training code imports wandb at the top; the graded functions never touch it.
    "cs336_basics/train.py": """
        import numpy as np
        import torch
        import wandb
        from wandb.sdk import Run  # an annotation-only import, as typed training loops have


        def get_batch(tokens: np.ndarray, batch_size: int, context_length: int, device: str):
            starts = np.random.randint(0, len(tokens) - context_length, size=batch_size)
            x = np.stack([tokens[s:s + context_length] for s in starts])
            y = np.stack([tokens[s + 1:s + 1 + context_length] for s in starts])
            return torch.from_numpy(x).long().to(device), torch.from_numpy(y).long().to(device)


        def log(run: Run, loss: float) -> None:
            wandb.log({"loss": loss})
    """,
    "cs336_basics/attention.py": """
        import math

        import torch


        def sdpa(Q, K, V, mask=None):
            scores = Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1])
            if mask is None:  # "no mask" read as "causal", as torch's is_causal=True would
                mask = torch.ones(Q.shape[-2], K.shape[-2], dtype=torch.bool).tril()
            scores = scores.masked_fill(~mask, float("-inf"))
            return torch.softmax(scores, dim=-1) @ V
    """,
    "tests/__init__.py": "",
    "tests/adapters.py": """
        from __future__ import annotations

        import numpy.typing as npt
        import torch

        from cs336_basics.activations import silu
        from cs336_basics.attention import sdpa
        from cs336_basics.train import get_batch


        def run_silu(in_features: torch.Tensor) -> torch.Tensor:
            return silu(in_features)


        def run_scaled_dot_product_attention(Q, K, V, mask=None):
            return sdpa(Q, K, V, mask)


        # The parameter renamed from the handout's `dataset`.
        def run_get_batch(tokens: npt.NDArray, batch_size: int, context_length: int, device: str):
            return get_batch(tokens, batch_size, context_length, device)


        def run_rmsnorm(d_model, eps, weights, in_features):
            from cs336_basics.Norms import rms_norm  # imported inside, under the other case again
            return rms_norm(in_features, weights, eps)
    """,
    "cs336_basics/norms.py": """
        import torch


        def rms_norm(x, weight, eps):
            return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight
    """,
}


def _write(base: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return base


@pytest.fixture(scope="module")
def repo_report(tmp_path_factory):
    if sys.platform == "darwin":
        pytest.skip("a case-insensitive file system finds the other case by itself")
    repo = _write(tmp_path_factory.mktemp("mac_repo"), REPO)
    return check_path(str(repo / "tests" / "adapters.py"))[0]


def _rows(report, name):
    return [r for r in report.rows if r["exercise"] == name]


def test_a_case_mismatched_module_loads_and_is_reported(repo_report):
    assert all(r["verdict"] == "pass" for r in _rows(repo_report, "run_silu"))
    # imported inside a function at call time, also found and reported
    assert all(r["verdict"] == "pass" for r in _rows(repo_report, "run_rmsnorm"))
    notes = " ".join(repo_report.notes)
    assert "cs336_basics.activations` is cs336_basics/Activations.py" in notes
    assert "cs336_basics.Norms` is cs336_basics/norms.py" in notes
    assert "differ only in case" in notes


def test_an_absent_training_package_gets_a_stand_in(repo_report):
    notes = " ".join(repo_report.notes)
    assert "`wandb` not installed for this Python" in notes and "--python" in notes
    # ... and the code that does not use it is graded: get_batch, called with its own parameter name
    batch = _rows(repo_report, "run_get_batch")
    assert batch and all(r["verdict"] == "pass" for r in batch), [r["message"] for r in batch]


def test_causal_attention_without_a_mask_is_named(repo_report):
    rows = _rows(repo_report, "run_scaled_dot_product_attention")
    masked = [r for r in rows if "no mask" not in r["case"]]
    unmasked = [r for r in rows if "no mask" in r["case"]]
    assert masked and all(r["ok"] for r in masked)
    assert unmasked and all(r["verdict"] == "FAIL" and r["mistake"] == "cs336_sdpa_causal_without_mask"
                            for r in unmasked)


def test_a_stand_in_raises_a_clear_error_when_used(tmp_path):
    from triptych.crosscheck.sandbox import loader
    finder = loader._Finder(str(tmp_path))
    finder.standins.add("wandb_absent_here")
    sys.meta_path.append(finder)
    try:
        import importlib
        module = importlib.import_module("wandb_absent_here.sdk")
        with pytest.raises(ModuleNotFoundError, match="not installed for the Python running your code"):
            module.Run(project="x")
        assert module.Run.Settings.__qualname__ == "wandb_absent_here.sdk.Run.Settings"
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n.startswith("wandb_absent_here")]:
            del sys.modules[name]


# ---------------------------------------------------------------- newer syntax, a package missing

def test_newer_syntax_and_missing_packages_point_to_python_option(tmp_path):
    repo = _write(tmp_path, {
        "pyproject.toml": '[project]\nname = "cs336_basics"\nversion = "1.0.2"\n',
        "cs336_basics/__init__.py": STOCK_INIT,
        # PEP 695 generics: Python 3.12 and later
        "cs336_basics/heap.py": "class Heap[T]:\n    pass\n",
        "tests/__init__.py": "",
        "tests/adapters.py": """
            import torch


            def run_silu(in_features):
                from cs336_basics.heap import Heap  # noqa: F401
                return in_features * torch.sigmoid(in_features)


            def run_softmax(in_features, dim):
                import tiktoken_absent_here  # noqa: F401
                return torch.softmax(in_features, dim=dim)
        """,
    })
    report = check_path(str(repo / "tests" / "adapters.py"), exercise_names=["run_silu", "run_softmax"])[0]
    silu, softmax = _rows(report, "run_silu"), _rows(report, "run_softmax")
    if sys.version_info < (3, 12):
        assert all(r["verdict"] == "error" and "SyntaxError" in r["message"] and "--python" in r["message"]
                   for r in silu)
    assert all(r["verdict"] == "error" and "`tiktoken_absent_here` is not installed" in r["message"]
               and "--python" in r["message"] for r in softmax)


# ---------------------------------------------------------------- a tokenizer's merge order

def test_same_bytes_in_other_pieces_is_explained():
    """A tokenizer that applies (a, a) to 'aaaaaaa' from the right (or in a set's order) spells the
    same bytes as Hugging Face's ids in other pieces: the row says how BPE orders merges."""
    import numpy as np

    from triptych.crosscheck import exercises
    from triptych.crosscheck.exercises import _cs336_text as X
    from triptych.crosscheck.grade import judge, reference_outputs

    ex = exercises.get("get_tokenizer")
    case = ex.cases[0]
    inputs = case.inputs(np.random.default_rng(case.seed), np.dtype(case.dtype))
    refs = reference_outputs(ex, inputs)
    vocab = X._rebuild(inputs)[0]
    by_bytes = {t: i for i, t in vocab.items()}
    hf = [list(ids) for ids in X.unpack(refs["numpy"][0], refs["numpy"][1])]
    j = inputs["texts"].index("aaaaaaa aaa")
    assert [vocab[int(t)] for t in hf[j][:4]] == [b"aa", b"aa", b"aa", b"a"]  # left to right, as BPE does
    ours = [list(x) for x in hf]
    ours[j] = [by_bytes[b"a"], by_bytes[b"aa"], by_bytes[b"aa"], by_bytes[b"aa"]] + hf[j][4:]
    flat, offsets = X._ids_out(ours)
    texts = X.pack_bytes([t.encode("utf-8") for t in inputs["texts"]])
    got = [flat, offsets, texts["flat"], texts["offsets"], flat, offsets]
    reply = {"ok": True, "outputs": got, "types": ["numpy.ndarray"] * 6, "tuple": True, "inputs_after": {}}
    row = judge(ex, case, inputs, refs, reply)
    assert row["verdict"] == "FAIL" and "aaaaaaa aaa" in row["message"]
    assert row["diagnosis"] == "your ids spell the same bytes but split them differently"
    assert "from left to right" in row["explanation"]


# ---------------------------------------------------------------- processes the user's code starts

def test_a_forkserver_pool_in_the_users_package_imports_it_too(tmp_path):
    """A BPE trainer's `get_context("forkserver").Pool` starts fresh interpreters that import the
    user's uninstalled package: they get the same metadata answers, or the pool waits forever. The
    same package also names a torch object that this torch version lacks (a stand-in)."""
    repo = _write(tmp_path, {
        "pyproject.toml": '[project]\nname = "cs336_basics"\nversion = "1.0.2"\n',
        "cs336_basics/__init__.py": STOCK_INIT,
        "cs336_basics/parallel.py": """
            from multiprocessing import get_context

            import numpy as np
            from torch.serialization import NAME_OF_ANOTHER_TORCH_VERSION  # noqa: F401


            def _silu_row(row):
                return row / (1.0 + np.exp(-row))


            def silu_rows(x: np.ndarray) -> np.ndarray:
                with get_context("forkserver").Pool(processes=2) as pool:
                    return np.stack(pool.map(_silu_row, list(x.reshape(-1, x.shape[-1]))))
        """,
        "tests/__init__.py": "",
        "tests/adapters.py": """
            import torch

            from cs336_basics.parallel import silu_rows


            def run_silu(in_features):
                out = silu_rows(in_features.numpy())
                return torch.from_numpy(out).reshape(in_features.shape).to(in_features.dtype)
        """,
    })
    report = check_path(str(repo / "tests" / "adapters.py"), exercise_names=["run_silu"], timeout_s=60)[0]
    rows = _rows(report, "run_silu")
    assert rows and all(r["verdict"] == "pass" for r in rows), [r["message"] for r in rows]
    assert "`torch.serialization.NAME_OF_ANOTHER_TORCH_VERSION` is not in the torch" in " ".join(report.notes)
