#!/usr/bin/env python3
"""Make the submissions corpus: tests/lab_corpus/<lab>/<case>.ipynb and expected.json.

    python3 tests/lab_corpus/make_corpus.py

Every submission starts from the student version in labs/ (what a learner downloads) and is
changed the way a learner might change it. Cases, for every lab:

  correct      every part solved (all autograded points; 100 once the written answer is graded)
  unchanged    the student version as released (0)
  partial      some parts solved (their points exactly)
  hang         one function waits forever on a socket, another loops forever
  swallow      a function loops forever and swallows every interrupt (KeyboardInterrupt and the
               cell time limit alike), so the kernel has to be ended
  kill         a function ends the kernel with os._exit
  cells        graded cells deleted, edited and retyped, a solution cell retyped
  tamper       code that patches maillab.grading and the lab's classes before a test
  fake         code that fakes server state: writes into a Maildir, delivers through the store
               and appends invented lines to the transcript

and the attacks of attacks.py (transformer, importlib, modules, eq, killcell, escape,
resources): each expected to score exactly what its honest work earns. A lab's Level-1 slips
(corpus_spec.py, ``SPEC[lab]["slips"]``) add cases of their own: everything solved, but a
session typed by hand with one slip in it (no blank line, no QUIT, ...), and only the steps
that slip breaks lost.

expected.json holds, per lab and case, the tests that must fail and the autograded score.
tests/test_labs_corpus.py grades every submission with `python -m maillab grade` and compares.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from attacks import attack_cases  # noqa: E402
from corpus_spec import SPEC  # noqa: E402


def nbg(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def gid(cell) -> str | None:
    return nbg(cell).get("grade_id")


def solved_source(master_cell) -> str:
    """A master's solution cell as a learner who solved it would leave it."""
    lines = [l for l in master_cell.source.split("\n")
             if l.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION")]
    return "\n".join(lines)


def load(lab: str):
    master = nbformat.read(ROOT / "solutions" / lab / f"{lab}.ipynb", as_version=4)
    student = nbformat.read(ROOT / "labs" / lab / f"{lab}.ipynb", as_version=4)
    return master, student


def tests_and_points(master) -> dict[str, int]:
    return {gid(c): nbg(c)["points"] for c in master.cells
            if nbg(c).get("grade") and c.cell_type == "code"}


def fill(student, master, solve: set[str] | None, inject: dict[str, str] | None = None):
    """The student version with the solution cells in ``solve`` solved (None: all), plus
    extra source appended to some solution cells (``inject``: solution id -> code)."""
    nb = nbformat.from_dict(json.loads(json.dumps(student)))
    sources = {gid(c): c for c in master.cells if nbg(c).get("solution")}
    for cell in nb.cells:
        g = gid(cell)
        if not nbg(cell).get("solution"):
            continue
        if solve is None or g in solve:
            if cell.cell_type == "markdown":
                cell.source = solved_source(sources[g])
            else:
                cell.source = solved_source(sources[g])
        if inject and g in inject:
            cell.source += "\n\n" + inject[g].strip("\n")
    return nb


def index_of(nb, grade_id: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if gid(c) == grade_id)


def insert_before(nb, grade_id: str, source: str) -> None:
    nb.cells.insert(index_of(nb, grade_id),
                    new_code_cell(source.strip("\n"), id=f"inserted-before-{grade_id}"))


def solution_ids(master) -> set[str]:
    return {gid(x) for x in master.cells if nbg(x).get("solution")}


def make_attack(attack: dict, master, student):
    unsolved = attack.get("unsolved", [])
    solve = set() if unsolved == "all" else solution_ids(master) - set(unsolved)
    nb = fill(student, master, solve, attack.get("append"))
    if "insert_after_setup" in attack:
        nb.cells.insert(index_of(nb, "setup") + 1, new_code_cell(
            attack["insert_after_setup"].strip("\n"), id="inserted-after-setup"))
    if "extra" in attack:
        nb.cells.insert(index_of(nb, "stop"), new_code_cell(attack["extra"].strip("\n"),
                                                            id="inserted-before-stop"))
    return nb


def make_case(lab: str, case: str, spec: dict, master, student):
    every = None
    if case == "correct":
        return fill(student, master, every)
    if case == "unchanged":
        return fill(student, master, set())
    if case == "partial":
        return fill(student, master, set(spec["partial"]))
    if case in ("hang", "swallow", "kill"):
        return fill(student, master, every, spec[case])
    if case == "cells":
        c = spec["cells"]
        nb = fill(student, master, every - set(c["unsolved"]) if every else
                  {gid(x) for x in master.cells if nbg(x).get("solution")} - set(c["unsolved"]))
        for g in c["edit_tests"]:
            nb.cells[index_of(nb, g)].source = "# the tests were in my way\npass"
        for g in c["delete"]:
            del nb.cells[index_of(nb, g)]
        for g in c["retype"]:  # the cell copied into a new plain cell, the original deleted
            i = index_of(nb, g)
            nb.cells[i] = new_code_cell(nb.cells[i].source, id=f"retyped-{g}")
        return nb
    if case in ATTACKS:
        return make_attack(attack_cases(lab)[case], master, student)
    if case in spec.get("slips", {}):
        nb = fill(student, master, every)
        for g, (typed, slipped) in spec["slips"][case]["typed"].items():
            cell = nb.cells[index_of(nb, g)]
            assert typed in cell.source, (case, g, typed)
            cell.source = cell.source.replace(typed, slipped)
        return nb
    if case in ("tamper", "fake"):
        t = spec[case]
        solve = solution_ids(master) - set(t["unsolved"])
        nb = fill(student, master, solve)
        for before, source in t["insert"]:
            insert_before(nb, before, source)
        return nb
    raise ValueError(case)


ATTACKS = ["transformer", "importlib", "modules", "eq", "killcell", "escape", "resources"]
CASES = ["correct", "unchanged", "partial", "hang", "swallow", "kill", "cells", "tamper",
         "fake"] + ATTACKS


def expected_for(lab: str, master, spec: dict, case: str) -> dict:
    points = tests_and_points(master)
    if case in ATTACKS:
        fail = attack_cases(lab)[case]["fail"]
        failing = set(points) if fail == "all" else set(fail)
    elif case in spec.get("slips", {}):
        failing = set(spec["slips"][case]["fail"])
    else:
        failing = set(points) if case == "unchanged" else set(spec.get("fail", {}).get(case, []))
    if case == "correct":
        failing = set()
    unknown = failing - set(points)
    assert not unknown, unknown
    return {"failing": sorted(failing),
            "score": sum(p for g, p in points.items() if g not in failing),
            "max_auto": sum(points.values())}


def main(labs: list[str]) -> None:
    expected_path = HERE / "expected.json"
    expected = json.loads(expected_path.read_text()) if expected_path.exists() else {}
    for lab in labs:
        master, student = load(lab)
        spec = SPEC[lab]
        out = HERE / lab
        out.mkdir(exist_ok=True)
        expected[lab] = {}
        for case in CASES + list(spec.get("slips", {})):
            nb = make_case(lab, case, spec, master, student)
            ids = [c.get("id") for c in nb.cells]
            assert len(set(ids)) == len(ids), ids
            (out / f"{case}.ipynb").write_text(nbformat.writes(nb) + "\n")
            expected[lab][case] = expected_for(lab, master, spec, case)
        print(lab, {k: v["score"] for k, v in expected[lab].items()})
    expected_path.write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:] or list(SPEC))
