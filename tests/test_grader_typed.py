"""A part whose answer is a session the learner types in a cell, graded from what the servers
saw while that cell ran (``grading.during``): in the notebook's own kernel (plain nbgrader) and
by ``python -m maillab grade`` from the evidence of its sandboxed run.

This is how parts typed by hand (``%%smtp`` cells) plug into the sealed grading: their test
cell asks ``grading.during(lab)`` for the sessions of the cell just before it, and the grader
answers from the lab it ran for the notebook, with the times its own executor recorded.
"""

from __future__ import annotations

import os
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from conftest import require_root, require_tool
from labcourse import Course, nbgrader_env

SETUP = ('import socket\nimport maillab\nfrom maillab import grading\n'
         'lab = maillab.start(ports="any", tls=False)\ngrading.prepare(lab)')
TYPED = '''
### BEGIN SOLUTION
s = socket.create_connection((lab.host, lab.smtp_port))
f = s.makefile("rb")
f.readline()
s.sendall(b"EHLO typed.example.org\\r\\n")
while f.readline()[3:4] == b"-":
    pass
s.sendall(b"QUIT\\r\\n")
f.readline()
s.close()
### END SOLUTION
'''
TEST = '''
ev = grading.during(lab)  # the cell just before this one
s = ev.session("smtp:example.com")
assert s.commands() == ["EHLO", "QUIT"], s.commands()
### BEGIN HIDDEN TESTS
_g = grading.fresh(lab)
assert s.client_lines[0] == "EHLO typed.example.org"
### END HIDDEN TESTS
'''


def meta(grade_id: str, **kw) -> dict:
    return {"nbgrader": {"grade": False, "grade_id": grade_id, "locked": False,
                         "schema_version": 3, "solution": False, "task": False, **kw}}


def typed_master(course: Course) -> None:
    setup = new_code_cell(SETUP, id="typed-setup", metadata=meta("setup", locked=True))
    typed = new_code_cell(TYPED.strip(), id="typed-ehlo", metadata=meta("ehlo", solution=True))
    test = new_code_cell(TEST.strip(), id="typed-test",
                         metadata=meta("ehlo_tests", grade=True, locked=True, points=5))
    nb = new_notebook(cells=[setup, typed, test])
    nb.metadata.kernelspec = {"display_name": "Python 3 (ipykernel)", "language": "python",
                              "name": "python3"}
    path = course.root / "solutions" / "typed" / "typed.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def submission(course: Course, student: str, typed: str) -> None:
    nb = nbformat.read(course.root / "labs" / "typed" / "typed.ipynb", 4)
    nb.cells[1].source = typed
    path = course.root / "submitted" / student / "typed" / "typed.ipynb"
    path.parent.mkdir(parents=True)
    nbformat.write(nb, path)


def test_a_typed_session_is_graded_from_the_cell_it_was_typed_in(tmp_path):
    require_tool("bwrap")
    require_root("grading in sandboxes needs root")
    course = Course(tmp_path / "course", [])
    typed_master(course)
    course.generate("typed")
    honest = "\n".join(l for l in TYPED.strip().splitlines() if "SOLUTION" not in l)
    submission(course, "ada", honest)
    submission(course, "bo", honest.replace("typed.example", "other.example"))  # hidden: no
    submission(course, "cy", "print('I did not type anything')")
    # the session typed in another cell does not count for this part
    submission(course, "di", honest + "\nimport time\ntime.sleep(0.01)")
    nb = nbformat.read(course.root / "submitted" / "di" / "typed" / "typed.ipynb", 4)
    nb.cells.insert(2, new_code_cell("x = 1  # a cell between the session and its test",
                                     id="typed-between"))
    nbformat.write(nb, course.root / "submitted" / "di" / "typed" / "typed.ipynb")

    course.run("autograde", "typed", "--force")
    plain = {who: course.grades("typed", who)["ehlo_tests"] for who in ("ada", "bo", "cy", "di")}
    done = subprocess.run([sys.executable, "-m", "maillab", "grade", "typed", "--workers", "2",
                           "--quiet"], cwd=course.root, env=nbgrader_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sealed = {who: course.grades("typed", who)["ehlo_tests"] for who in ("ada", "bo", "cy", "di")}
    assert plain == sealed == {"ada": 5, "bo": 0, "cy": 0, "di": 0}
