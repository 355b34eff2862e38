"""Grading a class: -j N gives the same verdicts as one at a time; Gradescope's results.json follows
Gradescope's documented format and scores by case; JUnit XML parses with the right counts; the
class page opens in a real headless browser with no error and shows what it should."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from classroom_fixture import make_class
from triptych.common.checks import InputError
from triptych.crosscheck.classroom.class_report import write_class_report
from triptych.crosscheck.classroom.gradescope import gradescope_results
from triptych.crosscheck.classroom.junit import junit_xml
from triptych.crosscheck.classroom.parallel import map_in_order
from triptych.crosscheck.classroom.points import VISIBILITIES, parse_points
from triptych.crosscheck.session import check_folder

ROOT = Path(__file__).resolve().parents[1]

# results.json as "Autograder Specifications" (gradescope-autograders.readthedocs.io/en/latest/specs/)
# describes it, written from that page: every key documented there, nothing else allowed.
_VISIBILITY = {"enum": ["hidden", "after_due_date", "after_published", "visible"]}
_FORMAT = {"enum": ["text", "html", "simple_format", "md", "ansi"]}
GRADESCOPE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "anyOf": [{"required": ["score"]}, {"required": ["tests"]}],
    "properties": {
        "score": {"type": "number"},
        "execution_time": {"type": "number"},
        "output": {"type": "string"},
        "output_format": _FORMAT,
        "test_output_format": _FORMAT,
        "test_name_format": _FORMAT,
        "visibility": _VISIBILITY,
        "stdout_visibility": _VISIBILITY,
        "extra_data": {"type": "object"},
        "leaderboard": {"type": "array"},
        "tests": {"type": "array", "items": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "score": {"type": "number"},
                "max_score": {"type": "number"},
                "status": {"enum": ["passed", "failed"]},
                "name": {"type": "string"},
                "name_format": _FORMAT,
                "number": {"type": "string"},
                "output": {"type": "string"},
                "output_format": _FORMAT,
                "tags": {"type": "array", "items": {"type": "string"}},
                "visibility": _VISIBILITY,
                "extra_data": {"type": "object"},
            },
        }},
    },
}


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    """Six students (NumPy, torch and JAX files; two with a planted mistake), graded one at a time
    and two at a time."""
    folder = tmp_path_factory.mktemp("class")
    planted = make_class(folder, 6, buggy_every=3)
    return planted, check_folder(str(folder), jobs=1), check_folder(str(folder), jobs=2)


def _verdicts(reports):
    return [(Path(rep.path).name, rep.framework, [(r["exercise"], r["case"], r["verdict"], r.get("mistake"))
                                                  for r in rep.rows]) for rep in reports]


def test_two_at_a_time_gives_the_verdicts_of_one_at_a_time(graded_class):
    planted, one, two = graded_class
    assert _verdicts(two) == _verdicts(one)
    assert [Path(rep.path).name for rep in two] == sorted(planted)
    for rep in two:
        mistake = planted[Path(rep.path).name]
        named = {r.get("mistake") for r in rep.rows} - {None}
        assert rep.ok == (mistake is None) and (mistake in named if mistake else not named)
    assert {rep.framework for rep in two} == {"numpy", "torch", "jax"}


def test_results_come_back_in_the_items_order_whatever_finishes_first():
    release = threading.Event()

    def grade(item, tick):
        if item == 0:
            release.wait(10)  # the first item finishes last
        else:
            release.set()
        tick(1, 1)
        return item * 10

    seen = []
    assert map_in_order(grade, [0, 1, 2], jobs=3, progress=lambda d, t: seen.append((d, t))) == [0, 10, 20]
    assert seen[-1] == (3, 3)
    with pytest.raises(ValueError, match="jobs"):
        map_in_order(grade, [1], jobs=0)


POINTS = {"stdout_visibility": "visible", "exercises": {
    "pairwise_similarities": 2, "attn_scaled": {"points": 3},
    "self_attention": {"points": 5, "hidden": ["(2, 7, 12), 4 heads, causal (float32)"],
                       "hidden_visibility": "after_published"},
    "layer_norm": 1}}


def test_gradescope_results_follow_the_documented_format_and_score_by_case(graded_class):
    jsonschema = pytest.importorskip("jsonschema")
    planted, _, reports = graded_class
    buggy = next(rep for rep in reports if planted[Path(rep.path).name] == "k_untransposed")
    results = gradescope_results([buggy], parse_points(POINTS), execution_time=12.4)
    jsonschema.validate(results, GRADESCOPE_SCHEMA)
    tests = {t["name"]: t for t in results["tests"]}
    assert list(tests) == ["pairwise_similarities", "attn_scaled", "self_attention",
                           "self_attention (hidden cases)", "layer_norm"]
    # Partial credit: the points times the share of the exercise's cases that pass, from the rows.
    for name, points in (("pairwise_similarities", 2), ("attn_scaled", 3)):
        rows = [r for r in buggy.rows if r["exercise"] == name]
        assert tests[name]["max_score"] == points
        assert tests[name]["score"] == pytest.approx(points * sum(r["ok"] for r in rows) / len(rows), abs=1e-4)
    assert tests["pairwise_similarities"]["score"] < 2 and tests["attn_scaled"]["score"] == 3
    # The hidden case is a test of its own, worth its share (1 case of 5) of the 5 points.
    assert tests["self_attention (hidden cases)"]["visibility"] == "after_published"
    assert tests["self_attention (hidden cases)"]["max_score"] == pytest.approx(1.0)
    assert tests["self_attention"]["max_score"] == pytest.approx(4.0)
    assert tests["layer_norm"]["score"] == 0 and "layer_norm" in tests["layer_norm"]["output"]
    assert results["extra_data"]["max_score"] == pytest.approx(11.0)
    assert results["score"] == pytest.approx(sum(t["score"] for t in results["tests"]), abs=1e-3)
    assert "K NOT transposed" in tests["pairwise_similarities"]["output"]
    assert results["execution_time"] == 12 and results["stdout_visibility"] == "visible"


def test_a_points_file_names_what_is_wrong():
    with pytest.raises(InputError, match="softmaxx"):
        parse_points({"exercises": {"softmaxx": 1}})
    with pytest.raises(InputError, match=r"self_attention\.hidden.*course test: 1 head, no mask"):
        parse_points({"exercises": {"self_attention": {"hidden": ["no such case"]}}})
    with pytest.raises(InputError, match="visibility.*" + "|".join(VISIBILITIES)):
        parse_points({"exercises": {"softmax": {"points": 1, "visibility": "students"}}})
    with pytest.raises(InputError, match="points.*>= 0"):
        parse_points({"exercises": {"softmax": -1}})


def test_gradescope_from_the_command_line_with_a_toml_points_file(tmp_path):
    submission = tmp_path / "submission"
    submission.mkdir()
    shutil.copy(ROOT / "tests" / "submissions" / "course_b_torch.py", submission / "attention.py")
    (tmp_path / "points.toml").write_text('[exercises]\nsplit_heads = 2\nmerge_heads = 2\nsoftmax = 1\n')
    out = tmp_path / "results" / "results.json"
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), "check", str(submission), "--format", "gradescope",
                        "--points", str(tmp_path / "points.toml"), "--out", str(out), "-j", "2"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT, env={**os.environ, "COLUMNS": "120"})
    assert r.returncode == 0, r.stderr  # the one file passes everything it answers
    results = json.loads(out.read_text())
    assert [(t["name"], t["score"], t["max_score"]) for t in results["tests"]] == [
        ("split_heads", 2.0, 2.0), ("merge_heads", 2.0, 2.0), ("softmax", 0.0, 1.0)]
    assert results["score"] == 4.0 and results["extra_data"]["max_score"] == 5.0
    bad = subprocess.run([sys.executable, str(ROOT / "cli.py"), "check", str(submission), "--points", "p.toml"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "--points goes with --format gradescope" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_junit_xml_parses_with_a_suite_per_student_and_the_right_counts(graded_class):
    planted, _, reports = graded_class
    root = ET.fromstring(junit_xml(reports).encode("utf-8"))
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [Path(n).stem for n in sorted(planted)]
    for suite, rep in zip(suites, reports):
        cases = suite.findall("testcase")
        bad = [r for r in rep.rows if not r["ok"]]
        assert int(suite.get("tests")) == len(cases) == len(rep.rows)
        assert int(suite.get("failures")) + int(suite.get("errors")) == len(bad)
        assert len([c for c in cases if c.find("failure") is not None or c.find("error") is not None]) == len(bad)
        mistake = planted[suite.get("name") + ".py"]
        if mistake:
            messages = " ".join(f.text or "" for f in suite.iter("failure"))
            assert "mistake:" in messages
    assert int(root.get("tests")) == sum(len(rep.rows) for rep in reports)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _browser(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", *args], capture_output=True, text=True, timeout=timeout)


def test_the_class_page_opens_in_a_browser_with_no_error(graded_class, tmp_path):
    planted, _, reports = graded_class
    page = tmp_path / "class.html"
    written = write_class_report(reports, str(page), title="course B")
    assert len(written) == 1 + len(reports) and all(Path(p).is_file() for p in written)
    html = page.read_text()
    # Self-contained: no script, stylesheet, image or font fetched from anywhere.
    assert not re.search(r"<script|<link|<img|src=|url\(|@import|https?://(?!www\.w3\.org/2000/svg)", html)
    if _chromium() is None:
        pytest.skip("chromium is not installed (make setup installs Debian's package when run as root)")
    dom = _browser("--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not re.search(r"Uncaught|CONSOLE\(\d+\).*[Ee]rror|Failed to load resource", dom.stderr)
    # What rendered: every exercise, the mistakes planted (a bar each), a link per student.
    for name in ("pairwise_similarities", "attn_scaled", "self_attention", "k_untransposed", "no_scale"):
        assert name in dom.stdout
    assert dom.stdout.count("<svg") >= 3 and dom.stdout.count('href="class_files/') == len(reports)
    shot = tmp_path / "class.png"
    taken = _browser(f"--screenshot={shot}", "--window-size=1200,2000", "--hide-scrollbars", page.as_uri())
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1200, 2000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50  # text, bars and table cells drawn, not a blank page
    # A student's own page: the report `check FILE -v` prints, and a link back.
    student = (tmp_path / "class_files" / "student_02.html").read_text()
    assert "K NOT transposed" in student and 'href="../class.html"' in student
