"""A class folder of course-B submissions for the classroom tests and the -j measurement: the
three correct sample files (NumPy, torch, JAX) and NumPy files with one named mistake planted
each (the redefinitions of tests/test_check_course_b.py)."""
from __future__ import annotations

import textwrap
from pathlib import Path

SUBMISSIONS = Path(__file__).with_name("submissions")
FRAMEWORKS = ("numpy", "torch", "jax")
# student file -> (the mistake's name, the redefinition appended to the NumPy solution)
PLANTED = {
    "k_untransposed": "def pairwise_similarities(Q, K):\n    return Q @ K\n",
    "no_scale": "def attn_scaled(A, n_embd, n_heads):\n    return A\n",
    "mask_upper": "def make_causal_mask(n_tok):\n    return np.triu(np.ones((n_tok, n_tok)))\n",
    "merge_no_transpose": """
        def merge_heads(y):
            B, nh, T, hs = y.shape
            return y.reshape(B, T, nh * hs)
        """,
}


def make_class(folder: Path, size: int, buggy_every: int = 3) -> dict[str, str | None]:
    """Write `size` student files into folder: every `buggy_every`-th a NumPy file with a planted
    mistake (cycling through PLANTED), the others correct files cycling through the frameworks.
    Returns {file name: planted mistake or None}."""
    folder.mkdir(parents=True, exist_ok=True)
    base = (SUBMISSIONS / "course_b_numpy.py").read_text()
    mistakes = list(PLANTED)
    made: dict[str, str | None] = {}
    correct = 0
    for i in range(size):
        if buggy_every and i % buggy_every == buggy_every - 1:
            mistake = mistakes[(i // buggy_every) % len(mistakes)]
            text = base + "\n" + textwrap.dedent(PLANTED[mistake])
        else:
            mistake = None
            text = (SUBMISSIONS / f"course_b_{FRAMEWORKS[correct % 3]}.py").read_text()
            correct += 1
        name = f"student_{i:02d}.py"
        (folder / name).write_text(text)
        made[name] = mistake
    return made
