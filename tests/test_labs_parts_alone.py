"""Each code part of a lab earns its points on its own.

A pupil who wrote one part correctly and left the others as the student version has them
(`raise NotImplementedError()`) must pass that part's tests, visible and hidden: a test may
call only its own part's functions. Before, the POP3 lab's hidden test of read_multiline
logged in with the pupil's pop3_login, and a correct read_multiline scored 0/6 with nothing
but "NotImplementedError:" as the reason.

Here every test cell of a code part runs in this process, against one real lab per lab
notebook. The pupil's functions are the master's solution of the tested part and of the
parts that solution uses itself (Part 5 of the POP3 lab asks to use read_multiline; a pupil
may also log in with their own pop3_login), every other part as the student version has it;
the test cell itself sees the student version of every part but its own.
"""

from __future__ import annotations

import ast

import nbformat
import pytest

from labcourse import LABS, ROOT


def meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def is_session(source: str) -> bool:
    return source.lstrip().startswith("%%")


def defined_names(source: str) -> set[str]:
    tree = ast.parse(source)
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


def used_names(source: str) -> set[str]:
    return {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}


def solutions_needed(part: str, solutions: dict[str, str]) -> set[str]:
    """The solution cells (grade ids) the part's own solution uses, itself included."""
    owner = {name: gid for gid, source in solutions.items() for name in defined_names(source)}
    needed, todo = set(), [part]
    while todo:
        gid = todo.pop()
        if gid not in needed:
            needed.add(gid)
            todo += [owner[n] for n in used_names(solutions[gid]) if n in owner]
    return needed


def run(source: str, ns: dict) -> None:
    try:
        exec(source, ns)
    except NotImplementedError:  # an unanswered part that is not a function
        pass


def parts_alone(master, student) -> tuple[list[str], dict[str, str]]:
    """Run every test cell of a code part with only that part solved: (the tests run,
    {test: what failed})."""
    answers = {meta(c)["grade_id"]: c.source for c in student.cells
               if meta(c).get("solution") and c.cell_type == "code"}
    code = [c for c in master.cells if c.cell_type == "code" and not is_session(c.source)]
    solutions = {meta(c)["grade_id"]: c.source for c in code if meta(c).get("solution")}
    base: dict = {"__name__": "__main__"}
    setup = next(c for c in code if meta(c).get("grade_id") == "setup")
    exec(setup.source, base)
    ran, failed, part = [], {}, None
    try:
        for cell in master.cells:
            nbg = meta(cell)
            if nbg.get("solution") and cell.cell_type == "code":
                part = nbg["grade_id"]
            if not (nbg.get("grade") and cell.cell_type == "code") or part not in solutions \
                    or not defined_names(solutions[part]):
                continue  # not a test of a part whose answer is functions
            needed = solutions_needed(part, solutions)
            learner = dict(base)  # the globals of the pupil's functions
            for c in code:
                gid = meta(c).get("grade_id")
                if c is cell:
                    break
                if gid not in ("setup", "stop") and not meta(c).get("grade"):
                    run(c.source if gid in needed or gid not in answers else answers[gid],
                        learner)
            test = dict(learner)  # what the test cell sees: other parts unwritten
            for gid in needed - {part}:
                run(answers[gid], test)
            ran.append(nbg["grade_id"])
            try:
                exec(cell.source, test)
            except Exception as e:
                failed[nbg["grade_id"]] = f"{type(e).__name__}: {e}"[:300]
    finally:
        base["lab"].stop()
    return ran, failed


@pytest.mark.parametrize("lab", LABS)
def test_each_code_part_passes_with_only_its_own_solution(lab):
    master = nbformat.read(ROOT / "solutions" / lab / f"{lab}.ipynb", 4)
    student = nbformat.read(ROOT / "labs" / lab / f"{lab}.ipynb", 4)
    ran, failed = parts_alone(master, student)
    assert len(ran) >= 6, ran  # every lab has at least six code parts
    assert failed == {}
