"""Every submission of tests/lab_corpus/ autograded with the real `nbgrader autograde`.

For each lab: a correct submission, the unchanged student version, partial solutions, code that
hangs, code that swallows interrupts, code that ends the kernel, deleted/edited/retyped graded
cells, tampering with the grading helpers and faked server state. Each must get exactly the
score in tests/lab_corpus/expected.json (and exactly those tests failing), with no manual step:
nbgrader must not drop any submission, and nothing may hang (the whole run has a deadline).

The autogrades run two at a time against one gradebook (several `nbgrader autograde --student X`
processes, as facts.md found safe). Timings go to test-artifacts/lab-corpus-timings.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from labcourse import LABS, ROOT, Course


# Longer than the suite's --timeout=300: this module's fixture does minutes of work.
pytestmark = pytest.mark.timeout(1500)

CORPUS = ROOT / "tests" / "lab_corpus"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())
ARTIFACTS = ROOT / "test-artifacts"
CASES = [(lab, case) for lab in LABS if lab in EXPECTED for case in EXPECTED[lab]]
DEADLINE = 900  # seconds for the whole corpus (about 45 autogrades on 2 cores)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = Course(tmp_path_factory.mktemp("course"), [lab for lab in LABS if lab in EXPECTED])
    for lab in EXPECTED:
        course.generate(lab)
        for case in EXPECTED[lab]:
            course.submit(lab, f"{case}", CORPUS / lab / f"{case}.ipynb")
    # The slow cases (hang, swallow) first, so that they overlap with the quick ones.
    order = sorted(CASES, key=lambda job: job[1] not in ("swallow", "hang", "cells"))
    # One student per case name, so each lab's submissions of that case share a student id.
    start = time.perf_counter()
    results = course.autograde_many(order, workers=2)
    elapsed = time.perf_counter() - start
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "lab-corpus-timings.json").write_text(json.dumps(
        {"total_seconds": round(elapsed, 1),
         "per_submission": {f"{lab}/{case}": round(sec, 1)
                            for (lab, case), (sec, _log) in results.items()}}, indent=1))
    assert elapsed < DEADLINE, f"the corpus took {elapsed:.0f} s"
    return course, results


@pytest.mark.parametrize("lab,case", CASES, ids=[f"{lab}-{case}" for lab, case in CASES])
def test_submission_gets_the_expected_score(graded, lab, case):
    course, results = graded
    expected = EXPECTED[lab][case]
    grades = course.grades(lab, case)
    tests = _code_tests(course, lab)
    assert set(tests) <= set(grades), "a test cell is missing from the gradebook"
    failing = sorted(g for g in tests if grades[g] == 0)
    score = sum(grades[g] for g in tests)
    detail = course.errors(lab, case)
    assert failing == expected["failing"], detail
    assert score == expected["score"], detail


def _code_tests(course, lab: str) -> list[str]:
    """grade ids of the autograded test cells (not the written answer)."""
    import nbformat

    nb = nbformat.read(course.root / "solutions" / lab / f"{lab}.ipynb", 4)
    return [c.metadata.nbgrader["grade_id"] for c in nb.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")]


def test_the_correct_submission_gets_100_once_the_written_answer_is_graded(graded):
    from nbgrader.api import Gradebook

    course, _ = graded
    with Gradebook(f"sqlite:///{course.root / 'gradebook.db'}") as gb:
        for lab in EXPECTED:
            sub = gb.find_submission_notebook(lab, lab, "correct")
            manual = [g for g in sub.grades if g.auto_score is None]
            assert len(manual) == 1 and manual[0].needs_manual_grade, lab
            manual[0].manual_score = manual[0].max_score
            gb.db.commit()
            assert sub.score == 100 and sub.max_score == 100, lab


def test_nothing_was_dropped_and_the_kernel_recoveries_are_logged(graded):
    _course, results = graded
    for (lab, case), (_seconds, log) in results.items():
        assert "Removing failed" not in log, (lab, case)
        if case in ("kill", "swallow"):
            assert "restarting the kernel" in log, (lab, case)
