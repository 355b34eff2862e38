"""`check --format junit`: JUnit XML, the test report every CI system reads (GitHub Actions'
test reporters, GitLab's junit artifacts, Jenkins).

One <testsuite> per submission, one <testcase> per exercise and case (classname: the submission
and the exercise, name: the case). A failing case carries <failure message="..."> with what went
wrong and the named mistake; a case the code could not run (an exception, a timeout, a crash)
carries <error>; a case the user's signature cannot take is <skipped>. A submission that answers
no exercise is one <testcase> with an <error> saying so.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from triptych.crosscheck.classroom.outcome import failure_text, graded, student_name

# Verdicts of a case whose code did not produce outputs: JUnit's <error>, not a wrong answer.
ERROR_VERDICTS = ("error", "timeout", "crashed", "memory", "missing", "sys.exit", "not implemented yet")


def _case(suite: ET.Element, classname: str, row: dict) -> str:
    """Add one <testcase>; returns 'pass', 'failure', 'error' or 'skipped'."""
    case = ET.SubElement(suite, "testcase", classname=classname, name=row.get("case") or row.get("verdict") or "?")
    if not graded(row):
        ET.SubElement(case, "skipped", message=row.get("message") or "not graded")
        return "skipped"
    if row["ok"]:
        return "pass"
    text = failure_text(row)
    kind = "error" if row.get("verdict") in ERROR_VERDICTS or not row.get("exercise") else "failure"
    element = ET.SubElement(case, kind, message=text.splitlines()[0], type=str(row.get("verdict")))
    element.text = text
    return kind


def junit_tree(reports: list) -> ET.ElementTree:
    """<testsuites> with one <testsuite> per report, counts on each and on the whole."""
    root = ET.Element("testsuites", name="triptych check")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for rep in reports:
        student = student_name(rep.path)
        suite = ET.SubElement(root, "testsuite", name=student)
        props = ET.SubElement(suite, "properties")  # JUnit's schema puts <properties> first
        ET.SubElement(props, "property", name="framework", value=rep.framework)
        ET.SubElement(props, "property", name="path", value=rep.path)
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        for row in rep.rows:
            classname = f"{student}.{row['exercise']}" if row.get("exercise") else student
            outcome = _case(suite, classname, row)
            counts["tests"] += 1
            if outcome != "pass":
                counts[{"failure": "failures", "error": "errors", "skipped": "skipped"}[outcome]] += 1
        for key, n in counts.items():
            suite.set(key, str(n))
            totals[key] += n
    for key, n in totals.items():
        root.set(key, str(n))
    return ET.ElementTree(root)


def junit_xml(reports: list) -> str:
    """The XML document as text (UTF-8 declaration, indented)."""
    tree = junit_tree(reports)
    ET.indent(tree)
    return ET.tostring(tree.getroot(), encoding="unicode", xml_declaration=True) + "\n"
