"""Seconds each lecture notebook takes from top to bottom in a fresh kernel (goal: under 10 s).

Run: python bench/bench_course.py [--rounds 3] [NOTEBOOK ...]   (names: 01-smtp, el/01-smtp)

Issue 11 asks that every notebook of course/ (and of the Greek edition, course/el/) still run
top to bottom in under 10 s, as a class would run it. Each round runs every notebook in a
fresh kernel (start-up included, as Run All after opening it), beside a peer measured in the
same rounds: a notebook whose only cells start and stop the lab, so that the kernel's and the
lab's own start-up show apart from the lessons.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nbformat  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

from common import ROOT, at_most, header, interleaved, med, python_env, spread  # noqa: E402

GOAL = 10.0  # seconds, top to bottom
PEER = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
    "import maillab\nlab = maillab.start()\nlab"), nbformat.v4.new_code_cell("lab.stop()")])


def run(notebook, folder: Path = ROOT / "course") -> float:
    client = NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}})
    started = time.perf_counter()
    client.execute()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("notebooks", nargs="*", help="names such as 01-smtp (default: all)")
    args = parser.parse_args()
    import os
    os.environ.update(python_env())  # the kernels import this checkout's maillab
    course = ROOT / "course"
    paths = sorted(course.glob("*.ipynb")) + sorted((course / "el").glob("*.ipynb"))
    names = {p: p.relative_to(course).with_suffix("").as_posix() for p in paths}
    if args.notebooks:
        paths = [p for p in paths if names[p] in args.notebooks]
    header(f"lecture notebooks top to bottom, {args.rounds} rounds, fresh kernel each run")
    contenders = {"(peer: start and stop the lab)": lambda: run(nbformat.from_dict(PEER))}
    for path in paths:
        contenders[names[path]] = lambda path=path: run(nbformat.read(path, as_version=4),
                                                        path.parent)
    samples = interleaved(contenders, args.rounds)
    peer = med(samples["(peer: start and stop the lab)"])
    for name, seconds in samples.items():
        verdict = "" if name.startswith("(") else at_most(med(seconds), GOAL)
        print(f"{name:32} {spread(seconds)} s   {med(seconds) / peer:4.1f} x peer   {verdict}")


if __name__ == "__main__":
    main()
