#!/usr/bin/env python3
"""Build the instructor masters solutions/<lab>/<lab>.ipynb (nbgrader's source notebooks).

    python3 solutions/make_masters.py            write every master
    python3 solutions/make_masters.py --check    exit 1 if a committed master differs

The masters are ordinary nbgrader notebooks: an instructor may also edit them in JupyterLab
(docs/instructor.md). Maintainers edit the lab texts in solutions/.labs/lab_<name>.py (a dot folder, so that
nbgrader does not take it for an assignment) and run this
script, then `nbgrader generate_assignment` (tests fail while labs/ or a master is stale).

Every hidden test block starts with `_g = grading.fresh(lab)`. Test cells are written once and
run in two places: in the learner's kernel (a plain `nbgrader autograde`, and the learner's
feedback) and, under `python -m maillab grade`, in the grader's own process against the
learner's answers (maillab/grader/checks.py). So a test cell uses only `lab`, `grading`/`_g`,
the modules the given cells import and the learner's names; it may pass plain values,
`io.BytesIO`, sockets and `ssl.SSLContext`s to the learner's functions.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LABS = ["smtp", "pop3", "imap", "journey", "web-and-security"]

# The first line of every hidden test block: maillab.grading afresh, after its in-kernel checks.
FRESH = "_g = grading.fresh(lab)\n"


class Builder:
    """Collects the cells of one lab notebook with nbgrader metadata."""

    def __init__(self, lab: str):
        self.lab = lab
        self.cells = []
        self.points = {}

    def _id(self) -> str:
        return f"{self.lab}-{len(self.cells):02d}"

    def md(self, text: str) -> None:
        self.cells.append(new_markdown_cell(text.strip("\n"), id=self._id()))

    def auth_token(self) -> None:
        """The given cell that prints Alice's AUTH PLAIN line, for the labs whose sessions typed
        by hand log in as her (the same cell, id ``auth_token``, in each)."""
        self.given("auth_token", """
import base64
print("AUTH PLAIN " + base64.b64encode(b"\\0alice\\0wonderland").decode())
""")

    def given(self, grade_id: str, source: str) -> None:
        """A locked code cell (setup, helpers): students cannot edit it; put back if deleted."""
        cell = new_code_cell(source.strip("\n"), id=self._id())
        cell.metadata.update(deletable=False, editable=False, nbgrader={
            "grade": False, "grade_id": grade_id, "locked": True, "schema_version": 3,
            "solution": False, "task": False})
        self.cells.append(cell)

    def solution(self, grade_id: str, source: str) -> None:
        cell = new_code_cell(source.strip("\n"), id=self._id())
        cell.metadata.nbgrader = {"grade": False, "grade_id": grade_id, "locked": False,
                                  "schema_version": 3, "solution": True, "task": False}
        self.cells.append(cell)

    def tests(self, grade_id: str, points: int, visible: str, hidden: str) -> None:
        source = (visible.strip("\n") + "\n\n### BEGIN HIDDEN TESTS\n"
                  + FRESH + hidden.strip("\n")
                  + "\n### END HIDDEN TESTS")
        cell = new_code_cell(source, id=self._id())
        cell.metadata.update(deletable=False, editable=False, nbgrader={
            "grade": True, "grade_id": grade_id, "locked": True, "points": points,
            "schema_version": 3, "solution": False, "task": False})
        self.cells.append(cell)
        self.points[grade_id] = points

    def step_tests(self, prefix: str, steps: list, checker: str, call: str) -> None:
        """The test cells of a part typed by hand (Level 1), one per step ``(name, points)``:
        the first works out every step with ``grading.<checker>(grading.during(lab), <call>)``
        from what the servers saw while the session cell just above ran, and prints them; each
        cell then checks its one step (partial credit, a one-line reason when it fails). Hidden
        parts work the steps out again with the fresh module: the first from the evidence, the
        others with ``_g.again(prefix)`` (the first cell's visible check may fail before its
        hidden part runs, so later cells cannot use a name that hidden part made)."""
        for i, (step, points) in enumerate(steps):
            check = 'assert {0}.done("%s"), {0}.why("%s")' % (step, step)
            visible, hidden = check.format(prefix), check.format("_" + prefix)
            if i == 0:
                visible = (f"# what the servers saw while your session cell (just above) ran\n"
                           f"{prefix} = grading.{checker}(grading.during(lab),\n    {call})\n"
                           f"print({prefix})\n" + visible)
                hidden = f"_{prefix} = _g.{checker}(_g.during(lab),\n    {call})\n" + hidden
            else:
                hidden = f"_{prefix} = _g.again({prefix})\n" + hidden
            self.tests(f"{prefix}_{step}_tests", points, visible, hidden)

    def written(self, grade_id: str, points: int, answer: str) -> None:
        cell = new_markdown_cell("### BEGIN SOLUTION\n" + answer.strip("\n")
                                 + "\n### END SOLUTION", id=self._id())
        cell.metadata.nbgrader = {"grade": True, "grade_id": grade_id, "locked": False,
                                  "points": points, "schema_version": 3, "solution": True,
                                  "task": False}
        self.cells.append(cell)
        self.points[grade_id] = points

    def notebook(self):
        total = sum(self.points.values())
        assert total == 100, f"{self.lab}: {total} points, not 100"
        nb = new_notebook(cells=self.cells)
        nb.metadata.kernelspec = {"display_name": "Python 3 (ipykernel)", "language": "python",
                                  "name": "python3"}
        nb.metadata.language_info = {"name": "python"}
        return nb


SETUP = '''import socket
import maillab
from maillab import grading
from maillab.i18n import _  # the messages of the tests, in the lab's language

lab = maillab.start(ports="any"{tls})  # free ports: several labs (and graders) can run at once
socket.setdefaulttimeout(grading.SOCKET_TIMEOUT)  # a socket that waits 3 s for an answer gives up
grading.prepare(lab)  # record what the servers see; stop any cell that runs longer than 8 s
lab'''

SETUP_MD = """## Start your mail lab

Run the next cell first (and again after a kernel restart). It starts the mail servers for
`example.com` and `example.net` inside this notebook and prints their port numbers. Your code
always gets the host and port as arguments: use them, never type a port number yourself.

Two safety nets protect you: a socket gives up after 3 seconds of waiting, and a cell that
runs longer than 8 seconds is stopped. Both usually mean your client waits for an answer the
server will never send (did you forget `\\r\\n`?)."""

STOP = "lab.stop()  # the end: stop the servers"


def build(lab: str):
    content = importlib.import_module(f"lab_{lab.replace('-', '_')}")
    b = Builder(lab)
    tls = "" if getattr(content, "TLS", False) else ", tls=False"
    content.build(b, SETUP_MD, SETUP.format(tls=tls), STOP)
    return b.notebook()


def master_path(lab: str) -> Path:
    return HERE / lab / f"{lab}.ipynb"


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(HERE / ".labs"))
    check = "--check" in argv
    labs = [a for a in argv if not a.startswith("-")] or LABS
    stale = []
    for lab in labs:
        nb = build(lab)
        text = nbformat.writes(nb) + "\n"
        path = master_path(lab)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(lab)
        else:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print("stale masters (run python3 solutions/make_masters.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
