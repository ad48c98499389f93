"""nbgrader's autograde with sealed evidence: the two preprocessors ``maillab grade`` adds.

``SealedExecute`` (phase 1, the learner's feedback) runs the notebook as nbgrader would, but
in a sandboxed kernel (:mod:`maillab.grader.sandbox`) whose ``maillab.start()`` connects to a
lab the grader runs (:mod:`maillab.grader.sealed`). The hidden tests are taken out of the test
cells before the kernel sees them and put back afterwards. It records when each cell ran,
so that sessions a learner typed by hand can be attributed to the cell they were typed in.

``SealedVerdicts`` (phase 2, the grade) starts a fresh sealed lab and the learner's answer
process, runs every test cell in the grader's process (:mod:`maillab.grader.checks`) and
rewrites the test cells' outputs from those verdicts: nbgrader's own ``SaveAutoGrades`` then
scores them (an error output: no points). What the kernel printed stays for the learner,
except errors and stderr, which the verdict replaces.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from nbformat import NotebookNode
from nbgrader.api import Gradebook
from nbgrader.preprocessors import NbGraderPreprocessor

from .. import grading, i18n
from ..i18n import _
from .checks import TestRun, Verdict
from .learner import AnswerProcess
from .sandbox import Sandbox
from .sealed import SealedLab

PHASE1_BUDGET = 600.0  # seconds the learner's notebook may run in all (feedback only)
OUTPUT_LIMIT = 1 << 20  # bytes of output one cell may show (the rest is cut)
LAB_OPTIONS = ("tls", "strict", "size_limit")  # maillab.start() arguments the master may set
KILL_MARGIN = 2  # seconds after a cell's own limit and grace before its sandbox is ended

_robust = grading.nbgrader_preprocessors()


@dataclass
class Submission:
    """One student's submission while a worker grades it (what the preprocessors share)."""

    student: str
    private: Path  # the grader's own folder for this submission (stores of the sealed labs)
    make_sandbox: object  # (control folder, phase) -> Sandbox
    windows: list = field(default_factory=list)  # (cell index, grade id, cell id, start, end)
    phase1: SealedLab | None = None
    checks: "Checks | None" = None
    report: dict = field(default_factory=dict)

    def note(self, text: str) -> None:
        self.report.setdefault("odd", []).append(text)

    def control(self, phase: str) -> Path:
        folder = self.private / f"control-{phase}"
        folder.mkdir(mode=0o755, exist_ok=True)
        os.chmod(folder, 0o755)
        return folder


CURRENT: Submission | None = None  # set by the worker around each nbgrader run


# ---------------------------------------------------------------------- the master's cells

@dataclass
class MasterCells:
    given: dict[str, str]  # locked code cells (setup, helpers): grade id -> source
    tests: dict[str, tuple[str, float]]  # autograded test cells: grade id -> (source, points)

    @classmethod
    def from_gradebook(cls, resources: dict) -> "MasterCells":
        info = resources["nbgrader"]
        with Gradebook(info["db_url"]) as gb:
            nb = gb.find_notebook(info["notebook"], info["assignment"])
            grade = {c.name: c for c in nb.grade_cells}
            solution = {c.name for c in nb.solution_cells}
            given, tests = {}, {}
            for c in nb.source_cells:
                if c.cell_type != "code":
                    continue
                if c.name in grade and c.name not in solution:
                    tests[c.name] = (c.source, float(grade[c.name].max_score))
                elif c.locked and c.name not in grade:
                    given[c.name] = c.source
        return cls(given, tests)

    def _start_arguments(self) -> dict | None:
        """The constant keyword arguments of the given cells' maillab.start() call; None if no
        given cell starts a lab."""
        for source in self.given.values():
            try:
                tree = ast.parse(source)
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                name = getattr(node.func, "attr", getattr(node.func, "id", "")) \
                    if isinstance(node, ast.Call) else ""
                if name == "start":
                    out = {}
                    for kw in node.keywords:
                        try:
                            out[kw.arg] = ast.literal_eval(kw.value)
                        except ValueError:
                            pass
                    return out
        return None

    def lab_options(self) -> dict | None:
        """The keyword arguments the setup cell passes to maillab.start() (tls=False, ...);
        None if no given cell starts a lab (then the grader starts none either)."""
        found = self._start_arguments()
        return None if found is None else {k: v for k, v in found.items() if k in LAB_OPTIONS}

    def learner_language(self) -> str:
        """The language the lab speaks to its learner (``maillab.start(lang="el")`` in the setup
        cell): the grader's own messages in the feedback are made in it too."""
        lang = (self._start_arguments() or {}).get("lang")
        return lang if isinstance(lang, str) else "en"

    def answer_cells(self, nb) -> list[str]:
        """The code the answer process loads, in notebook order: the given cells as the
        master has them, and every other code cell but the tests (the learner's)."""
        given_sources = {s.strip() for s in self.given.values()}
        out = []
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            gid = cell.metadata.get("nbgrader", {}).get("grade_id")
            if gid in self.tests:
                continue
            if gid in self.given:
                out.append(self.given[gid])
            elif cell.source.strip() not in given_sources:  # a retyped given cell: once is enough
                out.append(cell.source)
        return out


def sealed_lab(sub: Submission, phase: str, master: MasterCells, sandbox: Sandbox,
               evidence: bool) -> SealedLab | None:
    """The lab the given setup cell asks for, run by the grader for this phase (none if the
    lab's notebook starts no lab)."""
    options = master.lab_options()
    if options is None:
        return None
    return SealedLab(sub.private / phase, sub.control(phase) / "lab.sock", options,
                     allow=[sandbox.uid], evidence=evidence)


def grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


# ---------------------------------------------------------------------- phase 1: the kernel

class SandboxedKernelManager(AsyncKernelManager):
    """A kernel that starts inside a sandbox; interrupts travel as messages (a signal to the
    sandbox's outer process would not reach the kernel inside its pid namespace)."""

    def __init__(self, sandbox: Sandbox, **kwargs):
        # random ports, new ones on a restart: children the old kernel forked may hold the old
        super().__init__(cache_ports=False, **kwargs)
        self.sandbox = sandbox
        self.connection_file = str(sandbox.control_dir / "kernel.json")
        self._kernel_spec = KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name="Python 3 (sandboxed)", language="python", interrupt_mode="message")

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        self.sandbox.kill_all()  # a restart: what is left of the old kernel holds its ports
        outside = {self.connection_file, os.path.realpath(self.connection_file)}
        inside = self.sandbox.visible_path(Path(self.connection_file))
        os.chmod(self.connection_file, 0o644)  # the sandbox's user reads it
        cmd = [inside if arg in outside else arg for arg in kernel_cmd]
        kw["env"] = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        kw["cwd"] = str(self.sandbox.control_dir)
        cmd = self.sandbox.command(cmd, env={"NBGRADER_EXECUTION": "autograde"})
        return await super()._async_launch_kernel(cmd, **kw)


class Checks:
    """Phase 2's lab and answer process, made ready in a thread while the notebook runs (they
    use a sandbox user of their own, so the two phases cannot touch each other).

    The thread lives until :meth:`close`: bwrap's ``--die-with-parent`` ends a sandbox when the
    *thread* that started it ends.
    """

    def __init__(self, sub: Submission, master: MasterCells, cells: list[str]):
        control = sub.control("phase2")
        self.sandbox = sub.make_sandbox(control, "phase2")
        self.sealed: SealedLab | None = None
        self.answers = AnswerProcess(cells, lambda fd: spawn_answers(self.sandbox, fd),
                                     after_call=lambda proc: self.sandbox.end_strays(proc.pid))
        self.error: BaseException | None = None
        self.prepared, self.finished = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._prepare, args=(sub, master),
                                       name="maillab-checks", daemon=True)
        self.thread.start()

    def _prepare(self, sub: Submission, master: MasterCells) -> None:
        try:
            self.sealed = sealed_lab(sub, "phase2", master, self.sandbox, evidence=False)
            self.answers.ensure_loaded()
        except BaseException as e:  # the tests will meet it again, and say so
            self.error = e
        finally:
            self.prepared.set()
        self.finished.wait()

    def ready(self) -> None:
        self.prepared.wait()
        if self.sealed is None and self.error is not None:
            raise self.error

    def close(self) -> None:
        """Stop the lab (the worker ends the sandbox's processes itself, before it moves on to
        the next submission, whose sandbox has the same user id)."""
        self.prepared.wait()
        self.finished.set()
        self.thread.join()
        self.answers.kill()
        if self.sealed is not None:
            self.sealed.stop()


class SealedExecute(_robust["RobustExecute"]):
    """RobustExecute in a sandboxed kernel against a sealed lab, without the hidden tests."""

    def preprocess(self, nb, resources=None, km=None):
        sub = CURRENT
        master = MasterCells.from_gradebook(resources)
        sub.checks = Checks(sub, master, master.answer_cells(nb))
        self.shutdown_kernel = "immediate"
        # The notebook's own limits stop a cell after CELL_LIMIT s and end the kernel GRACE s
        # later; code that defeats both (signals ignored, a fork bomb starving the watchdog)
        # gets its sandbox ended from here, at once, instead of an interrupt it would ignore.
        self.timeout = int(grading.CELL_LIMIT + grading.GRACE + KILL_MARGIN)
        self.interrupt_on_timeout = False
        self._budget_end = time.monotonic() + PHASE1_BUDGET
        self._output_bytes: dict[int, int] = {}
        self._strays_noted = False
        self._sandbox = sub.make_sandbox(sub.control("phase1"), "phase1")
        sub.phase1 = sealed_lab(sub, "phase1", master, self._sandbox, evidence=True)
        full = {}
        for i, cell in enumerate(nb.cells):
            if grading.is_test_cell(cell):
                full[i] = cell.source
                cell.source = grading.visible_source(cell.source)
        started = time.monotonic()
        try:
            return super().preprocess(nb, resources, km)
        except Exception as e:  # the grade comes from phase 2 whatever happened here
            self.log.warning("The notebook's run stopped early", exc_info=True)
            sub.note(f"the notebook's run stopped early: {type(e).__name__}: {e}"[:300])
            return nb, resources
        finally:
            for i, source in full.items():
                nb.cells[i].source = source
            self._sandbox.kill_all()
            sub.report["kernel_restarts"] = getattr(self, "_restarts", 0)
            sub.report["notebook_seconds"] = round(time.monotonic() - started, 2)

    def create_kernel_manager(self):
        self.km = SandboxedKernelManager(self._sandbox, config=self.config)
        return self.km

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or not cell.source.strip():
            # nothing runs: no window either (grading.during's "the code cell before the
            # test" must not find the learner's markdown between a typed session and its test)
            return super().preprocess_cell(cell, resources, index)
        if time.monotonic() > self._budget_end:
            cell.outputs = [_error("TimeLimit", _("not run: the notebook used up its time"))]
            return cell, resources
        start = time.time()
        try:
            return super().preprocess_cell(cell, resources, index)
        finally:
            CURRENT.windows.append((index, grade_id(cell), cell.get("id"), start, time.time()))
            pid = getattr(getattr(self.km, "provisioner", None), "pid", None)
            if pid and self._sandbox.end_strays(pid) and not self._strays_noted:
                self._strays_noted = True
                CURRENT.note(f"cell {index + 1} (and maybe later ones) left processes running; "
                             "they were ended")

    def output(self, outs, msg, display_id, cell_index):
        size = len(json.dumps(msg.get("content", {}), default=str))
        seen = self._output_bytes.get(cell_index, 0)
        self._output_bytes[cell_index] = seen + size
        if seen + size > OUTPUT_LIMIT:
            if seen <= OUTPUT_LIMIT:
                outs.append(NotebookNode(output_type="stream", name="stdout", text=_(
                    "\n[output cut: this cell printed more than {0} MB]\n").format(
                        OUTPUT_LIMIT >> 20)))
                CURRENT.note(f"cell {cell_index + 1} printed more than {OUTPUT_LIMIT >> 20} MB")
            return None
        return super().output(outs, msg, display_id, cell_index)


def _error(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=evalue,
                        traceback=[f"{ename}: {evalue}"])


# ---------------------------------------------------------------------- phase 2: the verdicts

class NotebookRun:
    """Phase 1's evidence for tests of sessions typed by hand (grading.during)."""

    def __init__(self, sealed: SealedLab | None, windows: list, nb):
        self.sealed, self.windows, self.nb = sealed, windows, nb

    def during(self, cell: str | None = None, *, before: str):
        """The evidence of the cell with this grade id or cell id (its last run), or by default
        of the code cell that ran last before the test cell ``before`` (a grade id)."""
        if self.sealed is None:
            raise RuntimeError("the notebook did not run")
        found = None
        if cell is None:  # the code cell right before the test that asks
            order = [grade_id(c) for c in self.nb.cells]
            limit = order.index(before) if before in order else len(order)
            found = max((w for w in self.windows if w[0] < limit), default=None,
                        key=lambda w: w[0])
        else:
            found = next((w for w in reversed(self.windows) if cell in (w[1], w[2])), None)
        if found is None:
            raise AssertionError(_("that cell did not run"))
        return grading.CellEvidence(self.sealed.lab, found[3], found[4])


class SealedVerdicts(NbGraderPreprocessor):
    """Phase 2: the test cells run in the grader against the learner's answer process."""

    def preprocess(self, nb, resources):
        sub = CURRENT
        master = MasterCells.from_gradebook(resources)
        if sub.checks is None:  # phase 1 did not run: made here, and closed by the worker
            sub.checks = Checks(sub, master, master.answer_cells(nb))
        checks = sub.checks
        answers = checks.answers
        parts = sub.report.setdefault("parts", {})
        started = time.monotonic()
        try:
            checks.ready()
            run = TestRun(answers, checks.sealed.lab if checks.sealed else None,
                          list(master.given.values()), NotebookRun(sub.phase1, sub.windows, nb))
            with i18n.language(master.learner_language()):  # feedback in the lab's language
                for cell in nb.cells:
                    gid = grade_id(cell)
                    if gid not in master.tests or cell.cell_type != "code":
                        continue
                    source, points = master.tests[gid]
                    verdict = run.run(gid, source)
                    parts[gid] = apply_verdict(cell, verdict, points)
        finally:
            checks.answers.kill()  # the labs are stopped by the worker, while it goes on
        sub.report["checks_seconds"] = round(time.monotonic() - started, 2)
        sub.report["loading"] = answers.events + [
            f"cell {c + 1}: {kind}: {text}"[:200] for c, _s, kind, text in answers.problems][:20]
        return nb, resources


def spawn_answers(sandbox: Sandbox, fd: int) -> subprocess.Popen:
    # a restart after a fork bomb: its children must be gone (reaped) before the new process
    # can start under the same user's process limit
    sandbox.kill_all(wait=10, reaped=True)
    cmd = sandbox.command([sys.executable, "-m", "maillab.grader.answers"],
                          env={"MAILLAB_ANSWERS_FD": str(fd)})
    return subprocess.Popen(cmd, pass_fds=[fd], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=str(sandbox.control_dir),
                            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})


def apply_verdict(cell, verdict: Verdict, points: float) -> dict:
    """The test cell's outputs after the verdict: what the kernel printed for the learner,
    errors only when the grader's check failed too, and the grader's reason last (unless the
    kernel's error said just that: the feedback would show the same line twice)."""
    kernel_failed = any(o.get("output_type") == "error" for o in cell.outputs)
    kept = []
    for o in cell.outputs:
        kind = o.get("output_type")
        if kind == "display_data" or (kind == "stream" and o.get("name") == "stdout") or \
                (kind == "error" and not verdict.passed):
            kept.append(o)
    said = {(o.get("ename"), o.get("evalue")) for o in kept if o.get("output_type") == "error"}
    if not verdict.passed and (verdict.kind, verdict.message) not in said:
        kept.append(_error(verdict.kind, verdict.message))
    cell.outputs = kept
    return {"points": points if verdict.passed else 0.0, "max": points,
            "passed": verdict.passed, "kernel_passed": not kernel_failed,
            "message": verdict.message, "notes": verdict.notes,
            "seconds": round(verdict.seconds, 2)}
