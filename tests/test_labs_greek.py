"""The Greek labs (issue 12): each is an nbgrader assignment of its own, LAB-el, generated from
the English master and its catalog, graded by the same hidden tests.

* Every lab has a Greek master in solutions/LAB-el/ (python -m maillab.i18n build) and a Greek
  student version in labs/LAB-el/ that is what `nbgrader generate_assignment LAB-el` makes.
* With the real `nbgrader autograde`, the Greek master gets every automatic point and the Greek
  student version none: the same points as the English lab, cell for cell.
* The feedback a Greek learner reads is Greek: the setup cell starts the lab with lang="el".
"""

from __future__ import annotations

import json

import nbformat
import pytest

from labcourse import LABS, ROOT, Course

GREEK = [f"{lab}-el" for lab in LABS]


def points(nb) -> dict[str, float]:
    """grade_id -> points of every autograded test cell."""
    out = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution"):
            out[meta["grade_id"]] = float(meta.get("points", 0))
    return out


@pytest.mark.parametrize("lab", LABS)
def test_every_lab_has_a_greek_master_with_the_same_graded_cells(lab):
    english = nbformat.read(ROOT / "solutions" / lab / f"{lab}.ipynb", 4)
    greek_path = ROOT / "solutions" / f"{lab}-el" / f"{lab}-el.ipynb"
    assert greek_path.exists(), f"no Greek master: run python -m maillab.i18n build ({lab})"
    greek = nbformat.read(greek_path, 4)
    assert points(greek) == points(english)
    assert [c.id for c in greek.cells] == [c.id for c in english.cells]
    setup = next(c for c in greek.cells if "maillab.start(" in c.source)
    assert 'lang="el"' in setup.source


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = Course(tmp_path_factory.mktemp("greek"), GREEK)
    jobs = []
    for lab in GREEK:
        student_version = course.generate(lab)
        committed = ROOT / "labs" / lab / f"{lab}.ipynb"
        assert committed.exists(), f"labs/{lab} missing: nbgrader generate_assignment {lab}"
        assert json.loads(committed.read_text()) == json.loads(student_version.read_text()), \
            f"labs/{lab} is stale: nbgrader generate_assignment {lab} --force"
        course.submit(lab, "master", ROOT / "solutions" / lab / f"{lab}.ipynb")
        course.submit(lab, "student", student_version)
        jobs += [(lab, "master"), (lab, "student")]
    course.autograde_many(jobs, workers=2)
    return course


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("lab", GREEK)
def test_greek_master_gets_every_automatic_point_and_the_student_version_none(graded, lab):
    master = graded.grades(lab, "master")
    student = graded.grades(lab, "student")
    auto = {k: v for k, v in master.items() if v is not None}
    full = points(nbformat.read(ROOT / "solutions" / lab / f"{lab}.ipynb", 4))
    assert auto == {k: full[k] for k in auto}, graded.errors(lab, "master")
    assert sum(auto.values()) == sum(full.values())
    assert sum(v for v in student.values() if v is not None) == 0
