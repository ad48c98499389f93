"""Every submission of tests/lab_corpus/, graded in one batch by `python -m maillab grade`.

For each lab: a correct submission, the unchanged student version, partial solutions, code that
hangs, swallows interrupts or ends the kernel, deleted/edited/retyped graded cells, and the
attacks of tests/lab_corpus/attacks.py and corpus_spec.py (patched grading helpers, forged
transcripts and Maildir files, input and AST transformers, importlib and sys.modules tricks,
lying ``__eq__``, a background process writing gradebook.db, killing the grader, reading the
hidden tests and other students' files, a fork bomb, a full disk, a flood of output, handlers
that ignore every signal). Each must get exactly the score in expected.json (and exactly those
tests failing): what its honest work earns. The batch must grade every submission in one run,
and the sandbox must have held (nothing outside it changed). Feedback must not show the hidden
tests.

The whole corpus is graded in one run with the command's default workers (one more than the
CPUs). Timings go to test-artifacts/lab-corpus-timings.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from conftest import require_root, require_tool
from labcourse import LABS, ROOT, Course, nbgrader_env

# Longer than the suite's --timeout=300: this module's fixture does minutes of work.
pytestmark = pytest.mark.timeout(1500)

CORPUS = ROOT / "tests" / "lab_corpus"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())
ARTIFACTS = ROOT / "test-artifacts"
CASES = [(lab, case) for lab in LABS if lab in EXPECTED for case in EXPECTED[lab]]
DEADLINE = 1200  # seconds for the whole corpus
MARKER = Path("/tmp/maillab-corpus-was-here")  # what the escape attack tries to leave behind


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    require_tool("bwrap")
    require_root("grading in sandboxes needs root")
    MARKER.unlink(missing_ok=True)
    course = Course(tmp_path_factory.mktemp("course"), [lab for lab in LABS if lab in EXPECTED])
    for lab in EXPECTED:
        course.generate(lab)
        for case in EXPECTED[lab]:
            course.submit(lab, case, CORPUS / lab / f"{case}.ipynb")
    submitted = {p: digest(p) for p in (course.root / "submitted").rglob("*.ipynb")}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "maillab", "grade", *EXPECTED, "--quiet"],
                          cwd=course.root, env=nbgrader_env(), capture_output=True, text=True,
                          timeout=DEADLINE)
    elapsed = time.perf_counter() - start
    reports = {lab: json.loads((course.root / "grade-reports" / f"{lab}.json").read_text())
               for lab in EXPECTED}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "lab-corpus-timings.json").write_text(json.dumps(
        {"total_seconds": round(elapsed, 1), "load": os.getloadavg(),
         "per_submission": {f"{lab}/{r['student']}": r.get("seconds")
                            for lab, rep in reports.items() for r in rep["submissions"]}},
        indent=1))
    return course, done, reports, submitted


@pytest.mark.parametrize("lab,case", CASES, ids=[f"{lab}-{case}" for lab, case in CASES])
def test_submission_gets_the_score_its_honest_work_earns(graded, lab, case):
    course, _done, reports, _ = graded
    expected = EXPECTED[lab][case]
    grades = course.grades(lab, case)
    tests = _code_tests(course, lab)
    assert set(tests) <= set(grades), "a test cell is missing from the gradebook"
    failing = sorted(g for g in tests if grades[g] == 0)
    score = sum(grades[g] for g in tests)
    report = next(r for r in reports[lab]["submissions"] if r["student"] == case)
    detail = {g: p["message"] for g, p in report.get("parts", {}).items() if not p["passed"]}
    assert failing == expected["failing"], detail
    assert score == expected["score"] == report["score"], detail


def _code_tests(course, lab: str) -> list[str]:
    """grade ids of the autograded test cells (not the written answer)."""
    nb = nbformat.read(course.root / "solutions" / lab / f"{lab}.ipynb", 4)
    return [c.metadata.nbgrader["grade_id"] for c in nb.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")]


def test_one_run_graded_every_submission(graded):
    _course, done, reports, _ = graded
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for lab, report in reports.items():
        got = {r["student"]: r for r in report["submissions"]}
        assert set(got) == set(EXPECTED[lab])
        assert not [r for r in got.values() if "error" in r], lab
        assert all(r["sandbox"] for r in got.values())


def test_the_sandbox_held(graded):
    """The escape attack wiped no other student's notebook, left nothing in /tmp, found no
    hidden test on disk and left no process running; the gradebook has the graded scores
    only (checked per submission above)."""
    course, _done, _reports, submitted = graded
    assert {p: digest(p) for p in submitted} == submitted
    assert not MARKER.exists()
    for lab in EXPECTED:
        nb = nbformat.read(course.root / "autograded" / "escape" / lab / f"{lab}.ipynb", 4)
        text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
        assert "hidden tests found: []" in text, lab
    alive = [name for name in os.listdir("/proc") if name.isdigit()
             and 2_000_100_000 <= os.stat(f"/proc/{name}").st_uid < 2_000_100_100]
    assert not alive


def test_the_report_says_what_happened(graded):
    _course, done, reports, _ = graded
    for lab in EXPECTED:
        by = {r["student"]: r for r in reports[lab]["submissions"]}
        assert by["kill"]["kernel_restarts"] >= 1 and by["swallow"]["kernel_restarts"] >= 1
        assert any("printed more than" in o for o in by["resources"]["odd"]), by["resources"]
        assert any("left processes running" in o for o in by["escape"]["odd"])
        tamper = by["tamper"]["parts"]
        assert any(p["kernel_passed"] and not p["passed"] for p in by["transformer"]["parts"]
                   .values()), "the transformer fooled the notebook's own tests"
        assert all(p["passed"] == (p["points"] > 0) for p in tamper.values())
    assert "look at" in done.stdout and "submissions in" in done.stdout


# What only the hidden tests and the grading mechanism would show (an attack's own cells may
# mention grading.fresh or a sandbox, and the learner sees those anyway).
HIDDEN_MARKS = ("_g = grading.fresh(lab)", "BEGIN HIDDEN TESTS", "/run/maillab", "MAILLAB_SEALED",
                "bwrap", "maillab.grader")


def test_feedback_shows_what_failed_without_the_hidden_tests(graded):
    course, *_ = graded
    labs = list(EXPECTED)
    for lab in labs:
        course.run("generate_feedback", lab, "--force")
    hidden_lines, released = set(), set()
    for lab in labs:
        nb = nbformat.read(course.root / "solutions" / lab / f"{lab}.ipynb", 4)
        for cell in nb.cells:
            part = cell.source.split("### BEGIN HIDDEN TESTS")[1:]
            hidden_lines |= {l.strip() for l in "".join(part).splitlines()
                             if len(l.strip()) > 25 and "END HIDDEN" not in l}
        student = nbformat.read(course.root / "labs" / lab / f"{lab}.ipynb", 4)
        released |= {l.strip() for c in student.cells for l in c.source.splitlines()}
    # a line (or part of one) the learner's version shows anyway gives nothing away
    hidden_lines = {h for h in hidden_lines if not any(h in r for r in released)}
    for lab in labs:
        for case in EXPECTED[lab]:
            html = (course.root / "feedback" / case / lab / f"{lab}.html").read_text()
            text = re.sub(r"<[^>]+>", "", html)
            for mark in HIDDEN_MARKS:
                assert mark not in text, (lab, case, mark)
            leaked = [l for l in hidden_lines if l in text]
            assert not leaked, (lab, case, leaked[:3])
        partial = (course.root / "feedback" / "hang" / lab / f"{lab}.html").read_text()
        assert "ran longer than" in partial or "timed out" in partial, lab
