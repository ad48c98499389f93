"""One grading worker: ``python -m maillab.grader.worker`` (started by ``maillab grade``).

A worker grades one submission at a time with nbgrader's own Autograde converter, in this
process (nbgrader starts once per worker, not once per student), with the two sealed
preprocessors of :mod:`maillab.grader.execute`. It reads ``{"lab": ..., "student": ...}``
lines on stdin and answers each with one line of JSON on its original stdout (the report of
that submission); nbgrader's log goes to stderr.

With sandboxes, the first thing a worker does, while it still has one thread, is to move into
network and mount namespaces of its own (:func:`maillab.grader.sandbox.isolate_worker`): its
sealed labs, the sandboxes it starts and their evidence are then out of reach of every other
process on the machine, other workers included.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import threading
import time
import traceback
from pathlib import Path


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m maillab.grader.worker")
    parser.add_argument("--course", required=True)
    parser.add_argument("--uid", type=int, required=True)
    parser.add_argument("--private", required=True, help="this worker's own folder")
    parser.add_argument("--no-sandbox", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    private = Path(args.private)
    if not args.no_sandbox:
        from .sandbox import isolate_worker
        isolate_worker(private)  # before any thread exists
    else:
        private.mkdir(parents=True, exist_ok=True)
    reports = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # nbgrader and everything else print to stderr
    # nbgrader logs through traitlets' logger, which outside an nbgrader app has no handler:
    # without one, why a submission failed ("see the above traceback") reached no log at all
    logging.basicConfig(level=logging.WARNING, format="[%(name)s | %(levelname)s] %(message)s")
    worker = Worker(Path(args.course), args.uid, private, not args.no_sandbox)
    reports.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        job = json.loads(line)
        reports.write(json.dumps(worker.grade(job["lab"], job["student"])) + "\n")
    return 0


class Worker:
    def __init__(self, course: Path, uid: int, private: Path, sandboxed: bool):
        import socket

        from nbgrader.coursedir import CourseDirectory  # noqa: F401 (imported once, here)

        from .sandbox import Sandbox, Unsandboxed, python_folders
        self.course, self.uid, self.private = course, uid, private
        self.sandboxed = sandboxed
        self.readable = python_folders()
        self.sandbox_class = Sandbox if sandboxed else Unsandboxed
        self._speed_up_nbgrader()
        self.config = nbgrader_config(course)
        self.count = 0
        socket.setdefaulttimeout(None)

    @staticmethod
    def _speed_up_nbgrader() -> None:
        """nbgrader checks every cell's metadata with ``jsonschema.validate``, which checks the
        schema itself again each time (a third of a second a submission): check it once."""
        import types

        import jsonschema
        from nbgrader.nbgraderformat import common

        validators: dict[int, tuple] = {}

        def validate(instance, schema, *args, **kwargs):
            if id(schema) not in validators:
                cls = jsonschema.validators.validator_for(schema)
                cls.check_schema(schema)
                validators[id(schema)] = (schema, cls(schema))
            error = jsonschema.exceptions.best_match(validators[id(schema)][1].iter_errors(instance))
            if error is not None:
                raise error
        common.jsonschema = types.SimpleNamespace(validate=validate,
                                                  ValidationError=jsonschema.ValidationError)

    def make_sandbox(self, control: Path, phase: str = "phase1"):
        """The sandbox of one phase: the notebook's kernel (``phase1``, user id ``uid``) or the
        answer process (``phase2``, ``uid + 1``), so that the two run side by side apart."""
        uid = self.uid + (1 if phase == "phase2" else 0)
        return self.sandbox_class(uid, control, self.readable)

    def grade(self, lab: str, student: str) -> dict:
        from nbgrader.converters import Autograde
        from nbgrader.coursedir import CourseDirectory

        from . import execute
        self.count += 1
        # nbgrader's lines name no student: this one says whose submission the next ones are about
        print(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {lab}: {student} "
              f"(submission {self.count} of this worker) ====", file=sys.stderr, flush=True)
        folder = self.private / f"submission-{self.count}"
        folder.mkdir(mode=0o700)
        sub = execute.Submission(student, folder, self.make_sandbox)
        sub.report.update(student=student, lab=lab, sandbox=self.sandboxed)
        start = time.monotonic()
        execute.CURRENT = sub
        try:
            coursedir = CourseDirectory(config=self.config)
            coursedir.assignment_id = lab
            coursedir.student_id = student
            Autograde(coursedir=coursedir, config=self.config).start()
        except BaseException as e:  # nbgrader's own refusal (no such assignment, ...)
            sub.report["error"] = f"{type(e).__name__}: {e}"[:500]
            sub.report["traceback"] = traceback.format_exc()[-3000:]
        finally:
            execute.CURRENT = None
            for phase in ("phase1", "phase2"):
                self.make_sandbox(folder, phase).kill_all()
            # The labs stop and their stores go while the next submission starts.
            threading.Thread(target=self._clean_up, args=(sub, folder), daemon=True).start()
        sub.report["seconds"] = round(time.monotonic() - start, 2)
        sub.report.update(self.scores(lab, student))
        try:
            sub.report["submitted_notebook"] = submitted_notebook(self.config, lab, student)
        except Exception:  # for the teacher's report only: it must not cost the grade
            logging.getLogger(__name__).warning("comparing %s's notebook with the handout "
                                                "failed", student, exc_info=True)
        return sub.report

    @staticmethod
    def _clean_up(sub, folder: Path) -> None:
        for part in (sub.checks, sub.phase1):
            if part is not None:
                try:
                    part.close()
                except Exception:
                    pass
        shutil.rmtree(folder, ignore_errors=True)

    def scores(self, lab: str, student: str) -> dict:
        """The autograded score nbgrader wrote in the gradebook (the one the CSV shows)."""
        from nbgrader.api import Gradebook, MissingEntry
        from nbgrader.coursedir import CourseDirectory
        try:
            with Gradebook(CourseDirectory(config=self.config).db_url) as gb:
                sub = gb.find_submission(lab, student)
                return {"score": sub.code_score, "max_score": sub.max_code_score}
        except MissingEntry:
            return {"score": None, "max_score": None}


def nbgrader_config(course: Path):
    """nbgrader's configuration for autograding in ``course`` (its nbgrader_config.py), with
    the sealed preprocessors in place of nbgrader's execution."""
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, IgnorePattern,
                                        LimitOutput, SaveAutoGrades)
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    from .execute import SealedExecute, SealedVerdicts
    config = Config()
    if (course / "nbgrader_config.py").exists():
        config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    config.CourseDirectory.root = str(course)
    config.BaseConverter.force = True
    config.Autograde.autograde_preprocessors = [
        SealedExecute, SealedVerdicts, IgnorePattern, ClearMetadataPreprocessor,
        LimitOutput, SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]
    return config


# ---------------------------------------------------------------------- the submitted notebook

def submitted_notebook(config, lab: str, student: str) -> dict:
    """What the submitted notebook of ``student`` shows against the one handed out (the
    master's locked code cells in the gradebook, hidden tests taken out as nbgrader does):
    :func:`compare_with_handout`, over the lab's notebooks; {} if the lab is not in the
    gradebook. Read from ``submitted/``: nbgrader puts the handed-out cells back before
    anything runs, so only this copy still shows what the pupil changed."""
    from nbformat import read
    from nbgrader.api import Gradebook, MissingEntry
    from nbgrader.coursedir import CourseDirectory

    coursedir = CourseDirectory(config=config)
    folder = Path(coursedir.format_path(coursedir.submitted_directory, student, lab))
    found: dict[str, list] = {}
    try:
        with Gradebook(coursedir.db_url) as gb:
            for notebook in gb.find_assignment(lab).notebooks:
                try:
                    nb = read(folder / f"{notebook.name}.ipynb", as_version=4)
                except Exception:  # no such file, or not a notebook: nbgrader's error says so
                    continue
                for key, names in compare_with_handout(nb, *handout(notebook)).items():
                    found.setdefault(key, []).extend(names)
    except MissingEntry:
        return {}
    return found


def handout(notebook) -> tuple[dict[str, str], set[str]]:
    """A gradebook notebook's locked code cells as nbgrader hands them out (grade id ->
    source without the hidden tests), and which of them are test cells."""
    from ..grading import visible_source
    tests = {c.name for c in notebook.grade_cells} - {c.name for c in notebook.solution_cells}
    return ({c.name: visible_source(c.source) for c in notebook.source_cells
             if c.cell_type == "code" and (c.locked or c.name in tests)}, tests)


def compare_with_handout(nb, handed: dict[str, str], tests: set[str]) -> dict[str, list[str]]:
    """The locked code cells ``handed`` out (grade id -> source as this version of the lab
    hands it out) as the submitted notebook ``nb`` has them:

    * ``edited``: changed since they were handed out. nbgrader records in each cell the
      checksum of the cell as handed out (source and nbgrader flags), so this holds for a copy
      of an older version of the lab too; a cell without that record is compared with this
      version's source, whitespace aside.
    * ``other_version``: as handed out, but not as this version hands them out (the lab was
      generated again after the pupil got it). Then ``missing`` cannot be told apart from
      cells this version added, and stays empty.
    * ``missing``: not in the notebook.
    * ``saved_passing``: test cells (``tests``) of this version that the notebook saved as run
      without an error.

    In JupyterLab a pupil cannot edit or delete a locked cell; changing the file (or the cell's
    metadata) by other means can."""
    from nbgrader.utils import compute_checksum

    cells = {}
    for cell in nb.cells:
        about = cell.get("metadata", {}).get("nbgrader")
        if isinstance(about, dict):  # a pupil's notebook may hold anything
            cells.setdefault(about.get("grade_id"), cell)
    edited, other_version = [], []
    for gid, source in handed.items():
        cell = cells.get(gid)
        if cell is None:
            continue
        recorded = cell.metadata.nbgrader.get("checksum")
        try:
            changed = cell.get("cell_type") != "code" or (
                compute_checksum(cell) != recorded if recorded
                else _lines(cell.source) != _lines(source))
        except (KeyError, TypeError, ValueError):  # flags nbgrader needs were taken away
            changed = True
        if changed:
            edited.append(gid)
        elif _lines(cell.source) != _lines(source):
            other_version.append(gid)
    return {"edited": edited, "other_version": other_version,
            "missing": [] if other_version else [gid for gid in handed if gid not in cells],
            "saved_passing": [gid for gid in handed if gid in tests and gid in cells
                              and gid not in edited + other_version
                              and _ran_without_error(cells[gid])]}


def _lines(source: str) -> list[str]:
    return [line.rstrip() for line in source.strip().splitlines()]


def _ran_without_error(cell) -> bool:
    return cell.get("execution_count") is not None and \
        not any(o.get("output_type") == "error" for o in cell.get("outputs", []))


if __name__ == "__main__":
    sys.exit(main())
