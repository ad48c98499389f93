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
