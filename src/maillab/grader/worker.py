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
        self.config = self._config()
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

    def _config(self):
        from nbconvert.preprocessors import ClearMetadataPreprocessor
        from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata,
                                            IgnorePattern, LimitOutput, SaveAutoGrades)
        from traitlets.config import Config
        from traitlets.config.loader import PyFileConfigLoader

        from .execute import SealedExecute, SealedVerdicts
        config = Config()
        if (self.course / "nbgrader_config.py").exists():
            config = PyFileConfigLoader("nbgrader_config.py", path=str(self.course)).load_config()
        config.CourseDirectory.root = str(self.course)
        config.BaseConverter.force = True
        config.Autograde.autograde_preprocessors = [
            SealedExecute, SealedVerdicts, IgnorePattern, ClearMetadataPreprocessor,
            LimitOutput, SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]
        return config

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


if __name__ == "__main__":
    sys.exit(main())
