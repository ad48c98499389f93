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
import tempfile
import threading
import time
from pathlib import Path

import nbformat
import pytest
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from conftest import require_root
from labcourse import Course, nbgrader_env
from test_grader_typed import TYPED as typed_session

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
TYPED = typed_session.strip()  # test_grader_typed's session typed by hand
TYPED_TEST = ('ev = grading.during(lab)\ns = ev.session("smtp:example.com")\n'
              'assert s.commands() == ["EHLO", "QUIT"], s.commands()')
MANUAL = "### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION"
PORT_TEST = "assert lab.smtp_port > 0  # the grader's lab, in phase 2 too"


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
        new_code_cell(PORT_TEST, id="cell-port-test",
                      metadata=meta("port_tests", grade=True, locked=True, points=1)),
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


@pytest.fixture
def short():
    """A folder of its own with a short path: the sealed lab's control socket goes in it, and
    a Unix socket's path has 107 bytes at most (pytest's tmp_path can be longer than that)."""
    folder = Path(tempfile.mkdtemp(prefix="mk-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


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
    assert master.tests == {"greet_tests": (GREET_TEST, 2.0), "ehlo_tests": (TYPED_TEST, 3.0),
                            "port_tests": (PORT_TEST, 1.0)}
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


def test_a_lab_is_sealed_with_the_masters_options_for_the_sandboxs_user(short):
    sub = execute.Submission("ada", short, None)
    master = execute.MasterCells({"setup": 'maillab.start(tls=False, ports="any")'}, {})
    sealed = execute.sealed_lab(sub, "phase1", master, Unsandboxed(4242, short, []),
                                evidence=False)
    try:
        assert sealed.options == {"tls": False} and sealed.lab.ca is None
        assert 4242 in sealed.lab.privacy.allowed  # the sandbox's user may connect
        assert (short / "control-phase1" / "lab.sock").exists()
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


def current_submission(course, tmp_path, monkeypatch):
    """A submission made the one being graded, the log of its sandboxes' steps, and the answered
    notebook with its hidden tests put back (as autograde hands it over)."""
    log = []
    sub = submission(tmp_path, log)
    monkeypatch.setattr(execute, "CURRENT", sub)
    return sub, log, with_tests_put_back(course, answered(course))


def test_the_notebook_runs_without_its_hidden_tests_and_the_verdicts_grade_it(
        course, short, monkeypatch):
    sub, log, nb = current_submission(course, short, monkeypatch)
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
            (8, "ehlo_tests", "cell-ehlo-test"), (9, "manual", "cell-manual"),
            (10, "port_tests", "cell-port-test")]
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
        assert len(strays) == 8 and len(set(strays)) == 1 and strays[0][2] > 0
        # meanwhile the answer process was made ready, as the other user
        assert sub.checks.prepared.wait(30) and sub.checks.answers.alive
        assert sub.checks.sandbox.uid == 61_001
        parts_before = dict(sub.report)
        assert "parts" not in parts_before

        assert execute.SealedVerdicts().preprocess(nb, resources(course)) == (
            nb, resources(course))
        parts = sub.report["parts"]
        assert {g: (p["points"], p["max"], p["passed"]) for g, p in parts.items()} == {
            "greet_tests": (2.0, 2.0, True), "ehlo_tests": (3.0, 3.0, True),
            "port_tests": (1.0, 1.0, True)}
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


def test_processes_cells_leave_running_are_ended_and_noted_once(course, short, monkeypatch):
    log = []
    sub = submission(short, log)
    monkeypatch.setattr(Recorded, "strays", {61_000: [0, 2, 5]})  # 2nd and 3rd code cells
    try:
        run_phase1(course, sub, monkeypatch)
    finally:
        close(sub)
    assert sub.report["odd"] == ["cell 3 (and maybe later ones) left processes running; "
                                 "they were ended"]


def test_cells_after_the_notebooks_time_are_not_run_and_the_grade_still_comes(
        course, short, monkeypatch):
    sub = submission(short)
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
    assert parts["greet_tests"]["passed"] and parts["port_tests"]["passed"]
    assert not parts["ehlo_tests"]["passed"]
    assert parts["ehlo_tests"]["message"] == "that cell did not run"


class NoKernel(Recorded):
    """A sandbox whose commands cannot start (a kernel that never comes)."""

    def command(self, argv, env=None, files=None):
        super().command(argv, env, files)
        return [str(self.control_dir / ("no-such-program-" + "x" * 200))]


def test_a_notebook_run_that_stops_early_is_a_note_and_the_verdicts_still_come(
        course, short, monkeypatch):
    log = []
    sub = submission(short, log)
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
        assert [e for e in log if e[1] == 61_000][-1] == ("kill_all", 61_000, 2.0, False)
        execute.SealedVerdicts().preprocess(nb, resources(course))
    finally:
        close(sub)
    assert sub.report["parts"]["greet_tests"]["passed"]


# ------------------------------------------------------------------ phase 2 without phase 1
def test_the_verdicts_prepare_the_answers_themselves_and_report_what_did_not_load(
        course, short, monkeypatch):
    sub, log, nb = current_submission(course, short, monkeypatch)
    # the learner's cells that fail while loading: the report lists 20 at most, each cut
    for n in range(22):
        nb.cells.insert(3 + n, new_code_cell(f"raise ValueError({n} * 1000 * 'v')"))
    try:
        execute.SealedVerdicts().preprocess(nb, resources(course))
        assert sub.checks is not None  # it made its own, kept for the worker's clean-up
    finally:
        close(sub)
    parts = sub.report["parts"]
    # the lab of phase 2 was ready before the first test; phase 1 did not run
    assert parts["greet_tests"]["passed"] and parts["port_tests"]["passed"]
    assert parts["ehlo_tests"]["message"] == "the notebook did not run"
    loading = sub.report["loading"]
    assert len(loading) == 20 and loading[0] == "cell 3: ValueError: " and all(
        len(line) == 200 for line in loading[1:])
    assert ("kill_all", 61_001, 10, True) in log  # the answer process started clean


# ------------------------------------------------------------------ phase 2's preparation
class ChecksMaster(execute.MasterCells):
    def __init__(self, lab: bool):
        super().__init__({"setup": 'maillab.start(tls=False)'} if lab else {}, {})


def checks_of(tmp_path, cells, lab=False, log=None, broken=False):
    sub = submission(tmp_path, log)
    if broken:
        sub.make_sandbox = lambda control, phase="phase1": NoKernel(61_001, control, [], log)
    checks = execute.Checks(sub, ChecksMaster(lab), cells)
    assert checks.prepared.wait(60), "the preparation never ended"  # (not a hang)
    return checks


def close_checks(checks) -> None:
    closing = threading.Thread(target=checks.close)
    closing.start()
    closing.join(30)
    assert not closing.is_alive(), "close() hangs"


def test_the_answers_are_loaded_meanwhile_and_the_thread_lives_until_closed(short):
    checks = checks_of(short, ["import time\ntime.sleep(0.5)\nx = 1"])
    try:
        checks.ready()
        assert checks.answers.alive and checks.answers.names.get("x") is not None
        assert checks.sealed is None and checks.error is None
        assert checks.thread.is_alive() and checks.thread.daemon  # bwrap's --die-with-parent
        proc = checks.answers.proc
    finally:
        close_checks(checks)
    assert not checks.thread.is_alive()
    assert proc.poll() is not None  # the answer process is gone


def test_ready_waits_for_the_answers_to_load(short):
    sub = submission(short)
    checks = execute.Checks(sub, ChecksMaster(False), ["import time\ntime.sleep(0.5)\nx = 1"])
    try:
        checks.ready()  # at once: it must wait
        assert checks.answers.names.get("x") is not None
    finally:
        close_checks(checks)


def test_a_preparation_that_fails_is_raised_when_nothing_else_is_there(short):
    checks = checks_of(short, ["x = 1"], broken=True)
    try:
        with pytest.raises(FileNotFoundError):
            checks.ready()
        assert isinstance(checks.error, FileNotFoundError)
    finally:
        close_checks(checks)


def test_with_a_lab_a_failed_preparation_is_left_to_the_tests(short):
    checks = checks_of(short, ["x = 1"], lab=True, broken=True)
    try:
        checks.ready()  # the tests meet the error again, and say so
        assert isinstance(checks.error, FileNotFoundError)
        assert not checks.sealed.evidence  # phase 2: ports and accounts only
        with pytest.raises(PermissionError):
            checks.sealed.answer({"op": "lines"})
        port = checks.sealed.lab.smtp_port
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        close_checks(checks)
    assert checks.sealed.stopped
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_the_answer_process_starts_clean_with_only_a_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/opt/marked/bin:" + os.environ["PATH"])
    monkeypatch.setenv("MAILLAB_OUTSIDE_SECRET", "the grader's")
    log = []

    class Reporting(Recorded):
        def command(self, argv, env=None, files=None):
            super().command(argv, env, files)
            return [sys.executable, "-c", "import json, os\n"  # the environment it was given
                    "env = dict(v.split('=', 1) for v in open('/proc/self/environ').read()"
                    ".split('\\0') if v)\n"
                    "json.dump({'env': env, 'cwd': os.getcwd()}, open('seen.json', 'w'))"]

    box = Reporting(61_001, tmp_path, [], log)
    execute.spawn_answers(box, 0).wait(30)
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["env"] == {"PATH": os.environ["PATH"]} and seen["cwd"] == str(tmp_path)
    assert log[0] == ("kill_all", 61_001, 10, True)  # a fork bomb's children reaped first
    assert log[1][:3] == ("command", 61_001, [sys.executable, "-m", "maillab.grader.answers"])
    assert log[1][3] == {"MAILLAB_ANSWERS_FD": "0"}


# ------------------------------------------------------------------ the kernel's launch
def test_the_kernel_is_launched_in_the_sandbox_with_its_own_connection_file(
        tmp_path, monkeypatch):
    real = tmp_path / "control-real"
    real.mkdir()
    control = tmp_path / "control"
    control.symlink_to(real)  # the file's path, as given and as resolved, is mapped
    log = []

    class Box(Sandbox):
        def command(self, argv, env=None, files=None):
            log.append(("command", list(argv), dict(env or {})))
            return ["sandboxed", *argv]

        def kill_all(self, wait=2.0, reaped=False):
            log.append(("kill_all", (control / "kernel.json").stat().st_mode & 0o777))

    launched = []

    async def launch(self, cmd, **kw):
        launched.append((cmd, kw))
        return "the provisioner's answer"

    monkeypatch.setattr(execute.AsyncKernelManager, "_async_launch_kernel", launch)
    monkeypatch.setenv("PATH", "/opt/marked/bin:" + os.environ["PATH"])
    km = execute.SandboxedKernelManager(Box(61_000, control, []))
    assert km.connection_file == str(control / "kernel.json") and km.cache_ports is False
    spec = km.kernel_spec
    assert spec.interrupt_mode == "message"  # a signal would stop at the sandbox's outer process
    assert spec.argv == [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (control / "kernel.json").write_text("{}")
    os.chmod(control / "kernel.json", 0o600)
    given = ["python", "-f", km.connection_file, "-g", str(real / "kernel.json"), "--x"]
    answer = asyncio.run(km._async_launch_kernel(given, env={"SECRET": "1"}, cwd="/"))
    assert answer == "the provisioner's answer"
    assert log[0] == ("kill_all", 0o600)  # what is left of an old kernel goes first
    inside = "/run/maillab/kernel.json"
    assert log[1] == ("command", ["python", "-f", inside, "-g", inside, "--x"],
                      {"NBGRADER_EXECUTION": "autograde"})
    assert (control / "kernel.json").stat().st_mode & 0o777 == 0o644  # the sandbox reads it
    (cmd, kw), = launched
    assert cmd == ["sandboxed", "python", "-f", inside, "-g", inside, "--x"]
    assert kw == {"env": {"PATH": os.environ["PATH"]}, "cwd": str(control)}


# ------------------------------------------------------------------ the worker
@pytest.fixture
def restored(monkeypatch):
    """Undo what a Worker changes in this process: nbgrader's schema check, the socket timeout."""
    from nbgrader.nbgraderformat import common
    monkeypatch.setattr(common, "jsonschema", common.jsonschema)
    old = socket.getdefaulttimeout()
    yield
    socket.setdefaulttimeout(old)


def recording_worker(course_root: Path, private: Path, log: list) -> worker.Worker:
    private.mkdir(parents=True, exist_ok=True)
    made = worker.Worker(course_root, 62_000, private, False)
    made.sandbox_class = lambda uid, control, readable: Recorded(uid, control, readable, log)
    return made


def test_the_worker_needs_its_course_user_id_and_private_folder():
    full = ["--course", "c", "--uid", "7", "--private", "p"]
    args = worker.parse(full)
    assert (args.course, args.uid, args.private, args.no_sandbox) == ("c", 7, "p", False)
    assert worker.parse(full + ["--no-sandbox"]).no_sandbox is True
    for i in (0, 2, 4):
        with pytest.raises(SystemExit):
            worker.parse(full[:i] + full[i + 2:])


def test_the_worker_reads_the_courses_config_and_puts_its_own_steps_in(tmp_path, restored):
    (tmp_path / "nbgrader_config.py").write_text(
        "c = get_config()\nc.Exchange.root = '/srv/marked-exchange'\n"
        "c.CourseDirectory.root = '/somewhere/else'\nc.BaseConverter.force = False\n"
        "c.Autograde.autograde_preprocessors = []\n")
    socket.setdefaulttimeout(5)
    made = worker.Worker(tmp_path, 62_000, tmp_path, False)
    assert socket.getdefaulttimeout() is None  # nbgrader's own waits are its own
    config = made.config
    assert config.Exchange.root == "/srv/marked-exchange"
    assert config.CourseDirectory.root == str(tmp_path) and config.BaseConverter.force is True
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, IgnorePattern,
                                        LimitOutput, SaveAutoGrades)
    assert config.Autograde.autograde_preprocessors == [
        execute.SealedExecute, execute.SealedVerdicts, IgnorePattern, ClearMetadataPreprocessor,
        LimitOutput, SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]
    bare = tmp_path / "bare"  # no nbgrader_config.py: nbgrader's defaults and ours
    bare.mkdir()
    config = worker.Worker(bare, 62_000, tmp_path, False).config
    assert config.CourseDirectory.root == str(bare) and "Exchange" not in config


def test_each_phase_has_a_sandbox_and_a_user_of_its_own(tmp_path, restored):
    plain = worker.Worker(tmp_path, 62_000, tmp_path, False)
    first, second = plain.make_sandbox(tmp_path), plain.make_sandbox(tmp_path, "phase2")
    assert (type(first), first.uid, first.control_dir) == (Unsandboxed, 62_000, tmp_path)
    assert (type(second), second.uid) == (Unsandboxed, 62_001)
    assert first.readable == python_folders()
    boxed = worker.Worker(tmp_path, 62_000, tmp_path, True).make_sandbox(tmp_path, "phase1")
    assert type(boxed) is Sandbox and boxed.uid == 62_000


def test_nbgraders_metadata_schema_is_checked_once_and_still_applies(
        tmp_path, restored, monkeypatch):
    import jsonschema
    from nbgrader.nbgraderformat import common
    worker.Worker(tmp_path, 62_000, tmp_path, False)
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
              "properties": {"points": {"type": "number"}}, "required": ["points"]}
    kind = jsonschema.validators.validator_for(schema)
    checked = []
    real = kind.check_schema.__func__
    monkeypatch.setattr(kind, "check_schema", classmethod(
        lambda cls, s, *a, **k: checked.append(1) or real(cls, s, *a, **k)))
    for _ in range(3):
        common.jsonschema.validate({"points": 2}, schema)
    assert checked == [1]
    with pytest.raises(common.jsonschema.ValidationError):
        common.jsonschema.validate({"points": "two"}, schema)
    with pytest.raises(jsonschema.SchemaError):
        common.jsonschema.validate({}, {"type": "no such type"})


def test_a_submission_nbgrader_refuses_is_reported_and_its_sandboxes_ended(
        course, short, restored, monkeypatch):
    log, folders, cleaners = [], [], []
    made = recording_worker(course.root, short / "private", log)

    class Thread(threading.Thread):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if kwargs.get("target") == made._clean_up:
                cleaners.append(self)

    monkeypatch.setattr(threading, "Thread", Thread)
    recording = made.sandbox_class

    def sandbox_class(uid, control, readable):  # the submission's folder, as the sandbox has it
        folders.append((control, control.stat().st_mode & 0o777))
        return recording(uid, control, readable)

    made.sandbox_class = sandbox_class
    # a long name: nbgrader's message (with the folder's path) is then about 2900 characters,
    # its traceback some hundreds more, whatever the paths of this checkout and course are
    long_name = "n" * (2800 - len(str(course.root)))
    for lab in ("nope", long_name):
        report = made.grade(lab, "ada")
        assert execute.CURRENT is None
        assert (report["student"], report["lab"], report["sandbox"]) == ("ada", lab, False)
        assert report["error"].startswith("NbGraderException: No notebooks were matched")
        assert report["traceback"].splitlines()[-1].startswith(
            "nbgrader.converters.base.NbGraderException: No notebooks were matched")
        assert (report["score"], report["max_score"]) == (None, None)
        assert 0 <= report["seconds"] < 60 and two_decimals(report["seconds"])
        ended = [(e[1], e[2:]) for e in log if e[0] == "kill_all"]
        assert ended == [(62_000, (2.0, False)), (62_001, (2.0, False))]
        log.clear()
    assert len(report["error"]) == 500 and len(report["traceback"]) == 3000  # cut
    assert "worker.py" not in report["traceback"]  # the end of it is kept
    # each submission had a folder of its own, the grader's alone, one for both phases
    assert [mode for _f, mode in folders] == [0o700] * 4
    assert folders[0][0] == folders[1][0] != folders[2][0] == folders[3][0]
    assert all(f.parent == short / "private" for f, _m in folders)
    deadline = time.monotonic() + 30
    while any(f.exists() for f, _m in folders) and time.monotonic() < deadline:
        time.sleep(0.05)  # a thread removes them while the next submission goes on
    assert not any(f.exists() for f, _m in folders)
    # the clean-up never holds the worker up, not even as it ends
    assert len(cleaners) == 2 and all(t.daemon for t in cleaners)


def test_clean_up_closes_what_the_phases_left_and_removes_the_folder(tmp_path):
    closed = []

    class Part:
        def __init__(self, fails):
            self.fails = fails

        def close(self):
            closed.append(self)
            if self.fails:
                raise RuntimeError("already gone")

    folder = tmp_path / "submission-1"
    (folder / "control-phase1").mkdir(parents=True)
    sub = execute.Submission("ada", folder, None)
    sub.checks, sub.phase1 = Part(True), Part(False)
    worker.Worker._clean_up(sub, folder)
    assert closed == [sub.checks, sub.phase1] and not folder.exists()
    worker.Worker._clean_up(execute.Submission("bo", folder, None), folder)  # nothing there


def test_the_worker_grades_one_student_again_and_again(course, short, restored):
    submit(course, "ada", answered(course))
    submit(course, "bo", answered(course))
    made = recording_worker(course.root, short / "private", [])
    report = made.grade(LAB, "ada")
    assert (report["score"], report["max_score"]) == (6.0, 7.0), report
    assert {g: p["passed"] for g, p in report["parts"].items()} == {
        "greet_tests": True, "ehlo_tests": True, "port_tests": True}
    assert all(two_decimals(report[k]) for k in ("seconds", "notebook_seconds",
                                                 "checks_seconds"))
    assert made.scores(LAB, "bo") == {"score": None, "max_score": None}  # only ada's
    assert not (course.root / "autograded" / "bo").exists()
    submit(course, "ada", answered(course, greet="def greet(name):\n    return name"))
    report = made.grade(LAB, "ada")  # graded again (nbgrader would skip it unforced)
    assert (report["score"], report["max_score"]) == (4.0, 7.0), report
    assert all(two_decimals(report[k]) for k in ("seconds", "notebook_seconds",
                                                 "checks_seconds"))


# ------------------------------------------------------------------ the worker's program
def start_worker(course, private: Path, tmp_path, *extra) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "maillab.grader.worker", "--course", str(course.root), "--uid",
         "62100", "--private", str(private), *extra], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=open(tmp_path / "worker.log", "a"), text=True,
        env=nbgrader_env(), cwd=tmp_path)


def namespace(pid) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def test_the_worker_program_says_ready_then_one_line_per_submission(course, short):
    submit(course, "cy", answered(course))
    (course.root / "submitted" / "dy" / LAB).mkdir(parents=True)
    (course.root / "submitted" / "dy" / LAB / f"{LAB}.ipynb").write_text("a notebook? no")
    private = short / "made" / "w"
    proc = start_worker(course, private, short, "--no-sandbox")
    try:
        assert json.loads(proc.stdout.readline()) == {"ready": True}
        assert namespace(proc.pid) == namespace("self")  # --no-sandbox: no namespaces
        assert private.is_dir()
        for lab, student in ((LAB, "cy"), (LAB, "dy"), ("nope", "cy")):
            proc.stdin.write(json.dumps({"lab": lab, "student": student}) + "\n")
        proc.stdin.close()
        # only the reports: what the kernel and nbgrader print goes to the log
        reports = [json.loads(line) for line in proc.stdout.read().splitlines()]
        assert proc.wait(60) == 0
    finally:
        proc.kill()
    assert [(r["lab"], r["student"], r["sandbox"], r["score"]) for r in reports] == [
        (LAB, "cy", False, 6.0), (LAB, "dy", False, 0.0), ("nope", "cy", False, None)]
    assert "see the the above traceback" in reports[1]["error"]  # (nbgrader's words)
    log = (short / "worker.log").read_text()
    assert "To connect another client to this kernel" in log
    assert "NotJSONError" in log  # what "above" means: nbgrader's reason is in the log
    again = start_worker(course, private, short, "--no-sandbox")  # its folder is there now
    out, _err = again.communicate("", timeout=120)
    assert again.returncode == 0 and out == '{"ready": true}\n'


def test_a_sandboxing_worker_lives_in_namespaces_of_its_own(course, short):
    require_root("a worker's namespaces need root")
    private = short / "private"
    proc = start_worker(course, private, short)
    try:
        assert json.loads(proc.stdout.readline()) == {"ready": True}
        assert namespace(proc.pid) != namespace("self")
        proc.stdin.write(json.dumps({"lab": "nope", "student": "cy"}) + "\n")
        proc.stdin.close()
        report = json.loads(proc.stdout.readline())
        assert (report["sandbox"], report["score"]) == (True, None)
        assert proc.wait(60) == 0
    finally:
        proc.kill()
    assert list(private.iterdir()) == []  # its folder was a tmpfs only it could see
