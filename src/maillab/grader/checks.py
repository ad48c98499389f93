"""The lab's test cells, run by the grader in its own process against the learner's answers.

Every autograded test cell of a master (its visible and its hidden tests, exactly as the
teacher wrote them) runs here, in a namespace where

* ``lab`` is a lab the grader started (its servers, store and transcripts are the grader's),
* ``grading`` (and ``_g``) is maillab.grading as installed, not the notebook's copy,
* modules the given cells import (``socket``, ``base64``, ...) are the grader's own,
* every other name the notebook's code defined is the learner's: functions and classes are
  called in the answer process (:mod:`maillab.grader.learner`), plain values (the port
  numbers of a concept part) arrive as data, anything else as a handle that equals nothing.

So a test passes only if the learner's functions, called in a fresh interpreter, did the work:
the servers saw it and stored it, and the values they returned are genuine built-in values
equal to what the test expects. Nothing the notebook's kernel did can change that.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import socket
import sys
import time
import types
from dataclasses import dataclass, field

from ..i18n import _
from .codec import CodecError
from .learner import (AnswerProcess, Handle, LearnerException, LearnerFunction, LearnerStopped,
                      LearnerTimeout)

TEST_BUDGET = 30.0  # seconds one test cell may take in all (each call of the learner's code: 8)
PROTECTED = {"lab", "grading", "_g"}


@dataclass
class Verdict:
    """The grader's verdict on one test cell."""

    grade_id: str
    passed: bool
    kind: str = ""  # the name of what went wrong: AssertionError, NameError, TimeLimit, ...
    message: str = ""  # for the learner: what failed and why (never the test's source)
    notes: list[str] = field(default_factory=list)  # for the teacher's report
    seconds: float = 0.0


def trusted_grading(run: "TestRun") -> types.ModuleType:
    """maillab.grading as the grader's tests see it: the installed module, whose ``fresh`` needs
    no checking (nothing of the learner's runs in this process) and whose ``during`` reads the
    notebook run's evidence."""
    from .. import grading
    module = types.ModuleType("maillab.grading")
    module.__dict__.update({k: v for k, v in vars(grading).items() if not k.startswith("__")})
    module.fresh = lambda lab: module
    module.during = run.during
    return module


def explain_learner_error(error: BaseException, text: str) -> str:
    """The learner's error as the feedback shows it: a timeout gets the hint that a command
    without its line end leaves both sides waiting; a NotImplementedError from a function the
    learner has not written yet names it, as the notebook's kernel does."""
    from ..grading import timeout_hint, unwritten_message
    if isinstance(error, TimeoutError):
        return f"{text} ({timeout_hint()})"
    unwritten = getattr(error, "unwritten", None)
    if isinstance(error, NotImplementedError) and unwritten:
        return unwritten_message(unwritten, text)
    return text


class TestRun:
    """One submission's test cells against one answer process and one lab."""

    def __init__(self, answers: AnswerProcess, lab, given_sources: list[str],
                 notebook_run=None, budget: float = TEST_BUDGET):
        self.answers = answers
        self.budget = budget
        self.notebook_run = notebook_run  # phase-1 evidence for parts typed by hand
        self.current: str | None = None
        self.ns: dict = {"__name__": "__main__", "__builtins__": builtins}
        for source in given_sources:
            self._import_like(source)
        self.ns["lab"] = lab
        self.ns["grading"] = trusted_grading(self)
        self.bound: dict[str, object] = {}
        self.bound_generation: int | None = None  # of the answer process whose names are bound
        self.shared: dict[str, object] = dict(self.ns)  # what the learner's code has seen

    def _import_like(self, source: str) -> None:
        """The import statements of a given cell, run here: the grader's own modules."""
        try:
            tree = ast.parse(source)
        except SyntaxError:
            return
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                try:
                    exec(compile(ast.Module([node], []), "<given>", "exec"), self.ns)
                except Exception:
                    pass

    # ------------------------------------------------------------------ the learner's names
    def bind_learner_names(self) -> None:
        if self.bound_generation == self.answers.generation:
            return
        self.bound_generation = self.answers.generation
        for name, about in self.answers.names.items():
            if not isinstance(about, dict) or not self._may_bind(name):
                continue
            value = self._learner_value(name, about)
            if value is not None or about.get("kind") == "value":
                self.ns[name] = value
                self.bound[name] = value

    def _may_bind(self, name: str) -> bool:
        if name.startswith("__") or name in PROTECTED or hasattr(builtins, name):
            return False
        # a name a test cell assigned itself stays the test's
        return name not in self.ns or (name in self.bound and self.ns[name] is self.bound[name])

    def _learner_value(self, name: str, about: dict):
        from .codec import decode
        kind = about.get("kind")
        if kind == "callable":
            return LearnerFunction(self.answers, name)
        if kind == "exception":
            mro = about.get("mro") or [["?", name]]
            return self.answers.standin(str(mro[0][0]), str(mro[0][1]))
        if kind == "value":
            try:
                return decode(about.get("value"))
            except CodecError:
                return None
        if kind == "object":
            return Handle(self.answers, int(about.get("$h", 0)), str(about.get("type", "?")),
                          self.answers.generation)
        if kind == "module" and about.get("module") == name and name in sys.stdlib_module_names:
            return __import__(name)
        return None

    def share_values(self) -> None:
        """Plain values a test cell defined become visible to the learner's code too, as in a
        kernel (``msg`` of one test used by a learner's later cell, say)."""
        for name, value in list(self.ns.items()):
            if name.startswith("_") or name in PROTECTED or self.shared.get(name) is value \
                    or self.bound.get(name) is value:
                continue
            self.shared[name] = value
            try:
                self.answers.set_value(name, value)
            except (CodecError, LearnerException):  # not data (a helper function), or refused
                pass

    # ------------------------------------------------------------------ running tests
    def during(self, lab=None, cell=None):
        if self.notebook_run is None:
            raise RuntimeError("no notebook run to read typed sessions from")
        return self.notebook_run.during(cell, before=self.current)

    def run(self, grade_id: str, source: str) -> Verdict:
        self.current = grade_id
        start = time.monotonic()
        verdict = Verdict(grade_id, False)
        saved_timeout = socket.getdefaulttimeout()
        try:
            self.answers.ensure_loaded()  # with no deadline: the last run cleared its own
            self.bind_learner_names()
            self.answers.deadline = start + self.budget
            code = compile(source, f"<{grade_id}>", "exec")
            socket.setdefaulttimeout(3.0)  # as the setup cell does for the notebook's tests
            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                exec(code, self.ns)
            verdict.passed = True
        except LearnerStopped as e:
            verdict.kind = "TimeLimit" if isinstance(e, LearnerTimeout) else "ProcessEnded"
            verdict.message = str(e)
            verdict.notes.append(f"{grade_id}: {e}")
        except AssertionError as e:
            verdict.kind = "AssertionError"
            verdict.message = str(e) or _("a check of this part failed")
        except LearnerException as e:
            verdict.kind = type(e).__name__
            verdict.message = explain_learner_error(e, e.learner_text)
        except Exception as e:
            verdict.kind, verdict.message = type(e).__name__, str(e)
        finally:
            socket.setdefaulttimeout(saved_timeout)
            self.answers.deadline = None
        verdict.seconds = time.monotonic() - start
        if self.answers.alive:
            try:
                self.share_values()
            except LearnerStopped:
                pass
        return verdict
