"""`triptych exercise new GROUP`: a file with one stub per exercise, each raising
NotImplementedError (which `check` reports as "not implemented yet" rather than as an error).

Function stubs are generated from the exercise's signature and shape contract; classes (course A)
carry their own stub per framework, because the checker loads reference weights through the
attribute names the stub fixes.
"""
from __future__ import annotations

from crosscheck.spec import Exercise

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
