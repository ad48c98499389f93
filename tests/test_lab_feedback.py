"""What the labs tell a learner who slipped (issue 11, section 4): replies and hints that say what
really happened, and never ask for what the task forbids."""

from __future__ import annotations

import socket

import pytest

import maillab
from maillab import grading


@pytest.fixture(scope="module")
def lab():
    lab = maillab.start(ports="any", tls=False)
    yield lab
    lab.stop()


def pop3(lab, user: str, password: str):
    sock = socket.create_connection((lab.host, lab.pop3_port), timeout=5)
    f = sock.makefile("rb")
    assert f.readline().startswith(b"+OK")
    for line in (f"USER {user}", f"PASS {password}"):
        sock.sendall(line.encode() + b"\r\n")
        reply = f.readline()
    return sock, f, reply


def test_a_socket_closed_while_its_file_is_open_gets_a_hint_that_fits_the_drop_task(lab):
    """POP3 lab, part 7 ("drop the connection without QUIT"): sock.close() alone leaves the
    connection open while the makefile() file holds it, so the next login is refused with
    [IN-USE]. The hint said "it must QUIT first": what the task forbids. It must say that
    closing the connection ends the session too, and that the file keeps it open."""
    user, password = grading.make_account(lab, [grading.sample(1), grading.sample(2)])
    sock, f, reply = pop3(lab, user, password)
    assert reply.startswith(b"+OK")
    sock.sendall(b"DELE 1\r\n")
    assert f.readline().startswith(b"+OK")
    sock.close()  # the file f still holds the connection: the server sees nothing
    sock2, f2, refused = pop3(lab, user, password)
    text = refused.decode()
    assert text.startswith("-ERR [IN-USE] "), text
    assert "QUIT first" not in text, text
    assert "closing its connection" in text and "makefile()" in text, text
    f.close()  # now the connection really closes: the session ends without UPDATE
    sock2.close(), f2.close()
    sock3, f3, again = pop3(lab, user, password)
    assert again.startswith(b"+OK"), again
    sock3.sendall(b"STAT\r\n")
    assert f3.readline().startswith(b"+OK 2 "), "a dropped session deleted something"
    sock3.sendall(b"QUIT\r\n")
    f3.readline()
    f3.close(), sock3.close()


def test_a_command_without_its_line_end_times_out_with_a_hint(lab):
    """A learner's client that forgets \\r\\n waits for an answer that never comes and ends in a
    TimeoutError deep in its own read_reply: the feedback asks whether the server got a whole
    line (before: a bare TimeoutError)."""
    def ehlo_without_line_end(host, port):
        sock = socket.create_connection((host, port), timeout=0.5)
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"EHLO forgetful.example.org")  # no \r\n: the server waits for the rest
        return f.readline()

    with pytest.raises(TimeoutError) as e:
        with grading.watch(lab):
            ehlo_without_line_end(lab.host, lab.smtp_port)
    notes = getattr(e.value, "__notes__", [])
    assert any("whole line" in n and "\\r\\n" in n for n in notes), notes


def test_the_sealed_grader_gives_the_same_hint(lab):
    from maillab.grader.checks import explain_learner_error

    class LearnerTimeout(TimeoutError):
        learner_text = "timed out"
    assert "whole line" in explain_learner_error(LearnerTimeout("timed out"), "timed out")
    assert explain_learner_error(ValueError("x"), "x") == "x"


# ---------------------------------------------------------------- a part not written yet
UNWRITTEN = '''
def read_multiline(f):
    """The lines of a multi-line reply."""
    # YOUR CODE HERE
    raise NotImplementedError()


def list_messages(host, port, user, password):
    return read_multiline(None)  # written, but it uses the part above
'''


def kernel_errors(cells: list[str]) -> list[tuple[str, str]]:
    """(ename, evalue) of the error each cell ended in, run in a real kernel as nbgrader does."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=60, kernel_name="python3", allow_errors=True).execute()
    return [next(((o.ename, o.evalue) for o in c.outputs if o.output_type == "error"), None)
            for c in nb.cells]


def test_the_kernel_names_the_function_that_is_not_written_yet():
    """The student version's stub raises a bare NotImplementedError(): a test that met it
    said "NotImplementedError:" and nothing else. After the setup cell's grading.prepare the
    error names the unwritten function, the innermost one (a written list_messages that calls
    an unwritten read_multiline names read_multiline), in the lab's language."""
    errors = kernel_errors([
        "import maillab\nfrom maillab import grading\n"
        "lab = maillab.start(ports='any', tls=False)\ngrading.prepare(lab)",
        UNWRITTEN,
        "read_multiline(None)",
        "list_messages('127.0.0.1', 110, 'bob', 'builder')",
        "raise NotImplementedError('my own words')",  # not a function of the notebook
        "maillab.i18n.set_language('el')\nread_multiline(None)",
        "lab.stop()"])
    expected = "you have not written {0} yet (it still raises NotImplementedError)"
    assert errors[2] == ("NotImplementedError", expected.format("read_multiline"))
    assert errors[3] == ("NotImplementedError", expected.format("read_multiline"))
    assert errors[4] == ("NotImplementedError", "my own words")
    assert errors[5] == ("NotImplementedError",
                         "δεν έχεις γράψει ακόμη τη read_multiline (σηκώνει ακόμη "
                         "NotImplementedError)")
    assert errors[0] is errors[1] is errors[6] is None


def test_only_the_notebooks_own_functions_count_as_unwritten():
    namespace, library = {}, {}
    exec("def abstract():\n    raise NotImplementedError('subclasses do this')", library)
    exec(UNWRITTEN + "\nclass Client:\n    def login(self):\n        raise NotImplementedError()\n"
         "def from_library():\n    abstract()\n"
         "def from_c():\n    import io\n    return io.RawIOBase().read(1)\n", namespace)
    namespace["abstract"] = library["abstract"]

    def raised(call):
        try:
            call()
        except NotImplementedError as e:
            return grading.unwritten_function(e, namespace)
    assert raised(lambda: namespace["list_messages"]("h", 1, "u", "p")) == "read_multiline"
    assert raised(lambda: namespace["Client"]().login()) == "Client.login"
    assert raised(namespace["from_library"]) is None
    assert raised(namespace["from_c"]) is None  # raised in C, inside the notebook's function
    assert grading.unwritten_function(ValueError("x"), namespace) is None


def test_the_grader_does_not_repeat_the_kernels_reason():
    """Under `maillab grade` a failed test kept the kernel's error and added the grader's
    reason: when both say the same, the feedback showed the line twice."""
    from nbformat import NotebookNode

    from maillab.grader.checks import Verdict
    from maillab.grader.execute import apply_verdict

    def cell(*errors):
        return NotebookNode(outputs=[NotebookNode(output_type="error", ename=n, evalue=v,
                                                  traceback=[f"{n}: {v}"]) for n, v in errors])
    same = cell(("AssertionError", "each port is a number"))
    apply_verdict(same, Verdict("ports_tests", False, "AssertionError", "each port is a number"), 5)
    assert [(o.ename, o.evalue) for o in same.outputs] == [("AssertionError",
                                                            "each port is a number")]
    other = cell(("AssertionError", "visible part"))
    apply_verdict(other, Verdict("t", False, "AssertionError", "hidden part"), 5)
    assert [o.evalue for o in other.outputs] == ["visible part", "hidden part"]
    passed = cell(("AssertionError", "the kernel alone"))
    assert apply_verdict(passed, Verdict("t", True), 5)["points"] == 5 and not passed.outputs


def test_the_feedback_preprocessor_takes_nbconverts_display_option():
    """nbgrader generate_feedback printed "Config option `display_data_priority` not
    recognized by `HideHiddenTests`" on every run: the HTML exporter sets that option for
    every nbconvert class."""
    import io
    import logging

    from nbconvert.exporters import HTMLExporter
    from traitlets.config import Config

    said = io.StringIO()
    log = logging.getLogger("test-hide-hidden-tests")
    log.addHandler(logging.StreamHandler(said))
    hide = grading.nbgrader_preprocessors()["HideHiddenTests"]
    hide(config=Config(HTMLExporter().default_config), log=log)
    assert said.getvalue() == ""


def test_the_feedback_of_a_graded_lab_names_the_unwritten_function_once(tmp_path):
    """End to end, as a teacher runs it: plain `nbgrader autograde`, `maillab grade` (the
    kernel's error and the grader's reason say the same: shown once), the report (a session
    typed by hand is no loading error) and `nbgrader generate_feedback` (no config warning)."""
    import json
    import subprocess
    import sys

    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from conftest import require_root, require_tool
    from labcourse import Course, nbgrader_env

    require_tool("bwrap")
    require_root("grading in sandboxes needs root")

    def cell(grade_id, source, **kw):
        return new_code_cell(source.strip("\n"), id=grade_id, metadata={"nbgrader": {
            "grade": False, "grade_id": grade_id, "locked": False, "schema_version": 3,
            "solution": False, "task": False, **kw}})
    solved = UNWRITTEN.replace("# YOUR CODE HERE\n    raise NotImplementedError()",
                               "### BEGIN SOLUTION\n    return b''\n    ### END SOLUTION")
    master = new_notebook(cells=[
        cell("setup", "import maillab\nfrom maillab import grading\n"
                      "lab = maillab.start(ports='any', tls=False)\ngrading.prepare(lab)",
             locked=True),
        cell("session", "%%pop3 example.com\n### BEGIN SOLUTION\nUSER bob\nPASS builder\n"
                        "QUIT\n### END SOLUTION", solution=True),
        cell("code", solved, solution=True),
        cell("list_tests", "assert list_messages(lab.host, lab.pop3_port, 'bob', 'b') == b''\n"
                           "### BEGIN HIDDEN TESTS\n_g = grading.fresh(lab)\n"
                           "### END HIDDEN TESTS", grade=True, locked=True, points=2),
        cell("stop", "lab.stop()", locked=True)])
    master.metadata.kernelspec = {"display_name": "Python 3 (ipykernel)", "language": "python",
                                  "name": "python3"}
    course = Course(tmp_path / "course", [])
    (course.root / "solutions" / "unwritten").mkdir(parents=True)
    nbformat.write(master, course.root / "solutions" / "unwritten" / "unwritten.ipynb")
    student = nbformat.read(course.generate("unwritten"), 4)
    student.cells[1].source = "%%pop3 example.com\nUSER bob\nPASS builder\nQUIT"
    student.cells[2].source = UNWRITTEN  # list_messages written, read_multiline not
    path = course.root / "submitted" / "ada" / "unwritten" / "unwritten.ipynb"
    path.parent.mkdir(parents=True)
    nbformat.write(student, path)
    reason = "you have not written read_multiline yet (it still raises NotImplementedError)"

    course.run("autograde", "unwritten", "--force")
    assert course.errors("unwritten", "ada") == {"list_tests": f"NotImplementedError: {reason}"}
    done = subprocess.run([sys.executable, "-m", "maillab", "grade", "unwritten", "--quiet"],
                          cwd=course.root, env=nbgrader_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((course.root / "grade-reports" / "unwritten.json").read_text())
    [graded] = report["submissions"]
    assert graded["parts"]["list_tests"]["message"] == reason
    assert graded["loading"] == []  # the %%pop3 cell is not the learner's functions
    made = course.run("generate_feedback", "unwritten", "--force")
    assert "not recognized" not in made.stdout + made.stderr
    html = (course.root / "feedback" / "ada" / "unwritten" / "unwritten.html").read_text()
    assert html.count(reason) == 1
