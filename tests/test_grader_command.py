"""`python -m maillab grade` on a JupyterHub exchange, and what it tells a teacher.

The LMS route (zip_collect) is tests/test_instructor_workflow.py; the whole corpus is
tests/test_labs_corpus.py. Here: nbgrader's exchange (release, learners submit, `--collect
exchange`), the report and the refusal to grade without a sandbox where none can be made.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import require_root, require_tool
from labcourse import ROOT, Course, nbgrader_env

from maillab.grader import sandbox
from maillab.grader.command import oddities

CORPUS = ROOT / "tests" / "lab_corpus"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())["smtp"]


def test_exchange_route_release_submit_collect_and_grade(tmp_path):
    require_tool("bwrap")
    require_root("grading in sandboxes needs root")
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    os.chmod(exchange, 0o777)  # nbgrader insists
    course = Course(tmp_path / "course", ["smtp"])
    with open(course.root / "nbgrader_config.py", "a") as f:
        f.write(f"\nc.Exchange.root = {str(exchange)!r}\n")
    course.generate("smtp")
    course.run("release_assignment", "smtp")
    for student, case in (("ada", "correct"), ("bo", "partial"), ("cy", "fake")):
        home = tmp_path / student
        (home / "smtp").mkdir(parents=True)
        shutil.copy(CORPUS / "smtp" / f"{case}.ipynb", home / "smtp" / "smtp.ipynb")
        # as the learner's own user would (on a hub nbgrader takes the login name)
        done = subprocess.run([sys.executable, "-m", "nbgrader", "submit", "smtp", "--course",
                               "maillab", f"--Exchange.root={exchange}",
                               f"--CourseDirectory.student_id={student}"], cwd=home,
                              env=nbgrader_env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
    done = subprocess.run([sys.executable, "-m", "maillab", "grade", "smtp", "--collect",
                           "exchange", "--workers", "2"], cwd=course.root, env=nbgrader_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    scores = {who: sum(v or 0 for v in course.grades("smtp", who).values())
              for who in ("ada", "bo", "cy")}
    assert scores == {"ada": EXPECTED["correct"]["score"], "bo": EXPECTED["partial"]["score"],
                      "cy": EXPECTED["fake"]["score"]}
    report = json.loads((course.root / "grade-reports" / "smtp.json").read_text())
    assert [r["student"] for r in report["submissions"]] == ["ada", "bo", "cy"]
    ada = report["submissions"][0]
    tests = graded_test_cells("smtp")  # every autograded test cell is checked outside
    assert ada["sandbox"] and len(ada["parts"]) == tests and ada["score"] == 90
    assert all(p["passed"] for p in ada["parts"].values())
    # the table: one line per student, the score, the sealed checks
    assert "ada" in done.stdout and "90/90" in done.stdout and f"{tests}/{tests} passed" in done.stdout


def graded_test_cells(lab: str) -> int:
    import nbformat
    nb = nbformat.read(ROOT / "solutions" / lab / f"{lab}.ipynb", 4)
    return sum(1 for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")
               and not c.metadata.get("nbgrader", {}).get("solution"))


def test_the_report_names_what_a_teacher_should_look_at():
    result = {"student": "eve", "kernel_restarts": 2, "odd": ["cell 4 printed more than 1 MB"],
              "parts": {"a_tests": {"passed": False, "kernel_passed": True, "notes": [],
                                    "points": 0, "max": 10, "message": ""},
                        "b_tests": {"passed": False, "kernel_passed": False,
                                    "notes": ["b_tests: your code ran longer than 8 s"],
                                    "points": 0, "max": 10, "message": ""}},
              "loading": ["loading: cell 3, statement 2: exit code 1 (skipped)"]}
    said = oddities(result)
    assert said[0] == "cell 4 printed more than 1 MB"
    assert "the notebook's kernel was restarted 2 time(s)" in said
    assert not any(s.startswith("a_tests") for s in said)  # partly right: nothing to look at
    assert "b_tests: your code ran longer than 8 s" in said
    assert any("skipped" in s for s in said)


def test_without_root_or_bubblewrap_it_says_what_to_do(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(sandbox.SandboxUnavailable, match="sudo"):
        sandbox.check_available()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap"):
        sandbox.check_available()
