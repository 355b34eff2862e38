"""A teacher's exercise pack is graded by the machinery of the built-in groups: a .py file given with
--pack, a module behind the entry point "triptych.exercises", and the built-in groups themselves all
go through triptych.crosscheck.exercises.load_pack. The pack under test is the documented example,
docs/examples/local_attention_pack.py; the submissions are written here the way students write them."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from triptych.common.checks import InputError
from triptych.crosscheck import exercises

ROOT = Path(__file__).resolve().parents[1]
PACK = str(ROOT / "docs" / "examples" / "local_attention_pack.py")

STUDENT = '''import math
import numpy as np


def alibi_slopes(n_heads):
    def geometric(n):
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]
    if math.log2(n_heads).is_integer():
        return np.array(geometric(n_heads))
    p = 2 ** math.floor(math.log2(n_heads))
    return np.array(geometric(p) + geometric(2 * p)[0::2][: n_heads - p])


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sliding_window_attention(q, k, v, window):
    T = q.shape[-2]
    scores = q @ k.swapaxes(-1, -2) / math.sqrt(q.shape[-1])
    i = np.arange(T)
    keep = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - window)
    return softmax(np.where(keep, scores, -np.inf)) @ v


def alibi_attention(q, k, v):
    B, H, T, D = q.shape
    scores = q @ k.swapaxes(-1, -2) / math.sqrt(D)
    distance = np.arange(T)[None, :] - np.arange(T)[:, None]
    scores = scores + alibi_slopes(H)[:, None, None] * distance
    scores = np.where(np.tril(np.ones((T, T), dtype=bool)), scores, -np.inf)
    return softmax(scores) @ v
'''


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


@pytest.fixture(autouse=True)
def _fresh_catalogue():
    """use_packs adds to the process's catalogue: each test starts from the built-in groups."""
    before = list(exercises._requested)
    yield
    exercises._requested[:] = before


def test_correct_submission_passes_and_buggy_ones_are_named(tmp_path):
    good = tmp_path / "local.py"
    good.write_text(STUDENT)
    bad = tmp_path / "off_by_one.py"
    bad.write_text(STUDENT.replace("i[None, :] > i[:, None] - window", "i[None, :] >= i[:, None] - window")
                   .replace("scores + alibi_slopes(H)", "scores - alibi_slopes(H)"))
    ok = _cli("check", str(good), "--pack", PACK, "--json")
    rows = json.loads(ok.stdout)
    assert ok.returncode == 0, ok.stderr
    # The helper `softmax` is graded too: the blocks group has an exercise of that name.
    assert {r["exercise"] for r in rows} == {"alibi_slopes", "sliding_window_attention", "alibi_attention", "softmax"}
    assert all(r["verdict"] == "pass" for r in rows)
    wrong = _cli("check", str(bad), "--pack", PACK, "--json")
    assert wrong.returncode == 1
    named = {r["exercise"]: r.get("mistake") for r in json.loads(wrong.stdout) if r["verdict"] != "pass"}
    assert named == {"sliding_window_attention": "window_one_too_wide", "alibi_attention": "alibi_sign_flipped"}


def test_pack_references_agree_with_an_independent_computation():
    # The pack's references come from the three backends; here the window mask and the ALiBi slopes
    # are checked against the paper's numbers and a loop written out by hand.
    exercises.use_packs([PACK])
    slopes = exercises.get("alibi_slopes")
    assert slopes.reference({"masks": __import__("numpy_impl.masks", fromlist=["x"])}, {"n_heads": 8}).tolist() \
        == [2.0 ** -k for k in range(1, 9)]
    import numpy as np

    import numpy_impl.attention
    import numpy_impl.masks
    ex = exercises.get("sliding_window_attention")
    inputs = ex.cases[0].inputs(np.random.default_rng(0), np.dtype("float64"))
    got = ex.reference({"masks": numpy_impl.masks, "attention": numpy_impl.attention}, inputs)
    q, k, v, w = inputs["q"], inputs["k"], inputs["v"], inputs["window"]
    want = np.zeros_like(q)
    for t in range(q.shape[-2]):
        keys = range(max(0, t - w + 1), t + 1)
        s = np.stack([(q[..., t, :] * k[..., j, :]).sum(-1) for j in keys], -1) / np.sqrt(q.shape[-1])
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        want[..., t, :] = sum(p[..., n, None] * v[..., j, :] for n, j in enumerate(keys))
    assert np.abs(got - want).max() < 1e-12


def test_exercise_list_and_new_read_the_pack(tmp_path):
    listed = _cli("exercise", "list", "--json", "--pack", PACK)
    assert listed.returncode == 0, listed.stderr
    assert {r["name"] for r in json.loads(listed.stdout) if r["group"] == "local-attention"} == \
        {"alibi_slopes", "sliding_window_attention", "alibi_attention"}
    out = tmp_path / "mine.py"
    new = _cli("exercise", "new", "local-attention", "--pack", PACK, "--out", str(out))
    assert new.returncode == 0, new.stderr
    text = out.read_text()
    assert "def sliding_window_attention(q, k, v, window)" in text and "def alibi_attention(q, k, v)" in text


@pytest.mark.parametrize("body, words", [
    ("GROUP = 'x'\nTITLE = 'x'\n", "without EXERCISES"),
    ("raise RuntimeError('typo in the pack')\n", "failed to load: RuntimeError: typo in the pack"),
    ("GROUP = 'blocks'\nTITLE = 't'\nEXERCISES = []\n", "already a group"),
    ("GROUP = 'x'\nTITLE = 't'\nEXERCISES = [1]\n", "expected EXERCISES to hold"),
])
def test_a_broken_pack_is_one_line_and_exit_2(tmp_path, body, words):
    pack = tmp_path / "pack.py"
    pack.write_text(body)
    r = _cli("check", str(tmp_path / "pack.py"), "--pack", str(pack))
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    with pytest.raises(InputError, match="pack "):
        exercises.use_packs([str(pack)])


def test_an_installed_pack_is_found_by_its_entry_point(tmp_path, monkeypatch):
    # An installed distribution is a *.dist-info folder on sys.path; its entry_points.txt declares the
    # pack. importlib.metadata reads it exactly as it reads a pip-installed package's.
    (tmp_path / "my_course_pack.py").write_text(Path(PACK).read_text().replace(
        'GROUP = "local-attention"', 'GROUP = "my-course"'))
    info = tmp_path / "my_course-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-course\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[triptych.exercises]\nmy-course = my_course_pack\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    exercises._installed.cache_clear()
    try:
        found = exercises.groups()
        assert "my-course" in found
        assert [ex.name for ex in found["my-course"][1]][0] == "alibi_slopes"
    finally:
        exercises._installed.cache_clear()


def test_built_in_groups_pass_the_same_contract():
    # Every built-in group is a module checked by validate_pack, as a teacher's is.
    for module in exercises._builtin():
        assert exercises.validate_pack(module, module.__name__) is module
    assert "course-b" in exercises.groups()
