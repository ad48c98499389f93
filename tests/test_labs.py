"""The graded labs: shape, freshness, and nbgrader validate.

* Every master in solutions/ is what solutions/make_masters.py builds (hidden tests start with
  `_g = grading.fresh(lab)`).
* labs/ is exactly what `nbgrader generate_assignment` makes from solutions/ (a stale student
  version fails here).
* Every lab: 100 points, at least six autograded code parts with visible and hidden tests,
  autograded concept checks, one manually graded written answer, a locked setup cell that
  starts the lab on free ports with socket and cell time limits, no outputs.
* Every master passes `nbgrader validate`; every student version fails it (honestly: each
  graded test cell fails, none passes by accident).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import nbformat
import pytest

from labcourse import LABS, ROOT, Course, nbgrader_env

sys.path.insert(0, str(ROOT / "solutions"))
import make_masters  # noqa: E402


def master(lab):
    return nbformat.read(ROOT / "solutions" / lab / f"{lab}.ipynb", 4)


def student(lab):
    return nbformat.read(ROOT / "labs" / lab / f"{lab}.ipynb", 4)


def meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


# ------------------------------------------------------------------ freshness
def test_masters_are_built_from_the_lab_sources_and_the_current_grading_module():
    result = subprocess.run([sys.executable, str(ROOT / "solutions" / "make_masters.py"),
                             "--check"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    course = Course(tmp_path_factory.mktemp("fresh"))
    return course, {lab: course.generate(lab) for lab in LABS}


@pytest.mark.parametrize("lab", LABS)
def test_student_version_in_labs_is_not_stale(generated, lab):
    _course, paths = generated
    fresh = json.loads(paths[lab].read_text())
    committed = json.loads((ROOT / "labs" / lab / f"{lab}.ipynb").read_text())
    assert committed == fresh, (f"labs/{lab} is stale: run `nbgrader generate_assignment {lab} "
                                "--force` at the top level (docs/instructor.md)")


# ------------------------------------------------------------------ shape
@pytest.mark.parametrize("lab", LABS)
def test_lab_shape(lab):
    nb = master(lab)
    tests = [c for c in nb.cells if meta(c).get("grade") and c.cell_type == "code"]
    written = [c for c in nb.cells if meta(c).get("grade") and c.cell_type == "markdown"]
    assert sum(meta(c)["points"] for c in tests + written) == 100
    assert len(written) == 1 and meta(written[0])["solution"]
    assert len(tests) >= 7  # at least six code parts plus concept checks
    for cell in tests:
        assert "### BEGIN HIDDEN TESTS" in cell.source and meta(cell)["locked"]
        visible = cell.source.split("### BEGIN HIDDEN TESTS")[0]
        assert "assert" in visible, f"{meta(cell)['grade_id']} has no visible test"
        hidden = cell.source.split("### BEGIN HIDDEN TESTS")[1]
        assert hidden.lstrip("\n").startswith(make_masters.FRESH)
    concept = [c for c in tests if "ports" in meta(c)["grade_id"] or "concepts" in
               meta(c)["grade_id"] or "codes" in meta(c)["grade_id"] or "steps" in meta(c)["grade_id"]]
    assert concept, "no concept check"
    setup = nb.cells[[meta(c).get("grade_id") for c in nb.cells].index("setup")]
    assert meta(setup)["locked"] and not meta(setup)["grade"]
    assert 'maillab.start(ports="any"' in setup.source
    assert "socket.setdefaulttimeout(" in setup.source and "grading.prepare(lab)" in setup.source
    code_parts = [c for c in nb.cells if meta(c).get("solution") and c.cell_type == "code"
                  and "def " in c.source]
    assert len(code_parts) >= 6
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None
        assert len(cell.source.splitlines()) <= 80


@pytest.mark.parametrize("lab", LABS)
def test_student_version_hides_solutions_and_hidden_tests(lab):
    nb = student(lab)
    text = "\n".join(c.source for c in nb.cells)
    assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
    assert "grading.fresh" not in text
    assert text.count("raise NotImplementedError()") >= 6
    assert "YOUR ANSWER HERE" in text


def test_nbgrader_config_maps_the_folders_and_limits_cell_time():
    from traitlets.config.loader import PyFileConfigLoader

    cfg = PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config()
    cd = cfg.CourseDirectory
    assert (cd.source_directory, cd.release_directory) == ("solutions", "labs")
    assert cd.solution_directory not in ("solution", "solutions")
    assert 0 < cfg.Execute.timeout <= 60 and cfg.Execute.interrupt_on_timeout
    assert cfg.OverwriteCells.add_missing_cells is True
    names = [p.__name__ for p in cfg.Autograde.autograde_preprocessors]
    assert names[0] == "RobustExecute" and "SaveAutoGrades" in names
    assert "RobustOverwriteCells" in [p.__name__ for p in cfg.Autograde.sanitize_preprocessors]


# ------------------------------------------------------------------ nbgrader validate
def _validate(path) -> str:
    result = subprocess.run([sys.executable, "-m", "nbgrader", "validate", str(path)],
                            cwd=ROOT, env=nbgrader_env(), capture_output=True, text=True,
                            timeout=300)
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def validations():
    jobs = [(kind, lab) for lab in LABS for kind in ("solutions", "labs")]
    with ThreadPoolExecutor(max_workers=2) as pool:
        outs = pool.map(lambda job: _validate(ROOT / job[0] / job[1] / f"{job[1]}.ipynb"), jobs)
        return dict(zip(jobs, outs))


@pytest.mark.parametrize("lab", LABS)
def test_master_passes_validate(validations, lab):
    out = validations[("solutions", lab)]
    assert "Success! Your notebook passes all the tests." in out, out[-3000:]


@pytest.mark.parametrize("lab", LABS)
def test_student_version_fails_validate_in_every_test(validations, lab):
    out = validations[("labs", lab)]
    tests = [c for c in student(lab).cells if meta(c).get("grade") and c.cell_type == "code"]
    m = re.search(r"VALIDATION FAILED ON (\d+) CELL", out)
    assert m, out[-3000:]
    # every autograded test fails, plus the unanswered solution cells (NotImplementedError)
    assert int(m.group(1)) >= len(tests), out[-3000:]
    assert "NotImplementedError" in out


# ------------------------------------------------------------------ concept checks
# Answers a pupil may well write that the hidden test refuses (a number for a digit in quotes,
# lower case for a name in capitals): the visible test must refuse them too, with a message,
# or the pupil sees a pass and loses the points unwarned.
TRAPS = {
    ("smtp", "codes"): [{"FIRST_DIGIT_OK": 2}, {"READY": "220"}],
    ("smtp", "ports"): [{"SENDING_PROTOCOL": "smtp"}, {"SMTP_PORT": "25"}],
    ("pop3", "concepts"): [{"KEEPS_MAIL": "imap"}, {"DELETES_IN": "update"}, {"POP3_PORT": "110"}],
    ("imap", "concepts"): [{"NEVER_CHANGES": "uid"}, {"NEVER_CHANGES": "Uid"},
                           {"NEEDS_MORE_DISK": "imap"}],
    ("journey", "steps"): [{"SERVER_TO_READER": {"pop3", "imap"}}, {"CLIENT_TO_OWN_SERVER": "smtp"},
                           {"NEEDS_LOGIN": {"Submit", "read"}}],
    ("journey", "ports"): [{"DNS_RECORD": "mx"}, {"DNS_RECORD": "Mx"}, {"DNS_RECORD": " MX"}],
}


def _concept_cells(lab: str, part: str) -> tuple[str, str, str]:
    """The solution cell of a concept part, and its test cell's visible and hidden parts."""
    cells = {meta(c).get("grade_id"): c.source for c in master(lab).cells}
    visible, _marker, hidden = cells[f"{part}_tests"].partition("### BEGIN HIDDEN TESTS")
    hidden = hidden.replace(make_masters.FRESH, "")  # a concept check needs no lab
    return cells[part], visible, hidden


@pytest.mark.parametrize("lab,part", list(TRAPS), ids=["-".join(k) for k in TRAPS])
def test_a_concept_answer_the_hidden_test_refuses_is_refused_visibly(lab, part):
    from maillab.i18n import _
    solution, visible, hidden = _concept_cells(lab, part)
    right = {"_": _}
    exec(solution, right)
    for check in (visible, hidden):
        exec(check, dict(right))  # the model answers pass both
    for trap in TRAPS[lab, part]:
        answers = dict(right, **trap)
        with pytest.raises(AssertionError):
            exec(hidden, dict(answers))  # a real trap: the hidden test takes the points
        with pytest.raises(AssertionError) as refused:
            exec(visible, dict(answers))
        assert str(refused.value).strip(), f"{lab} {part} {trap}: refused without a message"


@pytest.mark.parametrize("lab", LABS)
def test_every_visible_assert_says_what_was_expected(lab):
    # A bare AssertionError tells a pupil nothing: each assert of a visible test carries a
    # message (plain strings and _() texts are translated for the Greek lab).
    import ast
    bare = []
    for cell in master(lab).cells:
        if cell.cell_type == "code" and meta(cell).get("grade"):
            visible = cell.source.split("### BEGIN HIDDEN TESTS")[0]
            for node in ast.walk(ast.parse(visible)):
                if isinstance(node, ast.Assert) and node.msg is None:
                    bare.append(f"{meta(cell)['grade_id']}: {ast.get_source_segment(visible, node)}")
    assert not bare, "\n".join(bare)
