"""`check` on code as people really lay it out: packages with relative imports, an uninstalled CS336
project (stock __init__ asking importlib.metadata for its version, tests/adapters.py as glue),
notebook exports with top-level leftovers, class folders; signatures written the user's way.

Every submission here is written by us, in tmp_path, the way students write theirs. The verdicts are
the checker's own comparison against the three backends (torch's softmax and SDPA, NumPy's, JAX's).
"""
from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from triptych import cli
from triptych.crosscheck import api
from triptych.crosscheck.sandbox import binding, loader
from triptych.crosscheck.session import check_folder, check_path

ROOT = Path(__file__).resolve().parents[1]


def _write(base: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return base


def _rows(report, exercise):
    return [r for r in report.rows if r["exercise"] == exercise]


# ---------------------------------------------------------------- a CS336 repository, uninstalled

CS336 = {
    "pyproject.toml": """
        [project]
        name = "cs336_basics"
        version = "1.0.2"
        dependencies = ["einops>=0.8.1", "jaxtyping>=0.3.0", "torch"]
    """,
    # The handout's __init__, byte for byte in form: it fails on a repository never pip-installed.
    "cs336_basics/__init__.py": 'import importlib.metadata\n\n__version__ = importlib.metadata.version("cs336_basics")\n',
    "cs336_basics/nn_utils.py": """
        import torch
        from einops import reduce


        def softmax(in_features: torch.Tensor, dim: int) -> torch.Tensor:
            shifted = in_features - reduce(in_features, "... d -> ... 1", "max") if dim in (-1, in_features.ndim - 1) \\
                else in_features - in_features.amax(dim=dim, keepdim=True)
            e = torch.exp(shifted)
            return e / e.sum(dim=dim, keepdim=True)
    """,
    "cs336_basics/model/__init__.py": "",
    "cs336_basics/model/attention.py": """
        import math

        import torch
        from jaxtyping import Bool, Float
        from torch import Tensor

        from ..nn_utils import softmax
        from . import _checks


        def scaled_dot_product_attention(
            Q: Float[Tensor, " ... queries d_k"],
            K: Float[Tensor, " ... keys d_k"],
            V: Float[Tensor, " ... keys d_v"],
            mask: Bool[Tensor, " ... queries keys"] | None = None,
        ) -> Float[Tensor, " ... queries d_v"]:
            scores = Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1])
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = torch.nan_to_num(softmax(scores, dim=-1))  # a row that sees nothing: zeros
            return weights @ V, weights


        def gelu(x):
            return _checks.must_be_finite(x) * 0.5


    """,
    "cs336_basics/model/_checks.py": """
        def must_be_finite(x):
            raise ValueError("this helper is not written yet")
    """,
    "tests/__init__.py": "",
    # Glue that only imports from the student's package (no torch import of its own: torch comes
    # through the package). Imported names are graded when the file defines none itself.
    "tests/adapters.py": """
        from __future__ import annotations

        from cs336_basics import __version__
        from cs336_basics.model.attention import gelu, scaled_dot_product_attention
        from cs336_basics.nn_utils import softmax

        assert __version__ == "1.0.2", __version__
    """,
    "cs336_basics/unrelated.py": "def layer_norm(x, weight, bias, eps=1e-5):\n    raise RuntimeError('never graded')\n",
}


@pytest.fixture(scope="module")
def cs336_report(tmp_path_factory):
    repo = _write(tmp_path_factory.mktemp("student") / "assignment1-basics", CS336)
    reports = check_path(str(repo))
    assert len(reports) == 1  # one submission, not one per module
    return repo, reports[0]


def test_cs336_project_is_graded_through_its_adapters_as_torch(cs336_report):
    repo, report = cs336_report
    assert report.path == str(repo / "tests" / "adapters.py")
    # adapters.py imports no torch itself: the framework is what the loaded code imported.
    assert report.framework == "torch"
    # Only what adapters.py defines is graded (layer_norm of another module is not).
    assert {r["exercise"] for r in report.rows} == {"softmax", "scaled_dot_product_attention", "gelu"}
    assert not any("loading" in n for n in report.notes), report.notes


def test_cs336_softmax_with_a_required_dim_passes(cs336_report):
    _, report = cs336_report
    rows = _rows(report, "softmax")
    assert rows and all(r["verdict"] == "pass" for r in rows), [(r["verdict"], r["message"]) for r in rows]


def test_sdpa_without_scale_is_graded_and_the_scale_case_is_not_graded(cs336_report):
    _, report = cs336_report
    rows = {r["case"]: r for r in _rows(report, "scaled_dot_product_attention")}
    scaled = rows.pop("scale=0.5 given")
    assert scaled["verdict"] == "not graded" and scaled["ok"]
    assert "takes no `scale`" in scaled["message"]
    assert rows and all(r["verdict"] == "pass" for r in rows.values()), \
        [(r["verdict"], r["message"]) for r in rows.values()]


def test_traceback_shows_every_frame_in_the_users_tree(cs336_report):
    _, report = cs336_report
    row = _rows(report, "gelu")[0]
    assert row["verdict"] == "error" and "this helper is not written yet" in row["message"]
    files = [f[0] for f in row["traceback"]]
    # Neither file is the one named on the command line (tests/adapters.py): both are the user's.
    assert files == [os.path.join("cs336_basics", "model", "attention.py"),
                     os.path.join("cs336_basics", "model", "_checks.py")], row["traceback"]


# ---------------------------------------------------------------- a class folder

NOTEBOOK_EXPORT = """
    # %% exported from a notebook: test prints and a training loop stay at the top level
    import sys
    import time

    import numpy as np


    def _pick_axis():
        return -1


    AXIS = _pick_axis()  # not a literal: a definitions-only reader would drop it
    print(weights)  # a cell that was deleted
    for _ in range(10**9):  # the training loop, far too long to wait for
        time.sleep(0.01)
    sys.exit(0)  # "stop here" at the bottom of a cell
    SHIFT = "max"


    def softmax(x):
        z = x - x.max(axis=AXIS, keepdims=True) if SHIFT == "max" else x
        e = np.exp(z)
        return e / e.sum(axis=AXIS, keepdims=True)


    def zero_gelu(x):  # renamed while debugging
        return x


    if __name__ == "__main__":
        raise SystemExit("never runs under check")
"""


@pytest.fixture(scope="module")
def class_reports(tmp_path_factory):
    folder = _write(tmp_path_factory.mktemp("class"), {
        "alice.py": NOTEBOOK_EXPORT,
        # A package handed in as a folder: relative imports, one submission.
        "bob/__init__.py": "",
        "bob/_helpers.py": "import numpy as np\n\n\ndef stable_exp(x, axis):\n"
                           "    return np.exp(x - x.max(axis=axis, keepdims=True))\n",
        "bob/ops.py": "from ._helpers import stable_exp\n\n\ndef softmax(x, axis=-1):\n"
                      "    e = stable_exp(x, axis)\n    return e / e.sum(axis=axis, keepdims=True)\n",
        # A package whose own import is broken: every case says so, with the user's frame.
        "dave/__init__.py": "",
        "dave/ops.py": "from .utils import helper\n\n\ndef softmax(x):\n    return helper(x)\n",
        "notes.txt": "not a submission",
    })
    reports = check_folder(str(folder))
    return folder, {Path(r.path).name: r for r in reports}


def test_class_folder_grades_one_row_per_student_file_or_package(class_reports):
    _, by_name = class_reports
    assert set(by_name) == {"alice.py", "bob", "dave"}
    assert all(r.framework == "numpy" for r in by_name.values())
    assert [r["verdict"] for r in _rows(by_name["bob"], "softmax")] == ["pass"] * 3


def test_top_level_statements_run_one_at_a_time(class_reports):
    _, by_name = class_reports
    alice = by_name["alice.py"]
    # AXIS (from a call) and SHIFT (after the failures) survive: every softmax case passes.
    assert [r["verdict"] for r in _rows(alice, "softmax")] == ["pass"] * 3
    skipped = next(n for n in alice.notes if n.startswith("skipped"))
    assert skipped.startswith("skipped 3 top-level statements that failed: ")
    lines = textwrap.dedent(NOTEBOOK_EXPORT).lstrip("\n").splitlines()

    def line(start):
        return next(n for n, text in enumerate(lines, 1) if text.startswith(start))
    assert f"line {line('print(')} `print(weights)  # a cell that was deleted` (NameError)" in skipped
    assert f"line {line('for _')} `for _ in range(10**9):" in skipped
    assert f"(took over {loader.STATEMENT_TIMEOUT_S:g} s)" in skipped
    assert f"line {line('sys.exit')} `sys.exit(0)" in skipped and "(SystemExit)" in skipped
    assert "SystemExit(\"never runs" not in skipped


def test_missing_names_are_listed_with_the_closest_definition(class_reports):
    _, by_name = class_reports
    note = next(n for n in by_name["alice.py"].notes if "not found" in n)
    assert "gelu not found; zero_gelu takes the same arguments: rename it?" in note


def test_a_broken_package_import_is_an_error_row_with_the_users_frames(class_reports):
    _, by_name = class_reports
    dave = by_name["dave"]
    rows = _rows(dave, "softmax")
    assert rows and all(r["verdict"] == "error" for r in rows)
    assert "ModuleNotFoundError" in rows[0]["message"] and "dave.utils" in rows[0]["message"]
    assert any("loading ops.py failed" in n and os.path.join("dave", "ops.py") + ":1" in n for n in dave.notes), dave.notes


# ---------------------------------------------------------------- loader pieces, in this process

def test_locate_finds_the_topmost_package(tmp_path):
    _write(tmp_path, {"proj/pkg/__init__.py": "", "proj/pkg/sub/__init__.py": "", "proj/pkg/sub/mod.py": "",
                      "lone/file.py": ""})
    root, dotted, folders = loader.locate(str(tmp_path / "proj/pkg/sub/mod.py"))
    assert (root, dotted) == (str(tmp_path / "proj"), "pkg.sub.mod") and folders[0] == root
    assert loader.locate(str(tmp_path / "lone/file.py"))[:2] == (str(tmp_path / "lone"), None)


def test_names_imported_from_the_users_package_count_only_in_groups_the_file_answers(tmp_path):
    from triptych.crosscheck.session import parse_submission, select_exercises

    _write(tmp_path, {"mypkg/__init__.py": "", "mypkg/ops.py": "",
                      "glue.py": "from mypkg.ops import softmax, split_heads\nfrom numpy import cumsum\n",
                      "mixed.py": "from mypkg.ops import softmax, split_heads\n\n\ndef gelu(x):\n    return x\n"})
    names = {}
    for f in ("glue.py", "mixed.py"):
        tree = parse_submission(str(tmp_path / f))[0]
        names[f] = {ex.name for ex in select_exercises(tree, None, str(tmp_path / f))}
    assert names == {"glue.py": {"softmax", "split_heads"}, "mixed.py": {"gelu", "softmax"}}


def test_metadata_shim_answers_only_for_the_submissions_own_packages(tmp_path, monkeypatch):
    import importlib.metadata as md

    _write(tmp_path, {"pyproject.toml": '[project]\nname = "cs336-basics"\nversion = "3.1.4"\n',
                      "cs336_basics/__init__.py": ""})
    monkeypatch.setattr(md, "version", md.version)
    monkeypatch.setattr(md, "distribution", md.distribution)
    loader.shim_metadata(str(tmp_path))
    assert md.version("cs336-basics") == md.version("cs336_basics") == "3.1.4"
    assert md.distribution("cs336_basics").version == "3.1.4"
    assert md.version("numpy") == np.__version__  # the real lookup still answers
    with pytest.raises(md.PackageNotFoundError):
        md.version("no-such-package-here")


# ---------------------------------------------------------------- signatures, in process

def _np_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_binding_maps_synonyms_positions_and_defaults():
    target = {"name": "f", "args": ["q", "k", "v"], "kwargs": ["mask", "scale"]}

    def sdpa(K, Q, V, attn_mask):  # keys first, by name
        return None
    args, kwargs = binding.bind(sdpa, target, [("q", "Q"), ("k", "K"), ("v", "V")], {"mask": None, "scale": None})
    assert (args, kwargs) == (["K", "Q", "V", None], {})
    with pytest.raises(binding.NotGraded, match="takes no `scale`"):
        binding.bind(sdpa, target, [("q", 1), ("k", 2), ("v", 3)], {"mask": None, "scale": 0.5})

    def with_kwargs(query, key, value, **options):
        return None
    assert binding.bind(with_kwargs, target, [("q", 1), ("k", 2), ("v", 3)], {"mask": None, "scale": 0.5}) == \
        ([1, 2, 3], {"scale": 0.5})
    soft = {"name": "softmax", "args": ["x"], "defaults": {"axis": -1}}
    assert binding.bind(lambda logits, dim: None, soft, [("x", "X")], {}) == (["X", -1], {})


def test_in_process_api_grades_cs336_signatures():
    def softmax(in_features, dim):
        return _np_softmax(in_features, dim)

    assert api.check("softmax", softmax, framework="numpy").ok

    def scaled_dot_product_attention(Q, K, V, mask):
        s = Q @ np.swapaxes(K, -1, -2) / np.sqrt(Q.shape[-1])
        if mask is not None:
            s = np.where(mask, s, -np.inf)
        with np.errstate(invalid="ignore"):
            w = np.nan_to_num(_np_softmax(s, -1))
        return w @ V, w

    report = api.check("scaled_dot_product_attention", scaled_dot_product_attention, framework="numpy")
    verdicts = {r["case"]: r["verdict"] for r in report.rows}
    assert verdicts.pop("scale=0.5 given") == "not graded"
    assert set(verdicts.values()) == {"pass"} and report.ok


def test_exercise_show_lists_the_accepted_forms(capsys):
    assert cli.main(["exercise", "show", "softmax", "--json"]) == 0
    accepts = json.loads(capsys.readouterr().out)["accepts"]
    assert any("in_features" in line for line in accepts) and any("dim" in line and "-1" in line for line in accepts)


# ---------------------------------------------------------------- the command's edges

@pytest.mark.parametrize("argv, words", [
    (["check", "no/such/file.py", "--json"], "no such file or folder"),
    (["check", "{numpy_file}", "--json", "--exercise", "no_such_exercise"], "no_such_exercise"),
    (["check", "{numpy_file}", "--json", "--timeout", "-1"], "--timeout: expected a positive number"),
    (["check", "{numpy_file}", "--json", "--timeout", "soon"], "--timeout"),
    (["check", "{empty_file}", "--json"], "defines none of the exercise names"),
    (["check", "{numpy_file}", "--json", "--python", "{tmp}/no-python"], "--python: expected an executable"),
])
def test_json_misuse_prints_a_json_error(tmp_path, capsys, argv, words):
    files = {"numpy_file": tmp_path / "mine.py", "empty_file": tmp_path / "empty.py"}
    files["numpy_file"].write_text("import numpy as np\n\ndef softmax(x):\n    return x\n")
    files["empty_file"].write_text("x = 1\n")
    assert _main([a.format(tmp=tmp_path, **files) for a in argv]) == 2
    assert words in json.loads(capsys.readouterr().out)["error"]


def _main(argv) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exc:  # argparse's own errors exit
        return exc.code


def test_python_option_runs_the_child_under_that_interpreter(tmp_path, capsys):
    marker = tmp_path / "used"
    wrapper = tmp_path / "my-python"
    wrapper.write_text(f"#!/bin/sh\necho run >> {marker}\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    no_numpy = tmp_path / "bare-python"
    no_numpy.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named numpy' >&2\nexit 1\n")
    no_numpy.chmod(no_numpy.stat().st_mode | stat.S_IXUSR)
    sub = _write(tmp_path, {"mine.py": "import numpy as np\n\n\ndef softmax(x, axis=-1):\n"
                                       "    e = np.exp(x - x.max(axis=axis, keepdims=True))\n"
                                       "    return e / e.sum(axis=axis, keepdims=True)\n"}) / "mine.py"
    assert cli.main(["check", str(sub), "--python", str(wrapper), "--json"]) == 0
    # Once to validate (import numpy), once for the child.
    assert marker.read_text().split() == ["run", "run"]
    capsys.readouterr()
    assert cli.main(["check", str(sub), "--python", str(no_numpy)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No module named numpy" in err[0] and "needs Python 3.8+ with numpy" in err[0]


def test_cs336_runtime_packages_are_pinned_in_both_lists():
    import tomllib

    pinned = {line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()}
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    for name in ("einops", "einx", "jaxtyping", "wadler_lindig"):
        line = next(p for p in pinned if p.startswith(name + "=="))
        assert line in declared
