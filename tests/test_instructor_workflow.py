"""docs/instructor.md, steps 1-7, for real: edit a master, generate the student version,
collect from an LMS zip, grade in sandboxes (and compare with a plain nbgrader autograde),
grade the written answer, feedback, export."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import zipfile

import nbformat
import pytest

from conftest import require_root, require_tool
from labcourse import ROOT, Course, nbgrader_env

CORPUS = ROOT / "tests" / "lab_corpus"


def test_edit_generate_collect_autograde_feedback_export(tmp_path):
    require_tool("bwrap")
    require_root("grading in sandboxes needs root")
    course = Course(tmp_path / "course", ["smtp"])
    doc = (ROOT / "docs" / "instructor.md").read_text()
    for command in ("nbgrader generate_assignment smtp --force", "nbgrader zip_collect smtp",
                    "python -m maillab grade smtp", "nbgrader autograde smtp",
                    "nbgrader generate_feedback smtp", "nbgrader export"):
        assert command in doc, command

    # 1. Edit the master: a new sentence in the first part's text.
    path = course.root / "solutions" / "smtp" / "smtp.ipynb"
    nb = nbformat.read(path, 4)
    part1 = next(c for c in nb.cells if c.source.startswith("## Part 1"))
    part1.source += "\n\nTip from your teacher: print every line you receive."
    nbformat.write(nb, path)

    # 2. Generate the student version.
    student = course.generate("smtp")
    assert "Tip from your teacher" in student.read_text()
    assert "BEGIN HIDDEN TESTS" not in student.read_text()

    # 4. Two learners' notebooks, downloaded from an LMS as one zip.
    archive = course.root / "downloaded" / "smtp" / "archive"
    archive.mkdir(parents=True)
    with zipfile.ZipFile(archive / "lms-download.zip", "w") as z:
        z.write(CORPUS / "smtp" / "correct.ipynb", "ada_smtp.ipynb")
        z.write(CORPUS / "smtp" / "partial.ipynb", "bo_smtp.ipynb")
    course.run("zip_collect", "smtp")
    for who in ("ada", "bo"):
        assert (course.root / "submitted" / who / "smtp" / "smtp.ipynb").is_file()

    # 5. Autograde every submission: plain nbgrader first, then in sandboxes (which counts).
    expected = json.loads((CORPUS / "expected.json").read_text())["smtp"]
    wanted = {"ada": expected["correct"]["score"], "bo": expected["partial"]["score"]}
    course.run("autograde", "smtp", timeout=600)
    plain = {who: course.grades("smtp", who) for who in wanted}
    done = subprocess.run([sys.executable, "-m", "maillab", "grade", "smtp"], cwd=course.root,
                          env=nbgrader_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for who, score in wanted.items():
        sealed = course.grades("smtp", who)
        assert sealed == plain[who], who  # honest work: the same grade, part by part
        assert sum(v or 0 for v in sealed.values()) == score

    # 6. The written answer, graded by hand (what the formgrader does).
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course.root / 'gradebook.db'}") as gb:
        for who, points in (("ada", 10), ("bo", 4)):
            grade = gb.find_grade("why_auth", "smtp", "smtp", who)
            grade.manual_score = points
        gb.db.commit()

    # 7. Feedback and the CSV for the LMS.
    course.run("generate_feedback", "smtp")
    html = (course.root / "feedback" / "ada" / "smtp" / "smtp.html").read_text()
    assert "100" in html and "why_auth" in html
    course.run("export")
    with open(course.root / "grades.csv") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f) if r["assignment"] == "smtp"}
    assert float(rows["ada"]["score"]) == 100 and float(rows["ada"]["max_score"]) == 100
    assert float(rows["bo"]["score"]) == expected["partial"]["score"] + 4
