"""Every course notebook runs from top to bottom; committed notebooks carry no outputs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
COURSE_NOTEBOOKS = sorted((ROOT / "course").rglob("*.ipynb"))
NOT_COMMITTED = {".venv", ".ipynb_checkpoints", "submitted", "autograded", "feedback",
                 "test-artifacts"}


def committed_notebooks() -> list[Path]:
    """Notebooks tracked by git; without git, every notebook outside working folders."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "*.ipynb"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout
        return sorted(ROOT / name for name in listed.split("\0") if name)
    except (OSError, subprocess.CalledProcessError):
        return sorted(path for path in ROOT.rglob("*.ipynb")
                      if not NOT_COMMITTED & set(path.relative_to(ROOT).parts))


def name(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", committed_notebooks(), ids=name)
def test_committed_notebook_has_no_outputs(path):
    # Learners and nbgrader start from clean notebooks; outputs also bloat diffs.
    # Clear them with: jupyter nbconvert --clear-output --inplace NOTEBOOK
    notebook = nbformat.read(path, as_version=4)
    dirty = [index for index, cell in enumerate(notebook.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"{name(path)}: cells {dirty} have outputs or execution counts"


@pytest.mark.parametrize("path", COURSE_NOTEBOOKS, ids=name)
def test_course_notebook_runs(path):
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=60, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError, naming the cell, on the first error


def test_there_is_a_course():
    assert ROOT / "course" / "00-welcome.ipynb" in COURSE_NOTEBOOKS


def run_cells(path: Path, cells: list) -> list:
    """Run these cells (changed copies of a notebook's) in a kernel; the cells with outputs."""
    notebook = nbformat.read(path, as_version=4)
    notebook.cells = cells
    client = NotebookClient(notebook, timeout=60, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    return notebook.cells


def shown(cell) -> str:
    """Everything a cell showed, as plain text."""
    texts = []
    for output in cell.outputs:
        texts.append(output.get("text", ""))
        texts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(texts)


@pytest.mark.parametrize("lang", ["en", "el"])
def test_pop3_console_left_logged_in_is_named_and_nothing_is_called_right(lang):
    # A pupil stopped typing in the console after DELE 1 (no QUIT): the mailbox stays locked,
    # so the later sessions as John get -ERR [IN-USE]. The session cells must say why, and the
    # check after "Nothing is deleted without QUIT" must not call a prediction right for a
    # session that never logged in.
    path = ROOT / "course" / ("el/" if lang == "el" else "") / "02-pop3.ipynb"
    notebook = nbformat.read(path, as_version=4)
    ids = [cell.id for cell in notebook.cells]
    cells = notebook.cells[:ids.index("02-25") + 1]
    for cell in cells:
        if cell.id == "02-23":
            cell.source = cell.source.replace("my_guess = ...", 'my_guess = "yes"')
    logged_in = nbformat.v4.new_code_cell('console.send("USER john")\n'
                                          'console.send("PASS postman")\n'
                                          'console.send("DELE 1")')
    cells.insert(ids.index("02-11") + 1, logged_in)
    ran = {cell.get("id"): cell for cell in run_cells(path, cells)}
    in_use = {"en": "Another session is still logged in to this mailbox, perhaps the console",
              "el": "κονσόλα πιο πάνω"}[lang]
    assert "-ERR [IN-USE]" in shown(ran["02-24"]) and in_use in shown(ran["02-24"])
    check = shown(ran["02-25"])
    nothing = {"en": "The session above marked nothing", "el": "δεν σημείωσε τίποτα"}[lang]
    right = {"en": "right", "el": "σωστά"}[lang]
    assert nothing in check and right not in check, check


@pytest.mark.parametrize("notebook, skipped, check", [
    ("01-smtp", "01-16", "01-17"), ("02-pop3", "02-07", "02-08"), ("03-imap", "03-10", "03-11"),
    ("05-webmail", "05-11", "05-12")])
def test_a_check_run_before_its_experiment_says_so(notebook, skipped, check):
    # A pupil runs the reveal cell before the session it reads (or never ran the session): a
    # line saying what to run, not a StopIteration or IndexError traceback
    path = ROOT / "course" / f"{notebook}.ipynb"
    cells = nbformat.read(path, as_version=4).cells
    ids = [cell.id for cell in cells]
    kept = [cell for cell in cells[:ids.index(check) + 1] if cell.id != skipped]
    ran = {cell.get("id"): cell for cell in run_cells(path, kept)}
    assert "Nothing to compare with yet: run the cell above first" in shown(ran[check])


def test_the_pop3s_session_has_mail_to_list():
    # "Add LIST before QUIT": the mailbox of the POP3S session must hold mail to list
    path = ROOT / "course" / "02-pop3.ipynb"
    cells = nbformat.read(path, as_version=4).cells
    ids = [cell.id for cell in cells]
    kept = cells[:ids.index("02-33") + 1]
    for cell in kept:
        if cell.id == "02-33":
            cell.source = cell.source.replace("STAT", "LIST")
    ran = {cell.get("id"): cell for cell in run_cells(path, kept)}
    listing = shown(ran["02-33"])
    assert "+OK 0 messages" not in listing and "S: 1 " in listing, listing
