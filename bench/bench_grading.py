"""Autograding cost of the labs, beside nbgrader's own cost measured in the same run.

    python bench/bench_grading.py            every lab, then 30 submissions of smtp
    python bench/bench_grading.py --quick    one run each, 10 submissions

Prints, per lab, the seconds `nbgrader autograde --student X` takes for a correct submission
(median of a few runs), beside the same for a trivial one-cell notebook (the floor: nbgrader's
own start, sanitizing, kernel start, gradebook writes). The goal is a ratio under 2. Then the
wall-clock time to grade many submissions of one lab, two autogrades at a time (2 cores).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from labcourse import LABS, ROOT, Course  # noqa: E402

CORPUS = ROOT / "tests" / "lab_corpus"


def trivial_master(course: Course) -> None:
    """A lab with a single graded cell: what nbgrader costs with nothing to do."""
    cell = new_code_cell("assert 1 + 1 == 2", id="trivial-0")
    cell.metadata.nbgrader = {"grade": True, "grade_id": "trivial", "locked": True,
                              "points": 1, "schema_version": 3, "solution": False,
                              "task": False}
    nb = new_notebook(cells=[cell])
    nb.metadata.kernelspec = {"display_name": "Python 3 (ipykernel)", "language": "python",
                              "name": "python3"}
    path = course.root / "solutions" / "trivial" / "trivial.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def timed(course: Course, lab: str, student: str, notebook: Path) -> float:
    course.submit(lab, student, notebook)
    seconds, _log = course.autograde(lab, student)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--many", type=int, default=None, help="default 30 (10 with --quick)")
    parser.add_argument("--lab", default="smtp", help="the lab graded many times")
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs
    many = args.many if args.many is not None else (10 if args.quick else 30)
    root = Path(tempfile.mkdtemp(prefix="bench-grading-"))
    try:
        course = Course(root, LABS)
        trivial_master(course)
        for lab in LABS + ["trivial"]:
            course.generate(lab)
        trivial_nb = course.root / "labs" / "trivial" / "trivial.ipynb"
        print(f"{'lab':18} {'autograde s':>11} {'trivial s':>10} {'ratio':>6}")
        worst = 0.0
        for lab in LABS:
            lab_times, floor_times = [], []
            for i in range(runs):  # interleaved, so that both see the same machine load
                floor_times.append(timed(course, "trivial", f"t-{lab}-{i}", trivial_nb))
                lab_times.append(timed(course, lab, f"c-{lab}-{i}",
                                       CORPUS / lab / "correct.ipynb"))
            t, f = statistics.median(lab_times), statistics.median(floor_times)
            worst = max(worst, t / f)
            print(f"{lab:18} {t:11.2f} {f:10.2f} {t / f:6.2f}", flush=True)
        print(f"worst ratio {worst:.2f} (goal: under 2)")
        jobs = []
        for i in range(many):
            course.submit(args.lab, f"many-{i:02d}", CORPUS / args.lab / "correct.ipynb")
            jobs.append((args.lab, f"many-{i:02d}"))
        start = time.perf_counter()
        course.autograde_many(jobs, workers=2)
        total = time.perf_counter() - start
        print(f"{many} submissions of {args.lab}, 2 at a time: {total:.1f} s "
              f"({total / many:.2f} s each)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
