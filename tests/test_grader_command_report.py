"""What `python -m maillab grade` tells a teacher, and how it behaves when run again.

Found by following docs/instructor.md from a fresh clone: the "look at" column called every
partly right part a sign of tampering, a second `--collect zip` stopped at nbgrader's "Directory
not empty", `--student X` replaced the whole batch's report with X's, the table cut its text
without saying so, and the workers' log did not say whose submission a line was about. Fast:
nbgrader runs for real where it matters (zip_collect, the gradebook), the grading workers are a
stand-in that answers at once.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from labcourse import ROOT, Course, nbgrader_env

from maillab.grader import command, worker

CORPUS = ROOT / "tests" / "lab_corpus"

# A worker that grades every job at once: score 1/1, and for a student named in
# odd-<student>.json (in the course folder) those oddities.
FAKE_WORKER = '''
import json, sys
from pathlib import Path
course = Path(sys.argv[sys.argv.index("--course") + 1])
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    job = json.loads(line)
    odd = course / f"odd-{job['student']}.json"
    print(json.dumps({**job, "score": 1, "max_score": 1, "seconds": 0.1, "parts": {},
                      "odd": json.loads(odd.read_text()) if odd.exists() else []}), flush=True)
'''


def grade(course: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.run(parser.parse_args([*argv, "--course", str(course), "--no-sandbox",
                                          "--quiet", "--workers", "1"]))


@pytest.fixture
def fake_workers(tmp_path, monkeypatch):
    program = tmp_path / "fake_worker.py"
    program.write_text(FAKE_WORKER)
    monkeypatch.setattr(command, "WORKER", [sys.executable, str(program)])


def report(course: Path, lab: str) -> dict:
    return json.loads((course / "grade-reports" / f"{lab}.json").read_text())


def add_zip(course: Path, name: str, students: list[str]) -> None:
    archive = course / "downloaded" / "smtp" / "archive"
    archive.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive / name, "w") as z:
        for student in students:
            z.write(CORPUS / "smtp" / "correct.ipynb", f"{student}_smtp.ipynb")


# ------------------------------------------------------------------ the "look at" column
def part(passed: bool, kernel_passed: bool) -> dict:
    return {"passed": passed, "kernel_passed": kernel_passed, "notes": [], "points": 0,
            "max": 5, "message": ""}


def test_a_partly_right_part_is_not_taken_for_tampering():
    """Visible test passed in the notebook, a hidden check failed in the grader: that is what
    code that is only partly right looks like, and it is nothing to look at."""
    honest = {"student": "bo", "score": 5, "max_score": 10, "seconds": 2.0,
              "parts": {"read_reply_tests": part(False, True), "ehlo_tests": part(True, True)},
              "submitted_notebook": {"edited": [], "missing": [],
                                     "saved_passing": ["read_reply_tests", "ehlo_tests"]}}
    assert command.oddities(honest) == []
    assert command.table([honest]).splitlines()[1].split() == ["bo", "5/10", "2.0", "s", "1/2",
                                                               "passed"]


def test_what_points_to_a_changed_notebook_is_named():
    result = {"student": "eve", "parts": {"a_tests": part(False, False),
                                          "b_tests": part(False, False),
                                          "c_tests": part(True, False)},
              "submitted_notebook": {"edited": ["a_tests", "c_tests"],
                                     "missing": ["setup", "d_tests"], "other_version": [],
                                     "saved_passing": ["b_tests", "c_tests"]}}
    said = command.oddities(result)
    assert said == [
        "locked cells changed: a_tests, c_tests (graded as handed out)",
        "locked cells missing: setup, d_tests (put back)",
        "b_tests: saved as passing, failed when run again here",
        "c_tests: the notebook's own test failed, the grader's check passed"]
    older = {"student": "fay", "parts": {"a_tests": part(False, True)},
             "submitted_notebook": {"edited": [], "missing": [], "saved_passing": [],
                                    "other_version": ["setup", "a_tests"]}}
    assert command.oddities(older) == [
        "an earlier version of the lab: setup, a_tests differ (graded with this one)"]
    # without the submitted notebook's evidence (a report of an older version): no guess
    del result["submitted_notebook"]
    assert command.oddities(result) == [
        "c_tests: the notebook's own test failed, the grader's check passed"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    course = Course(tmp_path_factory.mktemp("course"), ["smtp"])
    course.generate("smtp")
    return course


def cell_of(nb, gid: str):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == gid)


def test_the_submitted_notebook_is_compared_with_the_one_handed_out(generated):
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{generated.root / 'gradebook.db'}") as gb:
        handed, tests = worker.handout(gb.find_notebook("smtp", "smtp"))
    student = nbformat.read(generated.root / "labs" / "smtp" / "smtp.ipynb", 4)  # nbgrader's
    assert len(tests) > 10 and {"setup", "stop"} <= set(handed) - tests
    assert worker.compare_with_handout(student, handed, tests) == {
        "edited": [], "other_version": [], "missing": [], "saved_passing": []}
    # a pupil's run: one test passed, one failed, one edited, the setup cell deleted
    cell_of(student, "read_reply_tests").update(execution_count=4, outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="ok\n")])
    cell_of(student, "ehlo_tests").update(execution_count=5, outputs=[
        nbformat.v4.new_output("error", ename="AssertionError", evalue="", traceback=[])])
    edited = cell_of(student, "ports_tests")
    edited.update(execution_count=6, source=edited.source + "\nassert True")
    cell_of(student, "codes_tests").metadata.nbgrader["points"] = 99  # its source unchanged
    student.cells.remove(cell_of(student, "setup"))
    student.cells.append(nbformat.v4.new_code_cell("1", metadata={"nbgrader": "garbage"}))
    assert worker.compare_with_handout(student, handed, tests) == {
        "edited": ["ports_tests", "codes_tests"], "other_version": [], "missing": ["setup"],
        "saved_passing": ["read_reply_tests"]}
    # the lab generated again with another test after the pupil got it: that is no edit
    newer = dict(handed, dot_stuff_tests=handed["dot_stuff_tests"] + "\nassert 1 + 1 == 2",
                 new_tests="assert True")
    cell_of(student, "dot_stuff_tests").update(execution_count=7, outputs=[])
    assert worker.compare_with_handout(student, newer, tests | {"new_tests"}) == {
        "edited": ["ports_tests", "codes_tests"], "other_version": ["dot_stuff_tests"],
        "missing": [], "saved_passing": ["read_reply_tests"]}
    # a cell that lost nbgrader's record of its checksum: compared with this version's source
    del cell_of(student, "stop").metadata.nbgrader["checksum"]
    cell_of(student, "stop").source += "  \n"
    assert worker.compare_with_handout(student, handed, tests)["edited"] == [
        "ports_tests", "codes_tests"]
    cell_of(student, "stop").source += "lab.stop()"
    assert "stop" in worker.compare_with_handout(student, handed, tests)["edited"]


def test_the_worker_reads_the_handout_from_the_gradebook(generated):
    nb = nbformat.read(generated.root / "labs" / "smtp" / "smtp.ipynb", 4)
    cell_of(nb, "send_checked_tests").source = "# the tests were in my way\npass"
    nb.cells.remove(cell_of(nb, "stop"))
    handout = generated.root / "labs" / "smtp" / "smtp.ipynb"
    generated.submit("smtp", "ada", handout)  # as handed out, then her answers written in
    generated.submit("smtp", "eve", handout)
    nbformat.write(nb, generated.root / "submitted" / "eve" / "smtp" / "smtp.ipynb")
    answered = nbformat.read(handout, 4)
    solutions = [c for c in answered.cells
                 if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")]
    for cell in solutions:  # answer cells are hers to change: never "edited"
        cell.source = "def answer():\n    return 42\n"
    assert solutions
    nbformat.write(answered, generated.root / "submitted" / "ada" / "smtp" / "smtp.ipynb")
    config = worker.nbgrader_config(generated.root)
    assert worker.submitted_notebook(config, "smtp", "eve") == {
        "edited": ["send_checked_tests"], "other_version": [], "missing": ["stop"],
        "saved_passing": []}
    assert worker.submitted_notebook(config, "smtp", "ada") == {
        "edited": [], "other_version": [], "missing": [], "saved_passing": []}
    assert worker.submitted_notebook(config, "no-such-lab", "ada") == {}
    assert worker.submitted_notebook(config, "smtp", "nobody") == {}  # no notebook submitted


# ------------------------------------------------------------------ the table
def test_the_table_says_where_the_rest_of_the_look_at_text_is():
    many = [f"thing {i}" for i in range(6)]
    long = "ehlo_tests: " + "x" * 100
    results = [{"student": "cy", "score": 0, "max_score": 10, "odd": [long, *many]}]
    rows = command.table(results, "grade-reports/smtp.json").splitlines()
    look_at = [row[row.index("passed") + len("passed"):].strip() if "passed" in row
               else row.strip() for row in rows[1:]]
    assert look_at == [long[:69] + "…", "thing 0", "thing 1",
                       "… and 4 more in grade-reports/smtp.json"]
    assert all(len(text) <= 70 for text in look_at)
    four = [{"student": "dan", "score": 0, "max_score": 10, "odd": many[:4]}]
    assert "more" not in command.table(four) and "thing 3" in command.table(four)


# ------------------------------------------------------------------ running it again
def test_a_second_collect_from_zips_picks_up_a_later_zip(tmp_path, fake_workers, capsys):
    course = Course(tmp_path / "course", ["smtp"]).root
    add_zip(course, "monday.zip", ["ada", "bo"])
    assert grade(course, "smtp", "--collect", "zip") == 0
    add_zip(course, "late.zip", ["cy"])
    assert grade(course, "smtp", "--collect", "zip") == 0, capsys.readouterr()
    assert [r["student"] for r in report(course, "smtp")["submissions"]] == ["ada", "bo", "cy"]
    for who in ("ada", "bo", "cy"):
        assert (course / "submitted" / who / "smtp" / "smtp.ipynb").is_file()


def test_grading_one_student_keeps_the_others_in_the_report(tmp_path, fake_workers, capsys):
    course = tmp_path / "course"
    for who in ("ada", "bo", "cy"):
        (course / "submitted" / who / "smtp").mkdir(parents=True)
    (course / "odd-bo.json").write_text(json.dumps(["first run"]))
    assert grade(course, "smtp") == 0
    (course / "odd-bo.json").write_text(json.dumps([f"again {i}" for i in range(6)]))
    capsys.readouterr()
    assert grade(course, "smtp", "--student", "bo", "--student", "dan") == 0
    said = report(course, "smtp")["submissions"]
    assert [(r["student"], r["odd"][:1]) for r in said] == [
        ("ada", []), ("bo", ["again 0"]), ("cy", []), ("dan", [])]
    out = capsys.readouterr().out
    assert "ada" not in out and "… and 3 more in grade-reports/smtp.json" in out
    # a whole batch again: the report is that batch's
    (course / "submitted" / "cy" / "smtp" / "smtp.ipynb").parent.rename(course / "gone")
    assert grade(course, "smtp") == 0
    assert [r["student"] for r in report(course, "smtp")["submissions"]] == ["ada", "bo"]


def test_an_unreadable_report_is_replaced_by_the_new_one(tmp_path, fake_workers):
    course = tmp_path / "course"
    (course / "submitted" / "ada" / "smtp").mkdir(parents=True)
    (course / "grade-reports").mkdir()
    for unreadable in ("{ half written", '{"submissions": 5}', "[]", '{"lab": "smtp"}'):
        (course / "grade-reports" / "smtp.json").write_text(unreadable)
        assert grade(course, "smtp", "--student", "ada") == 0
        assert [r["student"] for r in report(course, "smtp")["submissions"]] == ["ada"]


# ------------------------------------------------------------------ the worker's log
def test_the_worker_log_says_whose_submission_each_line_is_about(generated, tmp_path):
    """The worker program as maillab grade starts it (stderr: its log file), two jobs."""
    log = tmp_path / "worker0.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [*command.WORKER, "--course", str(generated.root), "--uid", "64000", "--private",
             str(tmp_path / "private"), "--no-sandbox"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=stderr, text=True, env=nbgrader_env())
        try:
            assert json.loads(proc.stdout.readline()) == {"ready": True}
            for student in ("nobody", "noone"):  # no such submissions: nbgrader says so
                proc.stdin.write(json.dumps({"lab": "smtp", "student": student}) + "\n")
                proc.stdin.flush()
                assert "error" in json.loads(proc.stdout.readline())
            proc.stdin.close()
            assert proc.wait(60) == 0
        finally:
            proc.kill()
    lines = log.read_text().splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("==== ")]
    assert len(headers) == 2 and headers[0] == 0, lines
    assert "smtp: nobody" in lines[0] and "submission 1 of this worker" in lines[0]
    assert "smtp: noone" in lines[headers[1]] and "submission 2" in lines[headers[1]]
    # nbgrader's complaint about each follows that submission's header
    assert "submitted/nobody/smtp" in "\n".join(lines[1:headers[1]])
    assert "submitted/noone/smtp" in "\n".join(lines[headers[1]:])


def test_a_test_cell_whose_points_were_taken_away_is_an_edited_cell():
    cell = nbformat.v4.new_code_cell("assert answer() == 42")
    cell.metadata["nbgrader"] = {"grade_id": "t", "grade": True, "checksum": "0" * 32}  # no points
    nb = nbformat.v4.new_notebook()
    nb.cells = [cell]
    assert worker.compare_with_handout(nb, {"t": "assert answer() == 42"}, {"t"}) == {
        "edited": ["t"], "other_version": [], "missing": [], "saved_passing": []}
