"""``python -m maillab grade LAB [LAB ...]``: autograde every collected submission of a lab.

Runs in the course folder (where ``nbgrader_config.py`` and ``gradebook.db`` are). Takes the
submissions nbgrader collected into ``submitted/<student>/<lab>/`` (``--collect zip`` runs
``nbgrader zip_collect`` first, ``--collect exchange`` runs ``nbgrader collect``), grades them
with N workers (:mod:`maillab.grader.worker`), each submission in sandboxes of its own, shows
progress, and writes the scores into the gradebook as ``nbgrader autograde`` does; the
formgrader, ``generate_feedback`` and ``export`` work on them as usual. The report (a table
here, all details in ``grade-reports/<lab>.json``) says per student the score, the time, which
parts the grader checked outside the notebook, and anything odd: a kernel that died, a cell
that would not stop, code that ended the answer process, locked cells changed in the submitted
notebook, a test its saved outputs show passing that failed when it ran here.

Run again with ``--collect``, it collects again (a later batch of zips too) and grades every
submission; with ``--student`` the report keeps the other students' entries.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUBMISSION_LIMIT = 1800.0  # seconds one submission may take before its worker is replaced
START_TRIES = 3  # workers in a row that end before they are ready: then none will start
CLOSE_WAIT = 30.0  # seconds a worker may take to end after its last submission
WORKER = [sys.executable, "-m", "maillab.grader.worker"]  # the worker program (a test's fake)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labs", nargs="+", metavar="lab",
                        help="the lab (nbgrader assignment) to grade, e.g. smtp; several labs "
                             "are graded in one batch")
    parser.add_argument("--workers", type=int, default=None,
                        help="submissions graded at once (default: one more than the number "
                             "of CPUs: a submission spends part of its time waiting)")
    parser.add_argument("--student", action="append", default=[],
                        help="grade only this student (may be repeated)")
    parser.add_argument("--collect", choices=["zip", "exchange"],
                        help="first run nbgrader zip_collect (LMS downloads) or nbgrader "
                             "collect (a JupyterHub exchange)")
    parser.add_argument("--course", default=".", help="the course folder (default: here)")
    parser.add_argument("--no-sandbox", action="store_true",
                        help="run learners' code as yourself, without isolation (only on a "
                             "machine you trust; the grader still checks outside the notebook)")
    parser.add_argument("--uid-base", type=int, default=None,
                        help="throwaway user ids for the sandboxes start here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from .sandbox import SandboxUnavailable, check_available, reserve_uids

    course = Path(args.course).resolve()
    if not args.no_sandbox:
        try:
            check_available()
        except SandboxUnavailable as e:
            print(f"maillab grade: {e}", file=sys.stderr)
            return 2
    labs = list(dict.fromkeys(args.labs))  # a lab or student named twice is graded once
    jobs: list[tuple[str, str]] = []
    for lab in labs:
        if args.collect:
            failed = collect(course, lab, args.collect)
            if failed:
                return failed
        students = args.student or submissions(course, lab)
        if not students:
            print(f"maillab grade: no submissions of {lab} in {course / 'submitted'}",
                  file=sys.stderr)
        jobs += [(lab, s) for s in dict.fromkeys(students)]
    if not jobs:
        return 1
    workers = worker_count(args.workers, len(jobs))
    try:  # user ids of this run alone (held until it ends)
        uid_base, uid_lock = reserve_uids(args.uid_base)
    except SandboxUnavailable as e:
        print(f"maillab grade: {e}", file=sys.stderr)
        return 2
    progress = Progress(len(jobs), quiet=args.quiet)
    pool = Pool(course, workers, uid_base, args.no_sandbox)
    start = time.monotonic()
    try:
        results = pool.grade(jobs, progress.done)
    except WorkerFailed as e:
        progress.finish()
        print(f"maillab grade: {e}", file=sys.stderr)
        return 2
    finally:
        pool.close()
        uid_lock.close()
    elapsed = time.monotonic() - start
    progress.finish()
    for lab in labs:
        mine = [r for r in results if r["lab"] == lab]
        report = {"lab": lab, "workers": workers, "seconds": round(elapsed, 1),
                  "sandbox": not args.no_sandbox, "submissions": mine}
        save_report(pool.reports / f"{lab}.json", report, some_students=bool(args.student))
        print(f"{lab}:")
        print(table(mine, f"grade-reports/{lab}.json"))
    print(f"{len(results)} submissions in {elapsed:.1f} s with {workers} workers; "
          f"details in grade-reports/")
    return 1 if any("error" in r for r in results) else 0


def collect(course: Path, lab: str, how: str) -> int:
    """``nbgrader zip_collect`` (``how`` "zip") or ``nbgrader collect`` ("exchange") of one lab;
    its exit status. zip_collect gets ``--force``: it unpacks every archive again into an
    emptied ``extracted/`` folder (without it, the run after a late zip stops at "Directory not
    empty"), so the zips of earlier batches and the new one are all collected. collect gets
    ``--update``: a pupil who submitted again is collected again (nbgrader keeps the first
    otherwise)."""
    step = ["zip_collect", lab, "--force"] if how == "zip" else ["collect", lab, "--update"]
    done = subprocess.run([sys.executable, "-m", "nbgrader", *step], cwd=course,
                          env=tool_environment())
    if done.returncode:
        print(f"maillab grade: nbgrader {step[0]} {lab} failed", file=sys.stderr)
    return done.returncode


def save_report(path: Path, report: dict, some_students: bool) -> None:
    """Write a lab's report. A run of ``some_students`` (``--student``) replaces only their
    entries in the report already there (the others' stay, in their order; a student new to it
    comes last); a whole batch's report replaces the file."""
    if some_students:
        try:
            earlier = json.loads(path.read_text())["submissions"]
        except (OSError, ValueError, KeyError, TypeError):
            earlier = None
        if not isinstance(earlier, list):  # none yet, or not one we can read: this run's alone
            earlier = []
        fresh = {r["student"]: r for r in report["submissions"]}
        merged = [fresh.pop(r.get("student"), r) for r in earlier if isinstance(r, dict)]
        report = {**report, "submissions": merged + list(fresh.values())}
    path.write_text(json.dumps(report, indent=1) + "\n")


def worker_count(requested: int | None, jobs: int) -> int:
    """Workers for ``jobs`` submissions: as requested (default: one more than the CPUs, as a
    submission spends part of its time waiting), never more than the submissions, at least 1."""
    return max(1, min(requested or (os.cpu_count() or 1) + 1, jobs))


def tool_environment() -> dict:
    """This environment, with this Python's scripts first on PATH (nbgrader runs alembic)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env


def submissions(course: Path, lab: str) -> list[str]:
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config() \
        if (course / "nbgrader_config.py").exists() else None
    coursedir = CourseDirectory(config=config) if config else CourseDirectory()
    coursedir.root = str(course)
    submitted = Path(coursedir.format_path(coursedir.submitted_directory, ".", "."))
    return sorted(p.parent.name for p in submitted.glob(f"*/{lab}") if p.is_dir())


class WorkerFailed(Exception):
    """The grading workers end before they are ready, again and again (what the last one said
    is in the message)."""


class Pool:
    """N worker processes; each takes the next student when it is done with one."""

    def __init__(self, course: Path, size: int, uid_base: int, unsandboxed: bool):
        self.course, self.uid_base, self.unsandboxed = course, uid_base, unsandboxed
        self.reports = course / "grade-reports"
        self.logs = self.reports / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.selector = selectors.DefaultSelector()
        self.workers: dict[int, dict] = {}
        self.failed_starts = 0  # workers in a row that ended before they were ready
        for index in range(size):
            self._start(index)

    def _start(self, index: int) -> None:
        private = Path(tempfile.mkdtemp(prefix=f"maillab-grade-{index}-"))
        cmd = [*WORKER, "--course", str(self.course),
               "--uid", str(self.uid_base + 2 * index), "--private", str(private)]
        if self.unsandboxed:
            cmd.append("--no-sandbox")
        log = open(self.logs / f"worker{index}.log", "a")
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                text=True, bufsize=1, start_new_session=True,
                                env=tool_environment())
        self.workers[index] = {"proc": proc, "private": private, "job": None, "since": 0.0,
                               "log": log, "ready": False}
        self.selector.register(proc.stdout, selectors.EVENT_READ, index)

    def _stop(self, index: int) -> None:
        w = self.workers.pop(index)
        self.selector.unregister(w["proc"].stdout)
        if w["proc"].poll() is None:
            try:
                os.killpg(w["proc"].pid, 9)
            except ProcessLookupError:
                pass
        w["proc"].wait()
        w["log"].close()
        shutil.rmtree(w["private"], ignore_errors=True)

    def grade(self, jobs: list[tuple[str, str]], done) -> list[dict]:
        """Grade (lab, student) jobs; their reports, in the same order."""
        queue = list(jobs)
        tries: dict[tuple, int] = {}
        results: dict[tuple, dict] = {}
        while len(results) < len(jobs):
            for index, w in list(self.workers.items()):
                if w["ready"] and w["job"] is None and queue:
                    job = queue.pop(0)
                    tries[job] = tries.get(job, 0) + 1
                    w["job"], w["since"] = job, time.monotonic()
                    w["proc"].stdin.write(json.dumps({"lab": job[0], "student": job[1]}) + "\n")
            for key, _ in self.selector.select(timeout=1.0):
                index = key.data
                w = self.workers[index]
                line = w["proc"].stdout.readline()
                if not line:  # the worker ended: replace it, grade its student again once
                    self._lost(index, queue, tries, results, done,
                               "the grading worker ended unexpectedly")
                    continue
                message = json.loads(line)
                if message.get("ready"):
                    w["ready"] = True
                    self.failed_starts = 0
                    continue
                results[(message["lab"], message["student"])] = message
                done(message)
                w["job"] = None
            for index, w in list(self.workers.items()):
                if w["job"] is not None and time.monotonic() - w["since"] > SUBMISSION_LIMIT:
                    self._lost(index, queue, tries, results, done,
                               f"grading took longer than {SUBMISSION_LIMIT:g} s")
        return [results[job] for job in jobs]

    def _lost(self, index, queue, tries, results, done, why: str) -> None:
        job, ready = self.workers[index]["job"], self.workers[index]["ready"]
        self._stop(index)
        if not ready:  # it could not start (no namespaces in a container, say): not forever
            self.failed_starts += 1
            if self.failed_starts >= START_TRIES:
                said = (self.logs / f"worker{index}.log").read_text(errors="replace").strip()
                raise WorkerFailed(f"the grading worker ended before it was ready, "
                                   f"{START_TRIES} times; its last words: "
                                   f"{said.splitlines()[-1] if said else '(none)'}")
        self._start(index)
        if job is None:
            return
        if tries[job] < 2:
            queue.insert(0, job)
        else:
            results[job] = {"lab": job[0], "student": job[1], "error": why,
                            "score": None, "max_score": None}
            done(results[job])

    def close(self) -> None:
        for index, w in list(self.workers.items()):
            try:
                w["proc"].stdin.close()
                w["proc"].wait(CLOSE_WAIT)
            except Exception:
                pass
            self._stop(index)


class Progress:
    def __init__(self, total: int, quiet: bool = False):
        self.total, self.count, self.quiet = total, 0, quiet
        self.tty = sys.stderr.isatty()

    def done(self, result: dict) -> None:
        self.count += 1
        if self.quiet:
            return
        line = (f"{self.count}/{self.total} {result['student']}: {score_text(result)} "
                f"({result.get('seconds', 0):.1f} s)")
        if self.tty:
            width = 30
            filled = width * self.count // self.total
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {line[:60]:60}")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.tty and not self.quiet:
            sys.stderr.write("\n")


def score_text(result: dict) -> str:
    if result.get("score") is None:
        return "not graded"
    return f"{result['score']:g}/{result['max_score']:g}"


def oddities(result: dict) -> list[str]:
    """What a teacher should look at, in a few words each.

    A part whose visible test passed in the notebook while the grader's check failed is not
    among them: every test cell holds hidden tests as well, so that is what partly right code
    looks like (the report keeps both verdicts). What points to a notebook changed by hand is:
    locked cells edited or missing (nbgrader grades the handed-out ones) and a test the saved
    notebook shows passing that failed when the notebook ran again here. A notebook of an
    earlier version of the lab is said as such (its cells differ, but were not edited)."""
    out = list(result.get("odd", []))
    if result.get("error"):
        out.append(f"not graded: {result['error']}")
    if result.get("kernel_restarts"):
        out.append(f"the notebook's kernel was restarted {result['kernel_restarts']} time(s)")
    submitted = result.get("submitted_notebook", {})
    for key, said in (("edited", "locked cells changed: {} (graded as handed out)"),
                      ("missing", "locked cells missing: {} (put back)"),
                      ("other_version", "an earlier version of the lab: {} differ (graded "
                                        "with this one)")):
        if submitted.get(key):
            out.append(said.format(", ".join(submitted[key])))
    for gid, part in result.get("parts", {}).items():
        if part["passed"] and not part["kernel_passed"]:
            out.append(f"{gid}: the notebook's own test failed, the grader's check passed")
        elif not part["kernel_passed"] and gid in submitted.get("saved_passing", []):
            out.append(f"{gid}: saved as passing, failed when run again here")
        out += part.get("notes", [])
    out += [x for x in result.get("loading", []) if "skipped" in x]
    return out


LOOK_AT_WIDTH = 70  # characters of one "look at" line in the table
LOOK_AT_LINES = 4  # lines of it per student


def table(results: list[dict], details: str = "the report") -> str:
    """One line per student (more when there is more to look at); what does not fit is in
    ``details`` (the report's file), and the table says so."""
    rows = [("student", "score", "time", "sealed checks", "look at")]
    for r in results:
        parts = r.get("parts", {})
        passed = sum(1 for p in parts.values() if p["passed"])
        look_at = [fit(o) for o in oddities(r)]
        if len(look_at) > LOOK_AT_LINES:
            more = len(look_at) - LOOK_AT_LINES + 1
            look_at[LOOK_AT_LINES - 1:] = [f"… and {more} more in {details}"]
        rows.append((r["student"], score_text(r), f"{r.get('seconds', 0):.1f} s",
                     f"{passed}/{len(parts)} passed", look_at[0] if look_at else ""))
        rows += [("", "", "", "", o) for o in look_at[1:]]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def fit(text: str) -> str:
    """A "look at" line cut to the table's width, with "…" where it was cut."""
    return text if len(text) <= LOOK_AT_WIDTH else text[:LOOK_AT_WIDTH - 1] + "…"
