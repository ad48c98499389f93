"""A throw-away nbgrader course around this repository's labs, for tests and benchmarks.

A temporary folder gets the repository's nbgrader_config.py and the masters of the chosen labs;
nbgrader runs there for real (`python -m nbgrader ...`), with a kernel that imports this
checkout's maillab.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LABS = ["smtp", "pop3", "imap", "journey", "web-and-security"]


def nbgrader_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env.pop("NBGRADER_EXECUTION", None)
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return env


class Course:
    def __init__(self, root: Path, labs=LABS, *, python: str = sys.executable):
        self.root = Path(root)
        self.python = python
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "nbgrader_config.py", self.root / "nbgrader_config.py")
        for lab in labs:
            shutil.copytree(ROOT / "solutions" / lab, self.root / "solutions" / lab,
                            dirs_exist_ok=True)

    def run(self, *args: str, timeout: float = 600, check: bool = True
            ) -> subprocess.CompletedProcess:
        result = subprocess.run([self.python, "-m", "nbgrader", *args], cwd=self.root,
                                env=nbgrader_env(), capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode:
            raise AssertionError(f"nbgrader {' '.join(args)} failed ({result.returncode}):\n"
                                 + result.stdout[-3000:] + result.stderr[-6000:])
        return result

    def generate(self, lab: str) -> Path:
        self.run("generate_assignment", lab, "--force")
        return self.root / "labs" / lab / f"{lab}.ipynb"

    def submit(self, lab: str, student: str, notebook: Path) -> None:
        dest = self.root / "submitted" / student / lab
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(notebook, dest / f"{lab}.ipynb")

    def autograde(self, lab: str, student: str, timeout: float = 300) -> tuple[float, str]:
        """Autograde one submission; (seconds taken, nbgrader's log)."""
        start = time.perf_counter()
        result = self.run("autograde", lab, "--student", student, "--force", timeout=timeout,
                          check=False)
        seconds = time.perf_counter() - start
        log = result.stdout + result.stderr
        if result.returncode:
            raise AssertionError(f"autograde {lab}/{student} failed ({result.returncode}):\n"
                                 + log[-6000:])
        return seconds, log

    def autograde_many(self, jobs: list[tuple[str, str]], workers: int = 2
                       ) -> dict[tuple[str, str], tuple[float, str]]:
        """Several `nbgrader autograde --student X` at once against one gradebook (facts.md)."""
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {job: pool.submit(self.autograde, *job) for job in jobs}
            return {job: f.result() for job, f in futures.items()}

    def grades(self, lab: str, student: str) -> dict[str, float | None]:
        """grade_id -> auto score of one autograded submission (None: manually graded)."""
        from nbgrader.api import Gradebook

        with Gradebook(f"sqlite:///{self.root / 'gradebook.db'}") as gb:
            sub = gb.find_submission_notebook(lab, lab, student)
            return {g.name: g.auto_score for g in sub.grades}

    def errors(self, lab: str, student: str) -> dict[str, str]:
        """grade_id (or cell index) -> the first error each cell of the autograded notebook shows."""
        import nbformat

        nb = nbformat.read(self.root / "autograded" / student / lab / f"{lab}.ipynb", 4)
        out = {}
        for i, cell in enumerate(nb.cells):
            for o in cell.get("outputs", []):
                if o.get("output_type") == "error":
                    key = cell.metadata.get("nbgrader", {}).get("grade_id", f"cell{i}")
                    out.setdefault(key, f"{o.ename}: {o.evalue}"[:300])
        return out
