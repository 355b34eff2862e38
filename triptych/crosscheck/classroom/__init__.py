"""Grading a class: submissions in parallel (parallel.py), Gradescope's results.json
(gradescope.py, points.py), JUnit XML for any CI (junit.py) and one HTML page for the whole class
with a page per student (class_report.py)."""
