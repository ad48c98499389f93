"""Grading a class: `python -m maillab grade` beside plain sequential `nbgrader autograde`.

    sudo python bench/bench_grading.py              100 correct submissions of smtp
    sudo python bench/bench_grading.py --quick      10 submissions, 4 trivial
    sudo python bench/bench_grading.py --many 30 --lab pop3

Both graders get the same submissions of one lab in the same run, one after the other, and
each is timed with the machine's load average before and after:

* ``maillab grade LAB`` (its default workers: the CPUs + 1): every submission in its
  own sandboxes, checked outside the notebook (the grade this course trusts);
* ``nbgrader autograde LAB``: nbgrader's own batch, one submission after the other, kernels
  unsandboxed (what a teacher would otherwise run).

Floors (FAIL is printed beside a figure below its floor): the command at least 1.6 times faster
than sequential nbgrader, and under 300 s for 100 submissions (goal: under 180 s). The shares
of the machine other programs take change both figures: the load averages say how busy it was.

Then the cost of one submission against a trivial one-cell assignment graded the same two
ways: what the lab itself costs above the graders' own floor.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from labcourse import ROOT, Course, nbgrader_env  # noqa: E402

CORPUS = ROOT / "tests" / "lab_corpus"
SPEED_UP_FLOOR = 1.6
SECONDS_FLOOR, SECONDS_GOAL = 300.0, 180.0  # for 100 submissions, scaled for other counts


def trivial_master(course: Course) -> None:
    """A lab with a single graded cell: what grading costs with nothing to do."""
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


def timed(cmd: list[str], cwd: Path) -> tuple[float, tuple, tuple]:
    """(seconds, load average before, load average after) of one command; it must succeed."""
    before = os.getloadavg()
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=nbgrader_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return seconds, before, os.getloadavg()


def worker_seconds(course: Course, lab: str) -> tuple[float, float, float]:
    """Median, lowest and highest seconds one submission took in a worker (the report's)."""
    import json
    report = json.loads((course.root / "grade-reports" / f"{lab}.json").read_text())
    seconds = sorted(r["seconds"] for r in report["submissions"])
    return statistics.median(seconds), seconds[0], seconds[-1]


def grade(lab: str, workers: int) -> list[str]:
    return [sys.executable, "-m", "maillab", "grade", lab, "--workers", str(workers), "--quiet"]


def autograde(lab: str) -> list[str]:
    return [sys.executable, "-m", "nbgrader", "autograde", lab, "--force"]


def load(pair: tuple) -> str:
    return f"load {pair[0][0]:.1f} -> {pair[1][0]:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--many", type=int, default=None, help="submissions (default 100)")
    parser.add_argument("--trivial", type=int, default=None, help="trivial ones (default 20)")
    parser.add_argument("--lab", default="smtp")
    parser.add_argument("--workers", type=int, default=(os.cpu_count() or 1) + 1,
                        help="default: CPUs + 1, as the command")
    args = parser.parse_args()
    many = args.many or (10 if args.quick else 100)
    trivial = args.trivial or (4 if args.quick else 20)
    if os.geteuid() != 0 or shutil.which("bwrap") is None:
        print("needs root and bubblewrap (the grader's sandboxes)")
        return 2
    root = Path(tempfile.mkdtemp(prefix="bench-grading-"))
    try:
        course = Course(root, [args.lab])
        trivial_master(course)
        course.generate(args.lab)
        course.generate("trivial")
        for i in range(many):
            course.submit(args.lab, f"s{i:03d}", CORPUS / args.lab / "correct.ipynb")
        for i in range(trivial):
            course.submit("trivial", f"s{i:03d}", course.root / "labs" / "trivial" /
                          "trivial.ipynb")
        print(f"{many} correct submissions of {args.lab}, {os.cpu_count()} CPUs, "
              f"{args.workers} workers")

        ours = timed(grade(args.lab, args.workers), course.root)
        plain = timed(autograde(args.lab), course.root)
        ratio = plain[0] / ours[0]
        floor = SECONDS_FLOOR * many / 100
        goal = SECONDS_GOAL * many / 100
        print(f"  maillab grade:               {ours[0]:7.1f} s  "
              f"({ours[0] / many:5.2f} s a submission; {load(ours[1:])})"
              f"{'' if ours[0] < floor else '  FAIL (floor ' + format(floor, '.0f') + ' s)'}"
              f"{'' if ours[0] < goal else '  (goal ' + format(goal, '.0f') + ' s not met)'}")
        print(f"  nbgrader autograde (1 by 1): {plain[0]:7.1f} s  "
              f"({plain[0] / many:5.2f} s a submission; {load(plain[1:])})")
        print(f"  speed-up {ratio:.2f}x{'' if ratio >= SPEED_UP_FLOOR else '  FAIL'} "
              f"(floor {SPEED_UP_FLOOR}x)")

        ours_lab = worker_seconds(course, args.lab)
        ours_t = timed(grade("trivial", args.workers), course.root)
        ours_triv = worker_seconds(course, "trivial")
        plain_t = timed(autograde("trivial"), course.root)
        print(f"a trivial one-cell assignment, {trivial} submissions, beside {args.lab}:")
        print(f"  maillab grade, one submission in a worker (median, spread): "
              f"{args.lab} {ours_lab[0]:.2f} s ({ours_lab[1]:.2f}-{ours_lab[2]:.2f}), "
              f"trivial {ours_triv[0]:.2f} s ({ours_triv[1]:.2f}-{ours_triv[2]:.2f}): "
              f"x{ours_lab[0] / ours_triv[0]:.2f}")
        per_lab, per_triv = plain[0] / many, plain_t[0] / trivial
        print(f"  nbgrader autograde, total / submissions: {args.lab} {per_lab:.2f} s, trivial "
              f"{per_triv:.2f} s: x{per_lab / per_triv:.2f} ({load(plain_t[1:])})")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
