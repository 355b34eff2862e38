"""Courses C-E (exercises.md C, D, E): crafted queries and keys, argmax attention, and reading one
value back out of an average.

A crafted answer (a query, a query matrix, a replacement key) has no single right value: it is judged
by what it DOES. The checker runs unscaled attention softmax(K q) V on the user's answer, in its own
process with numpy_impl, and compares that output with the target (v_0, V itself, a mean of values),
against our 1e-3 (triptych/common/tolerances.py, "crafted") and the course's 0.05. The user may assign the
answer (`query_v0 = np.array([...])`) or write a function of K and V that returns it. A failing
answer is matched against mistakes computed here: the output of a query built from the values, of a
sum of keys, a target other than the one asked for, or the right direction at too small a scale.

The matrix M of E is judged the same way, by its action: any M that is 2 on span(a) and 0 on span(b)
is right, 2 A A^T among others, so M (v_a + v_b)/2 is compared with v_a for random v_a, v_b.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from triptych.common.invocation import command
from triptych.common.tolerances import tolerance
from triptych.crosscheck.grade import l2
from triptych.crosscheck.exercises._subspace import READER_VARIANTS, grade_reader, orthonormal, subspaces
from triptych.crosscheck.spec import Case, Exercise, Variant
from triptych.common.course import CRAFT_KEYS as C_KEYS, CRAFT_VALUES as C_VALUES

GROUP = "course-ce"
TITLE = "Courses C-E: crafted queries and keys, argmax attention, reading values out of an average"
ORDER = 30

COURSE_TOL = 0.05  # exercise C: "the course accepts <= 0.05"
CRAFTED = tolerance("float64", "crafted")  # ours: 1e-3 on the attention output (reason in the table)
# A longer query sharpens the softmax: if one of these multiples of a failing query reaches the
# target, the direction was right and only the scale too small.
SCALES = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)
# Homework 6 (exercises.md D): keys k_1..k_4, values, query.
D_KEYS = np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 2.0], [-1.0, 1.0, -2.0], [0.0, -1.0, -2.0]])
D_VALUES = np.array([[3.0, 2.0, -4.0], [3.0, -2.0, 4.0], [3.0, 2.0, 0.0], [3.0, 2.0, 4.0]])
D_QUERY = np.array([-2.0, 1.0, 1.0])


def _attend(q, keys, values):
    """Unscaled attention (exercise C: no 1/sqrt(d)) with the project's NumPy implementation.
    Shapes: q (T_q, D), keys (T, D), values (T, D_v) -> (T_q, D_v)"""
    from numpy_impl.attention import scaled_dot_product_attention
    return scaled_dot_product_attention(np.atleast_2d(q), keys, values, scale=1.0)[0]


def _softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ---------------------------------------------------------------- a crafted answer, judged by its output

@dataclass(frozen=True)
class Craft:
    """What one crafted exercise needs: the shapes each answer may take, how the answers become
    attention inputs, and the target output."""
    shapes: Callable[[dict], tuple]  # inputs -> per answer, the accepted shapes
    build: Callable[[dict, list], tuple]  # (inputs, answers) -> (queries (T_q, D), keys, values)
    target: Callable[[dict], object]  # inputs (any backend's arrays) -> the output wanted
    constraint: Callable[[dict, list], str | None] | None = None  # a broken side condition, in words
    # compute({**inputs, "yours": answers, "craft": this}) -> the output the mistake gives, or None
    variants: tuple[Variant, ...] = ()


def _queries(i, a):
    return a[0].reshape(-1, i["K"].shape[-1]), i["K"], i["V"]


def _with_key2(i, a):
    """C.5 and C.6: the user's own query of C.4 (second answer) on K with row 2 replaced (first)."""
    keys = i["K"].copy()
    keys[2] = a[0].reshape(-1)
    return a[1].reshape(1, -1), keys, i["V"]


def _output_of(craft: Craft, i: dict, answers: list) -> np.ndarray:
    q, keys, values = craft.build(i, answers)
    return _attend(q, keys, values)


def _grade_crafted(craft: Craft, names: tuple[str, ...]):
    def grade(case, inputs, got, refs):
        answers = [np.asarray(g, dtype=np.float64) for g in got]
        shapes = dict(shape=" ".join(str(a.shape) for a in answers),
                      expected_shape="")
        accepted = craft.shapes(inputs)
        shapes["expected_shape"] = " ".join(str(s[0]) for s in accepted)
        for a, allowed, name in zip(answers, accepted, names):
            if a.shape not in allowed:
                return dict(verdict="wrong shape", **shapes,
                            message=f"{name}: expected shape {' or '.join(map(str, allowed))}, got {a.shape}")
            if not np.all(np.isfinite(a)):
                return dict(verdict="NaN/inf", **shapes, message=f"{name} holds NaN or inf")
        target = np.atleast_2d(np.asarray(craft.target(inputs), dtype=np.float64))
        out = _output_of(craft, inputs, answers).reshape(target.shape)
        err = float(np.max(np.abs(out - target)))
        broken = craft.constraint(inputs, answers) if craft.constraint else None
        fields = dict(max_abs_err=err, tolerance=CRAFTED.atol, l2=l2([out]), **shapes)
        if err <= CRAFTED.atol and broken is None:
            return dict(ok=True, verdict="pass", **fields,
                        message=f"your answer's attention output is within {err:.1e} of the target")
        mistake = _diagnose_crafted(craft, inputs, answers, out, err, case.course_tol)
        if case.course_tol is not None and err <= case.course_tol and broken is None:
            # The course's own pass mark wins; our tighter figure is shown beside it, and a mistake
            # the answer also resembles is said, not held against it.
            also = f"; it is what {mistake[0].says} gives ({mistake[0].why})" if mistake else ""
            return dict(ok=True, verdict="pass", **fields, note=(
                f"within the course's own tolerance {case.course_tol:g} (your answer's attention output is "
                f"{err:.1e} from the target); ours is tighter: {CRAFTED.atol:g}{also}"))
        message = "; ".join(m for m in (
            None if err <= CRAFTED.atol else
            f"your answer's attention output is {err:.2e} from the target, tolerance {CRAFTED.atol:g}",
            broken) if m)
        if mistake:
            variant, dist = mistake
            fields.update(diagnosis=f"your output matches {variant.says}, max |err| {dist:.1e}",
                          explanation=variant.why, fix_at=_locate(variant), mistake=variant.name)
        return dict(verdict="FAIL", message=message, **fields)
    return grade


def _locate(variant):
    from triptych.crosscheck.spec import locate
    return locate(variant.fix_at)


def _diagnose_crafted(craft, inputs, answers, out, err, course_tol):
    """The first variant whose output the user's output matches: within our tolerance, or within
    the course's and much nearer to the wrong output than to the target (a rough aim at the wrong
    thing is still that mistake)."""
    found = []
    for v in craft.variants:
        try:
            wrong = v.compute({**inputs, "yours": answers, "craft": craft})
        except (ValueError, np.linalg.LinAlgError, ZeroDivisionError):
            continue
        if wrong is not None:
            found.append((v, float(np.max(np.abs(out - np.asarray(wrong, dtype=np.float64).reshape(out.shape))))))
    close = [(v, d) for v, d in found if d <= CRAFTED.atol]  # first any match within our tolerance
    rough = [(v, d) for v, d in found if d <= (course_tol or COURSE_TOL) and d < 0.25 * err]
    return min(close or rough, key=lambda vd: vd[1], default=None)


def _scaled_up(i):
    """The user's own output when some c > 1 times their query reaches the target: then the query
    had the right direction and too small a length."""
    craft, a = i["craft"], i["yours"]
    target = np.atleast_2d(np.asarray(craft.target(i), dtype=np.float64))
    mine = _output_of(craft, i, a)
    for c in SCALES:
        if np.max(np.abs(_output_of(craft, i, [c * a[0], *a[1:]]).reshape(target.shape) - target)) <= CRAFTED.atol:
            return mine
    return None


def _parallel_output(direction: Callable[[dict], np.ndarray]):
    """The output of the query direction(i) at the user's own length: equal to the user's output
    exactly when their query points along direction(i) (row by row for a query matrix)."""
    def compute(i):
        q = i["yours"][0].reshape(-1, i["K"].shape[-1])
        d = np.atleast_2d(direction(i))
        c = np.sum(q * d, axis=-1, keepdims=True) / np.sum(d * d, axis=-1, keepdims=True)
        return _output_of(i["craft"], i, [c * d, *i["yours"][1:]])
    return compute


def _not_unit(i):
    """The user's own output when their k_2 does the job but is not of length 1."""
    k2 = i["yours"][0].reshape(-1)
    mine = _output_of(i["craft"], i, i["yours"])
    reached = np.max(np.abs(mine.reshape(-1) - np.asarray(i["craft"].target(i)).reshape(-1))) <= CRAFTED.atol
    return mine if reached and abs(float(np.linalg.norm(k2)) - 1.0) > CRAFTED.atol else None


def _unit_constraint(i, a):
    n = float(np.linalg.norm(a[0]))
    return None if abs(n - 1.0) <= CRAFTED.atol else f"your k_2 has length {n:.6g}; the task asks for length exactly 1"


_CQ = ("triptych.lessons.craft_queries", "gap_query", "np.linalg.solve")
SCALE_TOO_SMALL = Variant(
    "scale_too_small", "the target once your query is made longer (c q with c > 1)",
    "softmax reaches 0/1 weights only as the score gaps grow: your query points the right way but its gaps "
    "are too small; multiply it by a larger scale S", _scaled_up, _CQ)


def _target_v(n):
    return lambda i: i["V"][:n].mean(0)  # the first n values, by a slice: JAX refuses list indices


def _query_shapes(i):
    d = i["K"].shape[-1]
    return (((d,), (1, d)),)


def _key_and_query_shapes(i):
    return _query_shapes(i) * 2


C1 = Craft(_query_shapes, _queries, lambda i: i["V"][0], variants=(
    Variant("query_from_values", "a query along v_0 (the value) instead of one built from the keys",
            "the query is compared with the KEYS (scores K q); the values are only averaged, so v_0's "
            "direction says nothing about which key wins", _parallel_output(lambda i: i["V"][0]), _CQ),
    SCALE_TOO_SMALL))
C2 = Craft(lambda i: ((i["K"].shape,),), _queries, lambda i: i["V"], variants=(
    Variant("queries_from_values", "queries along the rows of V instead of ones built from the keys",
            "each row's scores are K q_i: the keys decide the weights, the values are only averaged",
            _parallel_output(lambda i: i["V"]), _CQ),
    SCALE_TOO_SMALL))
C3 = Craft(_query_shapes, _queries, lambda i: i["V"].mean(0), variants=(
    Variant("mean_of_keys", "a query along the mean of the keys",
            "equal weights need equal scores k_j . q for all j: q = 0 gives exactly that, while the mean "
            "of the keys scores each key by its similarity to the others",
            _parallel_output(lambda i: i["K"].mean(0)), ("triptych.lessons.craft_queries", "exact_query", "np.log(w)")),))
C4 = Craft(_query_shapes, _queries, _target_v(2), variants=(
    Variant("sum_of_keys", "a query along k_0 + k_1",
            "tokens 0 and 1 tie only when (k_0 - k_1) . q = 0; k_0 + k_1 scores them |k_0|^2 + k_0.k_1 and "
            "|k_1|^2 + k_0.k_1, unequal because the keys have different lengths",
            _parallel_output(lambda i: i["K"][0] + i["K"][1]), _CQ),
    Variant("mean01_returns_v0", "v_0 alone (the query of C.1)", "the mean of v_0 and v_1 needs a TIE "
            "between tokens 0 and 1: (k_0 - k_1) . q = 0", lambda i: i["V"][0], _CQ),
    SCALE_TOO_SMALL))
_NEAREST = ("triptych.lessons.craft_queries", "nearest_key_with_score", "score")
C5 = Craft(_key_and_query_shapes, _with_key2, _target_v(3), variants=(
    Variant("k2_unchanged", "the mean of v_0 and v_1 (token 2 still left out)",
            "token 2 joins the tie only when its score k_2 . q equals s_0 = s_1",
            lambda i: i["V"][:2].mean(0), _NEAREST),
    Variant("k2_wins", "v_2 alone (token 2 scores above the tie)",
            "k_2 . q must EQUAL s_0 = s_1 for a three-way mean; above it, token 2 takes all the weight",
            lambda i: i["V"][2], _NEAREST)))
_UNIT = ("triptych.lessons.craft_queries", "_task_6", "np.linalg.norm")
C6 = Craft(_key_and_query_shapes, _with_key2, lambda i: i["V"][2], constraint=_unit_constraint, variants=(
    Variant("key_not_unit", "a k_2 that wins but is not of length 1",
            "the task fixes |k_2| = 1: by Cauchy-Schwarz the best unit key is q / |q|, scoring |q|", _not_unit, _UNIT),
    Variant("k2_unchanged_v2", "the mean of v_0 and v_1 (token 2 still left out)",
            "token 2 must score far above s_0 = s_1 to take the weight", lambda i: i["V"][:2].mean(0), _UNIT),
    Variant("k2_ties", "the mean of v_0, v_1 and v_2 (token 2 only ties)",
            "to return v_2 token 2 must score far ABOVE s_0 = s_1, not equal them",
            lambda i: i["V"][:3].mean(0), _UNIT)))


def _course_kv(rng, dt):
    return {"K": C_KEYS.astype(dt), "V": C_VALUES.astype(dt)}


def _crafted_exercise(name, craft, contract, checks, with_=(), notes=""):
    names = (name, *with_)
    return Exercise(
        name, GROUP, f"{name}(K, V)", contract, checks,
        target={"kind": "answer", "name": name, "args": ["K", "V"], **({"with": list(with_)} if with_ else {})},
        reference=lambda m, i: craft.target(i),
        cases=(Case("the course's keys and values (4 x 3)", _course_kv, course_tol=COURSE_TOL),),
        variants=craft.variants,
        outputs=names, grade=_grade_crafted(craft, names),
        notes=("Give an array (`" + name + " = np.array([...])`) or a function of K, V returning it. Judged by "
               "softmax(K q) V (unscaled) vs the target: ours 1e-3, the course's 0.05. " + notes).strip(),
    )


# ---------------------------------------------------------------- D: argmax attention

def _argmax_ref(i):
    """out = V[argmax(K q)] in any backend: `@`, `.T`, `.argmax(-1)` and integer indexing are the
    same in NumPy, JAX and torch."""
    return i["V"][(i["q"] @ i["K"].T).argmax(-1)]


def _d_inputs(t_q, t, d, d_v):
    def make(rng, dt):
        q = rng.standard_normal((t_q, d) if t_q else (d,))
        return {"q": q.astype(dt), "K": rng.standard_normal((t, d)).astype(dt),
                "V": rng.standard_normal((t, d_v)).astype(dt)}
    return make


def _scores(i):
    return np.asarray(i["q"], dtype=np.float64) @ np.asarray(i["K"], dtype=np.float64).T


_AM = ("triptych.lessons.argmax_attention", "argmax_attention", "np.argmax")
ARGMAX_VARIANTS = (
    Variant("argmax_is_argmin", "the value of the LOWEST score (argmin)",
            "attention looks at the key most similar to the query: the largest dot product",
            lambda i: i["V"][_scores(i).argmin(-1)], _AM),
    Variant("argmax_softmax", "ordinary softmax attention (softmax(K q) V)",
            "the exercise replaces the softmax by a one-hot at the argmax: all the weight on one token",
            lambda i: _softmax(_scores(i)) @ i["V"], _AM),
    Variant("argmax_returns_key", "the winning KEY instead of its value",
            "the scores choose the token with the keys, the output is that token's VALUE",
            lambda i: i["K"][_scores(i).argmax(-1)], _AM),
    Variant("argmax_weight_is_score", "the winning value times its score (weights = scores where the max is)",
            "a one-hot weight is 1 at the argmax, not the score itself",
            lambda i: _scores(i).max(-1)[..., None] * i["V"][_scores(i).argmax(-1)] if _scores(i).ndim > 1
            else _scores(i).max() * i["V"][_scores(i).argmax()], _AM),
)


# ---------------------------------------------------------------- E: M, and the averaging query

def _avg_inputs(n, d, s):
    def make(rng, dt):
        return {"K": orthonormal(rng, d, n).T.astype(dt), "V": rng.standard_normal((n, d)).astype(dt), "S": s}
    return make


_AVG = ("triptych.lessons.subspace", "averaging_query", "S * (keys[0]")
E2 = Craft(_query_shapes, lambda i, a: (a[0].reshape(1, -1), i["K"], i["V"]),
           lambda i: (i["V"][0] + i["V"][1]) / 2, variants=(
    Variant("averaging_unscaled", "q = k_0 + k_1 (the scale S ignored)",
            "with orthonormal keys the wanted tokens beat the others by S: without S the gap is 1 and the other "
            "tokens keep weight 1 / (2 e + n - 2)", lambda i: _attend(i["K"][0] + i["K"][1], i["K"], i["V"]), _AVG),
    Variant("averaging_one_key", "v_0 alone (q = S k_0)", "the average needs EQUAL scores on tokens 0 and 1: "
            "q = S (k_0 + k_1)", lambda i: i["V"][0], _AVG),
    Variant("averaging_all_keys", "the mean of ALL the values (q = S times the sum of every key)",
            "only tokens 0 and 1 should score S; every other key must score 0, i.e. stay out of q",
            lambda i: i["V"].mean(0), _AVG)))

AVERAGING = Exercise(
    "averaging_query", GROUP, "averaging_query(K, S)",
    "K (n, d) orthonormal rows, S a scale -> q (d,) whose attention output is (v_0 + v_1) / 2",
    "E.2: softmax(K q) V (unscaled) vs (v_0 + v_1)/2 at large S (our 1e-3 and the course's 0.05)",
    target={"name": "averaging_query", "args": ["K", "S"]},
    reference=lambda m, i: E2.target(i),
    cases=(Case("4 tokens in R^8, S = 20", _avg_inputs(4, 8, 20.0), course_tol=COURSE_TOL),
           Case("6 tokens in R^10, S = 40", _avg_inputs(6, 10, 40.0), seed=1, course_tol=COURSE_TOL)),
    variants=E2.variants, grade=_grade_crafted(E2, ("averaging_query",)),
    notes="The error falls like e^-S: at S = 20 the right query is far inside 1e-3.")


EXERCISES = [
    _crafted_exercise("query_v0", C1, "K (4, 3), V (4, 3) -> q (3,) with softmax(K q) V = v_0",
                      "C.1: the attention output of your q vs v_0"),
    _crafted_exercise("query_identity", C2, "K (4, 3), V (4, 3) -> Q (4, 3) with softmax(Q K^T) V = V",
                      "C.2: the attention output of your Q (one query per row) vs V itself"),
    _crafted_exercise("query_mean_all", C3, "K (4, 3), V (4, 3) -> q (3,) with softmax(K q) V = mean of v_0..v_3",
                      "C.3: the attention output of your q vs the mean of the four values"),
    _crafted_exercise("query_mean_01", C4, "K (4, 3), V (4, 3) -> q (3,) with softmax(K q) V = (v_0 + v_1) / 2",
                      "C.4: the attention output of your q vs the mean of v_0 and v_1"),
    _crafted_exercise("key2_mean_012", C5, "K (4, 3), V (4, 3) -> k_2 (3,) replacing row 2 of K",
                      "C.5: with YOUR query_mean_01 and k_2 replaced, the output vs the mean of v_0, v_1, v_2",
                      with_=("query_mean_01",), notes="Needs query_mean_01 in the same file."),
    _crafted_exercise("key2_unit_v2", C6, "K (4, 3), V (4, 3) -> k_2 (3,) of length 1 replacing row 2 of K",
                      "C.6: with YOUR query_mean_01 and a unit k_2, the output vs v_2 (and |k_2| = 1)",
                      with_=("query_mean_01",), notes="Needs query_mean_01 in the same file."),
    Exercise(
        "argmax_attention", GROUP, "argmax_attention(q, K, V)",
        "q (D,) or (T_q, D), K (T, D), V (T, D_v) -> V[argmax(K q)]: (D_v,) or (T_q, D_v)",
        "D: hard attention (all the weight on the highest score) vs V[argmax] in each backend; includes "
        "homework 6's keys, values and query",
        target={"name": "argmax_attention", "args": ["q", "K", "V"]},
        reference=lambda m, i: _argmax_ref(i),
        cases=(Case("homework 6: q = [-2, 1, 1], four keys",
                    lambda rng, dt: {"q": D_QUERY.astype(dt), "K": D_KEYS.astype(dt), "V": D_VALUES.astype(dt)}),
               Case("5 queries, 6 keys (D 4, D_v 5)", _d_inputs(5, 6, 4, 5)),
               Case("one query, 9 keys (float32)", _d_inputs(0, 9, 6, 3), dtype="float32")),
        variants=ARGMAX_VARIANTS,
        notes="Why it cannot be trained: the output is piecewise constant in q and K "
              f"(`{command('lesson', 'argmax-attention')}` shows the zero gradients).",
    ),
    Exercise(
        "subspace_reader", GROUP, "subspace_reader(A, B)",
        "A (d, m), B (d, p) orthonormal columns, A^T B = 0 -> M (d, d) with M (v_a + v_b)/2 = v_a",
        "E.1: M (v_a + v_b)/2 vs v_a for random v_a in span(A), v_b in span(B) (any right M passes, not only "
        "2 A A^T)",
        target={"name": "subspace_reader", "args": ["A", "B"]},
        reference=lambda m, i: 2 * i["A"] @ i["A"].T,
        cases=(Case("the lesson's bases: d 8, m 3, p 2", subspaces(8, 3, 2, lesson=True)),
               Case("d 12, m 4, p 5", subspaces(12, 4, 5), seed=1),
               Case("d 6 = m 2 + p 4 (the two spans fill R^d)", subspaces(6, 2, 4), seed=2)),
        variants=READER_VARIANTS, grade=grade_reader,
    ),
    AVERAGING,
]
