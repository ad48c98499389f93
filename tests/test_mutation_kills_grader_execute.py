"""The grader's notebook run (grader/execute.py) and its worker (grader/worker.py), in-process.

Before these tests only a whole `maillab grade` ran these modules (a minute a mutant, and
coverage cannot follow into the sandbox), so planted bugs survived (bench/mutation.py). Here
the two phases run in this process without a sandbox (``Unsandboxed``: a real kernel and a real
answer process as this user) against a small master that nbgrader itself turned into a
gradebook, and their parts are called one by one: the output limit, the phase-1 budget, the
cell windows, the hidden tests taken out and put back, the verdicts, the answer process made
ready meanwhile, the kernel's launch, and the worker's configuration, reports and program.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from labcourse import Course, nbgrader_env

from maillab import grading
from maillab.grader import execute, worker
from maillab.grader.checks import Verdict
from maillab.grader.sandbox import Sandbox, Unsandboxed, python_folders

LAB = "tiny"
SETUP = ('import socket\nimport maillab\nfrom maillab import grading\nSIZE = 2_000_000\n'
         'lab = maillab.start(ports="any", tls=False, size_limit=SIZE)\ngrading.prepare(lab)')
HELPER = "def double(x):\n    return 2 * x"
GREET = 'def greet(name):\n    ### BEGIN SOLUTION\n    return "hello " + name\n    ### END SOLUTION'
GREET_TEST = ('assert greet("ada") == "hello ada"\nprint("visible part ran")\n'
              '### BEGIN HIDDEN TESTS\nprint("hidden part ran")\n'
              'assert greet("bo") == "hello bo", "the hidden test"\n### END HIDDEN TESTS')
TYPED = '''### BEGIN SOLUTION
s = socket.create_connection((lab.host, lab.smtp_port))
f = s.makefile("rb")
f.readline()
s.sendall(b"EHLO typed.example.org\\r\\n")
while f.readline()[3:4] == b"-":
    pass
s.sendall(b"QUIT\\r\\n")
f.readline()
s.close()
### END SOLUTION'''
TYPED_TEST = ('ev = grading.during(lab)\ns = ev.session("smtp:example.com")\n'
              'assert s.commands() == ["EHLO", "QUIT"], s.commands()')
MANUAL = "### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION"
POINTS = {"greet_tests": 2.0, "ehlo_tests": 3.0}


def meta(grade_id: str, **kw) -> dict:
    return {"nbgrader": {"grade": False, "grade_id": grade_id, "locked": False,
                         "schema_version": 3, "solution": False, "task": False, **kw}}


def master_notebook():
    cells = [
        new_markdown_cell("# A tiny lab", metadata=meta("intro", locked=True)),
        new_code_cell(SETUP, id="cell-setup", metadata=meta("setup", locked=True)),
        new_code_cell(HELPER, id="cell-helper", metadata=meta("helper", locked=True)),
        new_code_cell(GREET, id="cell-greet", metadata=meta("greet", solution=True)),
        new_code_cell(GREET_TEST, id="cell-greet-test",
                      metadata=meta("greet_tests", grade=True, locked=True, points=2)),
        new_code_cell(TYPED, id="cell-ehlo", metadata=meta("ehlo", solution=True)),
        new_code_cell(TYPED_TEST, id="cell-ehlo-test",
                      metadata=meta("ehlo_tests", grade=True, locked=True, points=3)),
        # a manually graded answer: graded and a solution, neither a test nor given
        new_code_cell(MANUAL, id="cell-manual",
                      metadata=meta("manual", grade=True, solution=True, points=1)),
    ]
    nb = new_notebook(cells=cells)
    nb.metadata.kernelspec = {"display_name": "Python 3 (ipykernel)", "language": "python",
                              "name": "python3"}
    return nb


def solved(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if "SOLUTION" not in line)


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A course with the tiny master, its gradebook made by `nbgrader generate_assignment`."""
    made = Course(tmp_path_factory.mktemp("course") / "course", [])
    path = made.root / "solutions" / LAB / f"{LAB}.ipynb"
    path.parent.mkdir(parents=True)
    nbformat.write(master_notebook(), path)
    made.generate(LAB)
    return made


def released(course) -> NotebookNode:
    return nbformat.read(course.root / "labs" / LAB / f"{LAB}.ipynb", 4)


def answered(course, greet: str = solved(GREET), typed: str = solved(TYPED)) -> NotebookNode:
    """The released notebook with the learner's answers."""
    nb = released(course)
    nb.cells[3].source = greet
    nb.cells[5].source = typed
    nb.cells[7].source = solved(MANUAL)
    return nb


def submit(course, student: str, nb) -> None:
    folder = course.root / "submitted" / student / LAB
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / f"{LAB}.ipynb")


def resources(course) -> dict:
    return {"nbgrader": {"db_url": f"sqlite:///{course.root / 'gradebook.db'}",
                         "assignment": LAB, "notebook": LAB, "student": "ada"},
            "metadata": {"path": str(course.root)}}


def with_tests_put_back(course, nb) -> NotebookNode:
    """What nbgrader's sanitizing does before the preprocessors: the test cells' whole source
    (hidden tests included) from the gradebook."""
    master = execute.MasterCells.from_gradebook(resources(course))
    for cell in nb.cells:
        gid = execute.grade_id(cell)
        if gid in master.tests:
            cell.source = master.tests[gid][0]
    return nb


class Recorded(Unsandboxed):
    """Unsandboxed, recording what the grader asks of its sandboxes (``log``: shared list)."""

    strays: dict = {}  # user id -> what end_strays reports, call after call (then 0)

    def __init__(self, uid, control, readable, log=None):
        super().__init__(uid, control, readable)
        self.log = log if log is not None else []

    def command(self, argv, env=None, files=None):
        self.log.append(("command", self.uid, list(argv), dict(env or {})))
        return super().command(argv, env, files)

    def kill_all(self, wait=2.0, reaped=False):
        self.log.append(("kill_all", self.uid, wait, reaped))

    def end_strays(self, outer_pid):
        self.log.append(("end_strays", self.uid, outer_pid))
        counts = self.strays.get(self.uid)
        return counts.pop(0) if counts else 0


def submission(tmp_path, log=None, name="private") -> execute.Submission:
    private = tmp_path / name
    private.mkdir()
    uids = {"phase1": 61_000, "phase2": 61_001}
    return execute.Submission("ada", private, lambda control, phase="phase1": Recorded(
        uids[phase], control, python_folders(), log))


def close(sub) -> None:
    for part in (sub.checks, sub.phase1):
        if part is not None:
            part.close()


# ------------------------------------------------------------------ the submission's record
def test_notes_go_to_the_report_in_order_and_control_folders_are_passable(tmp_path):
    sub = execute.Submission("ada", tmp_path, None)
    sub.note("first")
    sub.note("second")
    assert sub.report["odd"] == ["first", "second"]
    old = os.umask(0o077)  # the grader's umask must not lock the sandbox's user out
    try:
        folder = sub.control("phase1")
        assert sub.control("phase1") == folder == tmp_path / "control-phase1"  # again: the same
    finally:
        os.umask(old)
    assert folder.is_dir() and folder.stat().st_mode & 0o777 == 0o755


# ------------------------------------------------------------------ the master's cells
def test_the_gradebook_gives_the_given_cells_and_the_tests_with_their_points(course):
    master = execute.MasterCells.from_gradebook(resources(course))
    # locked code cells that are not graded; not the locked markdown, not the answers
    assert master.given == {"setup": SETUP, "helper": HELPER}
    assert master.tests == {"greet_tests": (GREET_TEST, 2.0), "ehlo_tests": (TYPED_TEST, 3.0)}
    assert master.lab_options() == {"tls": False}  # ports: not a lab option; SIZE: not literal
    assert master.learner_language() == "en"


def test_the_start_arguments_come_from_the_first_given_cell_that_starts_a_lab():
    cells = execute.MasterCells({
        "magic": "%%smtp\nEHLO x",  # not Python: skipped
        "other": "print(start)",  # no call of start
        "setup": 'lab = maillab.start(ports="any", tls=True, strict=False, lang="el",\n'
                 '                    size_limit=LIMIT, **more)',
        "later": "start(tls=False)"}, {})
    assert cells._start_arguments() == {"ports": "any", "tls": True, "strict": False,
                                        "lang": "el"}
    assert cells.lab_options() == {"tls": True, "strict": False}
    assert cells.learner_language() == "el"
    bare = execute.MasterCells({"setup": "from maillab import start\nstart(size_limit=9)"}, {})
    assert bare.lab_options() == {"size_limit": 9} and bare.learner_language() == "en"


def test_without_a_lab_there_are_no_options_and_the_language_is_english(tmp_path):
    none = execute.MasterCells({"helper": HELPER, "broken": "def ("}, {})
    assert none._start_arguments() is None and none.lab_options() is None
    assert none.learner_language() == "en"
    assert execute.MasterCells({"s": "start(lang=None)"}, {}).learner_language() == "en"
    assert execute.sealed_lab(execute.Submission("ada", tmp_path, None), "phase1", none,
                              Unsandboxed(1, tmp_path, []), evidence=True) is None


def test_the_answer_process_loads_the_given_cells_as_the_master_has_them_and_the_learners():
    master = execute.MasterCells({"setup": "x = 1", "helper": HELPER},
                                 {"t": ("assert x == 1", 1.0)})
    nb = new_notebook(cells=[
        new_markdown_cell("prose", metadata=meta("intro", locked=True)),
        new_code_cell("x = 666  # the learner edited a locked cell", metadata=meta("setup")),
        new_code_cell("y = x + 1"),
        new_code_cell("  " + HELPER + "\n"),  # the helper retyped: it is loaded once
        new_code_cell("assert x == 1", metadata=meta("t", grade=True)),
        new_code_cell("z = 3", metadata=meta("mine", solution=True)),
        new_code_cell(HELPER, metadata=meta("helper")),
    ])
    assert master.answer_cells(nb) == ["x = 1", "y = x + 1", "z = 3", HELPER]
    assert execute.grade_id(nb.cells[5]) == "mine" and execute.grade_id(nb.cells[2]) is None


def test_a_lab_is_sealed_with_the_masters_options_for_the_sandboxs_user(tmp_path):
    sub = execute.Submission("ada", tmp_path, None)
    master = execute.MasterCells({"setup": 'maillab.start(tls=False, ports="any")'}, {})
    sealed = execute.sealed_lab(sub, "phase1", master, Unsandboxed(4242, tmp_path, []),
                                evidence=False)
    try:
        assert sealed.options == {"tls": False} and sealed.lab.ca is None
        assert 4242 in sealed.lab.privacy.allowed  # the sandbox's user may connect
        assert (tmp_path / "control-phase1" / "lab.sock").exists()
        with pytest.raises(PermissionError):  # evidence=False: ports and accounts only
            sealed.answer({"op": "lines"})
    finally:
        sealed.stop()


# ------------------------------------------------------------------ verdicts into outputs
def outputs():
    return [NotebookNode(output_type="stream", name="stdout", text="printed\n"),
            NotebookNode(output_type="stream", name="stderr", text="warned\n"),
            NotebookNode(output_type="display_data", data={"text/plain": "shown"}, metadata={}),
            NotebookNode(output_type="execute_result", data={"text/plain": "1"}, metadata={},
                         execution_count=1),
            NotebookNode(output_type="error", ename="AssertionError", evalue="kernel",
                         traceback=[])]


def test_a_passed_verdict_keeps_what_the_kernel_printed_but_no_error():
    cell = new_code_cell("assert True", outputs=outputs())
    part = execute.apply_verdict(cell, Verdict("t", True, seconds=1.23456, notes=["n"]), 2.0)
    assert [(o.output_type, o.get("name")) for o in cell.outputs] == [
        ("stream", "stdout"), ("display_data", None)]
    assert part == {"points": 2.0, "max": 2.0, "passed": True, "kernel_passed": False,
                    "message": "", "notes": ["n"], "seconds": 1.23}


def test_a_failed_verdict_keeps_the_kernels_error_and_adds_the_graders_reason_last():
    cell = new_code_cell("assert f()", outputs=outputs()[:3])
    part = execute.apply_verdict(cell, Verdict("t", False, "NameError", "f is not defined",
                                               seconds=0.004), 3.0)
    assert [(o.output_type, o.get("name"), o.get("ename")) for o in cell.outputs] == [
        ("stream", "stdout", None), ("display_data", None, None), ("error", None, "NameError")]
    assert cell.outputs[-1].evalue == "f is not defined"
    assert part == {"points": 0.0, "max": 3.0, "passed": False, "kernel_passed": True,
                    "message": "f is not defined", "notes": [], "seconds": 0.0}
    cell = new_code_cell("x", outputs=outputs())
    execute.apply_verdict(cell, Verdict("t", False, "AssertionError", "no"), 1.0)
    assert [o.get("ename") for o in cell.outputs if o.output_type == "error"] == [
        "AssertionError", "AssertionError"]  # the kernel's, then the grader's


# ------------------------------------------------------------------ phase 1's evidence
class FakeSealed:
    lab = "the phase-1 lab"


def notebook_of(*ids):
    return new_notebook(cells=[new_code_cell("", metadata=meta(i)) if i else new_code_cell("")
                               for i in ids])


def test_during_finds_the_window_of_the_code_cell_before_the_test_or_the_cell_named():
    nb = notebook_of("setup", None, "answer", "answer_tests", "last")
    windows = [(0, "setup", "id-0", 1.0, 2.0), (2, "answer", "id-2", 5.0, 6.0),
               (1, None, "id-1", 3.0, 4.0),  # recorded out of order (a replay)
               (3, "answer_tests", "id-3", 7.0, 8.0), (4, "last", "id-4", 9.0, 10.0),
               (2, "answer", "id-2", 11.0, 12.0)]  # the answer ran again: the last run counts
    run = execute.NotebookRun(FakeSealed(), windows, nb)
    ev = run.during(before="answer_tests")
    assert (ev.lab, ev.start, ev.end) == ("the phase-1 lab", 5.0, 6.0)
    assert run.during(before="nowhere").start == 9.0  # not a cell of this notebook: the last
    assert (run.during("answer", before="last").start,
            run.during("answer", before="last").end) == (11.0, 12.0)
    assert run.during("id-1", before="setup").start == 3.0  # named: wherever it is
    assert run.during("setup", before="last").end == 2.0
    with pytest.raises(AssertionError, match="that cell did not run"):
        run.during("missing", before="last")
    with pytest.raises(AssertionError, match="that cell did not run"):
        run.during(before="setup")  # nothing ran before the first cell
    with pytest.raises(RuntimeError, match="the notebook did not run"):
        execute.NotebookRun(None, windows, nb).during("answer", before="last")


# ------------------------------------------------------------------ phase 1's executor
def executor(sub, monkeypatch, budget_left=60.0) -> execute.SealedExecute:
    """A SealedExecute as preprocess() leaves it before the kernel starts."""
    monkeypatch.setattr(execute, "CURRENT", sub)
    ex = execute.SealedExecute()
    ex.reset_execution_trackers()
    ex.clear_before_next_output = False  # (nbclient sets both as it starts a notebook)
    ex.kc = object()  # a client: cells that run nothing (markdown) need one to be there
    ex._budget_end = time.monotonic() + budget_left
    ex._output_bytes, ex._strays_noted = {}, False
    ex._sandbox = sub.make_sandbox(sub.control("phase1"), "phase1")
    return ex


def stream(text: str, parent: str = "m1") -> dict:
    return {"msg_type": "stream", "header": {"msg_type": "stream", "msg_id": "x"},
            "parent_header": {"msg_id": parent}, "content": {"name": "stdout", "text": text}}


def test_a_cells_output_is_cut_once_past_the_limit_and_the_rest_dropped(tmp_path, monkeypatch):
    sub = submission(tmp_path)
    ex = executor(sub, monkeypatch)
    overhead = len(json.dumps({"name": "stdout", "text": ""}))
    exact = stream("x" * (execute.OUTPUT_LIMIT - overhead))  # exactly the limit: shown
    outs: list = []
    assert ex.output(outs, exact, None, 2) is outs[-1] and len(outs) == 1
    assert ex.output(outs, stream("#"), None, 2) is None  # one byte is too many
    assert ex.output(outs, stream("%"), None, 2) is None
    assert [o.text for o in outs[1:]] == ["\n[output cut: this cell printed more than 1 MB]\n"]
    assert sub.report["odd"] == ["cell 3 printed more than 1 MB"]  # once
    other: list = []  # every cell has its own allowance
    assert ex.output(other, stream("y" * 1000), None, 3) is other[0]
    half = stream("z" * (execute.OUTPUT_LIMIT // 2))
    assert ex.output(other, half, None, 3) is not None
    assert ex.output(other, half, None, 3) is None and len(other) == 3  # the sum counts


def test_a_cell_after_the_budget_gets_a_time_limit_error_and_does_not_run(tmp_path, monkeypatch):
    sub = submission(tmp_path)
    ex = executor(sub, monkeypatch, budget_left=-1.0)
    cell = new_code_cell("print(1)", metadata=meta("answer"))
    assert ex.preprocess_cell(cell, {}, 4) == (cell, {})
    assert [(o.output_type, o.ename) for o in cell.outputs] == [("error", "TimeLimit")]
    assert "used up its time" in cell.outputs[0].evalue
    resources = {"metadata": {"path": str(tmp_path)}}
    for nothing_to_run in (new_markdown_cell("text", metadata=meta("intro")),
                           new_code_cell("  \n", outputs=[])):
        assert ex.preprocess_cell(nothing_to_run, resources, 5) == (nothing_to_run, resources)
        assert not nothing_to_run.get("outputs")  # not run, budget or not: no error either
    assert sub.windows == []  # none of them ran


# ------------------------------------------------------------------ both phases, in-process
def two_decimals(value: float) -> bool:
    return value == round(value, 2)


def test_the_notebook_runs_without_its_hidden_tests_and_the_verdicts_grade_it(
        course, tmp_path, monkeypatch):
    log = []
    sub = submission(tmp_path, log)
    monkeypatch.setattr(execute, "CURRENT", sub)
    nb = with_tests_put_back(course, answered(course))
    # the learner's own prose between the typed session and its test: not a cell that ran
    nb.cells.insert(6, new_markdown_cell("My session, tested below:"))
    nb.cells.insert(6, new_code_cell("   "))  # nor is an empty code cell
    ex = execute.SealedExecute()
    try:
        assert ex.preprocess(nb, resources(course)) == (nb, resources(course))
        test = nb.cells[4]
        printed = "".join(o.get("text", "") for o in test.outputs)
        assert "visible part ran" in printed and "hidden part ran" not in printed
        assert test.source == GREET_TEST  # the hidden tests are back for phase 2
        assert [w[:3] for w in sub.windows] == [
            (1, "setup", "cell-setup"), (2, "helper", "cell-helper"), (3, "greet", "cell-greet"),
            (4, "greet_tests", "cell-greet-test"), (5, "ehlo", "cell-ehlo"),
            (8, "ehlo_tests", "cell-ehlo-test"), (9, "manual", "cell-manual")]
        times = [t for w in sub.windows for t in w[3:]]
        assert times == sorted(times)  # one after the other, each from its start to its end
        assert sub.report["kernel_restarts"] == 0
        assert 0 < sub.report["notebook_seconds"] < 600 and two_decimals(
            sub.report["notebook_seconds"])
        # the kernel is ended, not asked; a cell that defeats the notebook's own limits is
        # stopped soon after them whatever the course's configuration says
        assert ex.shutdown_kernel == "immediate" and ex.interrupt_on_timeout is False
        assert ex.timeout == int(grading.CELL_LIMIT + grading.GRACE + execute.KILL_MARGIN)
        # phase 1's lab saw the typed session and gives its evidence to the kernel
        said = [base64.b64decode(line[4]) for line in sub.phase1.answer({"op": "lines"})]
        assert b"EHLO typed.example.org\r\n" in said
        kernel = [e for e in log if e[1] == 61_000]
        assert kernel[0][0] == "kill_all" and kernel[1][0] == "command"  # a clean start
        assert kernel[1][3] == {"NBGRADER_EXECUTION": "autograde"}
        assert kernel[-1][0] == "kill_all"  # nothing of the notebook outlives its run
        strays = [e for e in kernel if e[0] == "end_strays"]  # after each cell that ran
        assert len(strays) == 7 and len(set(strays)) == 1 and strays[0][2] > 0
        # meanwhile the answer process was made ready, as the other user
        assert sub.checks.prepared.wait(30) and sub.checks.answers.alive
        assert sub.checks.sandbox.uid == 61_001
        parts_before = dict(sub.report)
        assert "parts" not in parts_before

        assert execute.SealedVerdicts().preprocess(nb, resources(course)) == (
            nb, resources(course))
        parts = sub.report["parts"]
        assert {g: (p["points"], p["max"], p["passed"]) for g, p in parts.items()} == {
            "greet_tests": (2.0, 2.0, True), "ehlo_tests": (3.0, 3.0, True)}
        assert not sub.checks.answers.alive  # ended as soon as the tests are done
        assert sub.report["loading"] == [] and two_decimals(sub.report["checks_seconds"])
        assert sub.report["checks_seconds"] >= 0
    finally:
        close(sub)


def run_phase1(course, sub, monkeypatch, nb=None) -> NotebookNode:
    monkeypatch.setattr(execute, "CURRENT", sub)
    nb = nb or with_tests_put_back(course, answered(course))
    assert execute.SealedExecute().preprocess(nb, resources(course)) == (nb, resources(course))
    return nb


def test_processes_cells_leave_running_are_ended_and_noted_once(course, tmp_path, monkeypatch):
    log = []
    sub = submission(tmp_path, log)
    monkeypatch.setattr(Recorded, "strays", {61_000: [0, 2, 5]})  # 2nd and 3rd code cells
    try:
        run_phase1(course, sub, monkeypatch)
    finally:
        close(sub)
    assert sub.report["odd"] == ["cell 3 (and maybe later ones) left processes running; "
                                 "they were ended"]


def test_cells_after_the_notebooks_time_are_not_run_and_the_grade_still_comes(
        course, tmp_path, monkeypatch):
    sub = submission(tmp_path)
    monkeypatch.setattr(execute, "PHASE1_BUDGET", 0.0)
    try:
        nb = run_phase1(course, sub, monkeypatch)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert [o.ename for o in cell.outputs] == ["TimeLimit"], cell.source
        assert sub.windows == []
        execute.SealedVerdicts().preprocess(nb, resources(course))
    finally:
        close(sub)
    parts = sub.report["parts"]
    assert parts["greet_tests"]["passed"] and not parts["ehlo_tests"]["passed"]
    assert parts["ehlo_tests"]["message"] == "that cell did not run"


class NoKernel(Recorded):
    """A sandbox whose commands cannot start (a kernel that never comes)."""

    def command(self, argv, env=None, files=None):
        super().command(argv, env, files)
        return [str(self.control_dir / ("no-such-program-" + "x" * 200))]


def test_a_notebook_run_that_stops_early_is_a_note_and_the_verdicts_still_come(
        course, tmp_path, monkeypatch):
    log = []
    sub = submission(tmp_path, log)
    working = sub.make_sandbox
    sub.make_sandbox = lambda control, phase="phase1": NoKernel(
        61_000, control, [], log) if phase == "phase1" else working(control, phase)
    try:
        nb = run_phase1(course, sub, monkeypatch)
        assert nb.cells[4].source == GREET_TEST  # put back all the same
        note, = sub.report["odd"]
        assert note.startswith("the notebook's run stopped early: FileNotFoundError")
        assert len(note) == 300  # cut: the program's name is long
        assert sub.report["kernel_restarts"] == 0 and "notebook_seconds" in sub.report
        assert log[-1] == ("kill_all", 61_000, 2.0, False)
        execute.SealedVerdicts().preprocess(nb, resources(course))
    finally:
        close(sub)
    assert sub.report["parts"]["greet_tests"]["passed"]
