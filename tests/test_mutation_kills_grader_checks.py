"""Quick in-process tests of the grader's check runner (grader/checks.py) and of `maillab grade`
(grader/command.py), for the mutation score (issue 16).

A whole `maillab grade` (tests/test_grader_typed.py, tests/test_grader_command.py) runs both, but
it takes a minute and coverage cannot follow it into the sandbox. Here: TestRun against a real
answer process (started unsandboxed, as tests/test_grader_answers.py does), and `maillab grade`
with a small fake worker program that speaks the worker's protocol (one JSON line per
submission on stdout) and does what its student's name says: end, hang, or answer.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from maillab import grading
from maillab.grader import checks, command, sandbox
from maillab.grader.checks import explain_learner_error
from maillab.grader.learner import LearnerException

# the answer process as test_grader_answers starts it (no sandbox), and its fixture
from test_grader_answers import answers  # noqa: F401

LAB = object()  # what the grader's tests see as `lab` (only passed along here)

# a test whose mutant hangs (a pool that never finishes, say) fails in a minute, not in the
# mutation run's timeout of many minutes
pytestmark = pytest.mark.timeout(60)

LEARNER = '''
import json, os, time
import json as js
import maillab
class POP3Error(Exception):
    pass
class Greeter:
    def hello(self):
        return "hi"
CONN = Greeter()
PORT = 2525
NOTHING = None
ITEMS = [1, 2]
def greet(name):
    return f"hello {name}"
def refuse():
    raise POP3Error("-ERR no such user")
def no_answer():
    raise TimeoutError("timed out")
def slow(seconds):
    time.sleep(seconds)
    return "done"
def crash():
    os._exit(4)
def peek(name):
    return globals().get(name, "absent")
def advance():
    global tick
    tick += 1
    return tick
def len(x):
    return 42
lab = "the learner's lab"
socket = "the learner's socket"
'''
GIVEN = "import socket\nimport base64\ngiven_value = 1\n"


class Evidence:
    """Stands for execute.NotebookRun: answers which cell it was asked about, before which test."""

    def __init__(self):
        self.asked = []

    def during(self, cell, before):
        self.asked.append((cell, before))
        return ("evidence", cell, before)


def verdicts(run: checks.TestRun, *cells: str) -> list:
    return [run.run(f"part{i}_tests", source) for i, source in enumerate(cells, 1)]


# ---------------------------------------------------------------------- checks.py
def test_the_tests_grading_is_a_copy_of_the_installed_module_whose_fresh_needs_no_check(
        answers):
    run = checks.TestRun(answers("x = 1"), LAB, ["from maillab import grading"], Evidence())
    g = run.ns["grading"]
    assert g is not grading and g.timeout_hint is grading.timeout_hint
    assert g.fresh(LAB) is g and grading.fresh is not g.fresh  # the installed one unchanged
    assert "__file__" not in vars(g)
    assert run.run("a_tests", "assert grading.fresh(lab) is grading").passed


def test_during_asks_the_notebook_run_about_the_cell_before_the_asking_test(answers):
    evidence = Evidence()
    run = checks.TestRun(answers("x = 1"), LAB, [], evidence)
    verdict = run.run("typed_tests", "assert grading.during(lab) == ('evidence', None, "
                                     "'typed_tests')")
    assert verdict.passed, verdict
    assert evidence.asked == [(None, "typed_tests")]
    no_run = checks.TestRun(answers("x = 1"), LAB, [])
    verdict = no_run.run("typed_tests", "grading.during(lab)")
    assert (verdict.kind, verdict.message) == ("RuntimeError",
                                               "no notebook run to read typed sessions from")


def test_a_learners_timeout_gets_the_hint_about_line_ends_and_other_errors_do_not():
    hint = grading.timeout_hint()
    assert explain_learner_error(TimeoutError(), "timed out") == f"timed out ({hint})"
    assert explain_learner_error(socket.timeout(), "t") == f"t ({hint})"
    assert explain_learner_error(ConnectionError(), "refused") == "refused"


def test_given_cells_give_their_imports_only_and_broken_ones_are_passed_over(answers):
    run = checks.TestRun(answers("x = 1"), LAB,
                  [GIVEN, "this is ( not python", "import no_such_module_here\nimport struct"])
    import base64
    import struct
    assert run.ns["socket"] is socket and run.ns["base64"] is base64
    assert run.ns["struct"] is struct  # after an import that failed
    assert "given_value" not in run.ns
    assert run.ns["lab"] is LAB


def test_the_learners_names_arrive_by_kind(answers):
    a = answers(LEARNER)
    run = checks.TestRun(a, LAB, [GIVEN])
    verdict = run.run("a_tests", '''
assert greet("ada") == "hello ada"
assert PORT == 2525 and type(PORT) is int and NOTHING is None and ITEMS == [1, 2]
assert CONN.hello() == "hi"
try:
    refuse()
except POP3Error as e:
    assert str(e) == "-ERR no such user"
else:
    raise AssertionError("POP3Error was not raised")
assert len([1]) == 1  # a builtin is never the learner's
''')
    assert verdict.passed, verdict
    import json
    assert run.ns["json"] is json  # a standard module: the grader's own
    assert "js" not in run.ns and "maillab" not in run.ns  # renamed, not standard: not bound
    assert run.ns["POP3Error"] is a.standin("__main__", "POP3Error")
    assert "len" not in run.ns
    assert run.ns["lab"] is LAB and run.ns["socket"] is socket  # the grader's, not the learner's


def test_a_test_cells_own_names_and_changes_stay_until_the_answer_process_restarts(answers):
    a = answers(LEARNER)
    run = checks.TestRun(a, LAB, [GIVEN])
    first, second, crash, after = verdicts(
        run,
        "greet = 'mine'\nITEMS.append(3)",
        "assert greet == 'mine' and ITEMS == [1, 2, 3]",  # as in a kernel: the same list
        "crash()",
        "assert greet == 'mine'  # the test's own name stays the test's\n"
        "assert ITEMS == [1, 2]  # the learner's names come from the new process\n"
        "assert CONN.hello() == 'hi'")
    assert first.passed and second.passed, (first, second)
    assert crash.kind == "ProcessEnded" and "exit code 4" in crash.message
    assert crash.notes == [f"part3_tests: {crash.message}"]
    assert after.passed, after
    assert a.generation == 2


def test_names_the_answer_process_describes_oddly_are_never_trouble(answers):
    a = answers("x = 1")
    a.names.update({"weird": "not a dict", "Broken": {"kind": "exception"},
                    "bad": {"kind": "value", "value": {"$zz": 1}},
                    "__secret__": {"kind": "value", "value": 1},
                    "print": {"kind": "value", "value": 1},
                    "grading": {"kind": "value", "value": 1}, "_g": {"kind": "value", "value": 1},
                    "elsewhere": {"kind": "module", "module": "json"},
                    "odd": {"kind": "unknown"}})
    run = checks.TestRun(a, LAB, [])
    verdict = run.run("a_tests", "pass")
    assert verdict.passed, verdict
    broken = run.ns["Broken"]
    assert issubclass(broken, LearnerException) and broken.__name__ == "Broken"
    assert run.ns.get("bad") is None and run.ns["x"] == 1
    for name in ("weird", "__secret__", "print", "_g", "elsewhere", "odd"):
        assert name not in run.ns, name
    assert run.ns["grading"].fresh(LAB) is run.ns["grading"]


def test_each_way_a_test_fails_has_its_own_verdict(answers):
    a = answers(LEARNER)
    run = checks.TestRun(a, LAB, [])
    passed, said, silent, learner, timeout, other = verdicts(
        run, "assert greet('x') == 'hello x'",
        "assert greet('x') == 'nope', 'greet said something else'", "assert False",
        "refuse()", "no_answer()", "{}['missing']")
    assert (passed.grade_id, passed.passed, passed.kind, passed.message) == \
        ("part1_tests", True, "", "")
    assert not said.passed and (said.kind, said.message) == ("AssertionError",
                                                             "greet said something else")
    assert (silent.kind, silent.message) == ("AssertionError", "a check of this part failed")
    assert (learner.kind, learner.message) == ("POP3Error", "-ERR no such user")
    assert (timeout.kind, timeout.message) == ("TimeoutError",
                                               f"timed out ({grading.timeout_hint()})")
    assert (other.kind, other.message) == ("KeyError", "'missing'")
    assert not any(v.passed for v in (said, silent, learner, timeout, other))
    assert all(v.notes == [] for v in (passed, said, silent, learner, timeout, other))


def test_a_test_over_its_budget_is_a_time_limit_and_ends_the_answer_process(answers):
    a = answers(LEARNER)
    run = checks.TestRun(a, LAB, [], budget=1.0)
    slow, after = verdicts(run, "slow(3)", "assert slow(0) == 'done'")
    assert (slow.kind, slow.passed) == ("TimeLimit", False)
    assert slow.notes == [f"part1_tests: {slow.message}"] and "longer than" in slow.message
    assert after.passed, after  # a fresh process, and a fresh budget
    assert a.deadline is None


def test_after_a_test_that_outlasted_its_budget_in_the_grader_values_are_still_shared(answers):
    a = answers(LEARNER)
    run = checks.TestRun(a, LAB, [], budget=0.5)
    sleeper, reader = verdicts(run, "import time\ntime.sleep(0.8)\nshared = 'hello'",
                               "assert peek('shared') == 'hello'")
    assert sleeper.passed and reader.passed, (sleeper, reader)
    assert a.generation == 1 and a.deadline is None


def test_a_test_runs_with_a_3_s_socket_timeout_and_the_grader_gets_its_own_back(answers):
    run = checks.TestRun(answers("x = 1"), LAB, [GIVEN])
    socket.setdefaulttimeout(7.5)
    passed, failed = verdicts(run, "assert socket.getdefaulttimeout() == 3.0",
                              "assert socket.getdefaulttimeout() is None")
    assert passed.passed and not failed.passed
    assert socket.getdefaulttimeout() == 7.5


def test_what_a_test_prints_is_kept_from_the_graders_output(answers, capfd):
    run = checks.TestRun(answers("x = 1"), LAB, [])
    verdict = run.run("a_tests", "import sys, time\nprint('to stdout')\n"
                                 "print('to stderr', file=sys.stderr)\ntime.sleep(0.2)")
    assert verdict.passed and verdict.seconds >= 0.2
    assert capfd.readouterr() == ("", "")


def test_values_a_test_defines_reach_the_learners_code_once_each(answers):
    a = answers(LEARNER)
    run = checks.TestRun(a, LAB, [])
    cells = verdicts(run,
                     "tick = 0\nmsg = b'hello'\n_private = 1\ndef helper():\n    pass",
                     "assert advance() == 1\n"
                     "assert peek('msg') == b'hello' and peek('_private') == 'absent'\n"
                     "assert peek('helper') == 'absent'  # not data: not sent",
                     "assert advance() == 2  # tick was not sent again over the learner's")
    assert all(v.passed for v in cells), cells


def test_a_learners_process_that_refuses_or_dies_on_a_shared_value_does_not_stop_grading(
        answers):
    # the learner's code may change anything in its process, the answer server included
    a = answers('''
import os, sys
_server = sys._getframe(1).f_locals["self"]
_serve = _server.serve_one
def _hostile(message):
    if message.get("op") == "set" and message.get("name") == "refused":
        raise PermissionError("not here")
    if message.get("op") == "set" and message.get("name") == "fatal":
        os._exit(9)
    return _serve(message)
_server.serve_one = _hostile
def alive():
    return "yes"
def crash():
    os._exit(4)
''')
    run = checks.TestRun(a, LAB, [])
    refused, fatal = verdicts(run, "refused = 1", "fatal = 2")
    assert refused.passed and fatal.passed, (refused, fatal)
    assert not a.alive and a.generation == 1
    crash = run.run("crash_tests", "after = 3\ncrash()")  # in a process started anew
    assert crash.kind == "ProcessEnded" and a.generation == 2
    assert not a.alive and a.generation == 2  # no restart just to share `after`
    assert run.run("alive_tests", "assert alive() == 'yes'").passed
    assert a.generation == 3


# ---------------------------------------------------------------------- command.py
FAKE_WORKER = r'''
"""A fake grading worker: the protocol of maillab.grader.worker, and what each student says."""
import argparse, itertools, json, os, select, shutil, signal, sys, time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--course", required=True)
parser.add_argument("--uid", type=int, required=True)
parser.add_argument("--private", required=True)
parser.add_argument("--no-sandbox", action="store_true")
args = parser.parse_args()
course = Path(args.course)
with open(course / "starts.log", "a") as f:
    f.write("start\n")
starts = len((course / "starts.log").read_text().split())
if (course / "broken").exists() or ((course / "flaky").exists() and starts % 3 != 1):
    sys.exit("unshare: Operation not permitted")


def ignore_signals():
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)


time.sleep(0.1)  # a job sent before "ready" would be waiting now
early = []  # (a worker slow to start may find its stdin closed already: that is no job)
if select.select([sys.stdin], [], [], 0)[0] and (line := sys.stdin.readline()):
    early.append(line)
me = {"start": starts, "argv": sys.argv[1:], "uid": args.uid, "sandbox": not args.no_sandbox,
      "private": args.private, "had_private": os.path.isdir(args.private),
      "path": os.environ["PATH"], "session_leader": os.getsid(0) == os.getpid(),
      "early": bool(early)}
(course / "workers").mkdir(exist_ok=True)
(course / "workers" / f"{os.getpid()}.json").write_text(json.dumps(me))
print(f"worker {os.getpid()} ready", file=sys.stderr)
print(json.dumps({"ready": True}), flush=True)
for line in itertools.chain(early, sys.stdin):
    job = json.loads(line)
    with open(course / "attempts.log", "a") as f:
        f.write(f"{job['lab']}/{job['student']}\n")
    tries = (course / "attempts.log").read_text().split().count(f"{job['lab']}/{job['student']}")
    student = job["student"]
    if student == "dies" or (student.startswith("dies-once") and tries == 1):
        os._exit(3)
    if student == "slow":
        time.sleep(1.5)
    alone = False
    if student == "waits-for-another":  # until a second submission is being graded meanwhile
        waited = time.monotonic()
        while len((course / "attempts.log").read_text().split()) < 2:
            if time.monotonic() - waited > 30:
                alone = True
                break
            time.sleep(0.02)
    if student == "hangs":
        ignore_signals()
        while True:
            time.sleep(1)
    if student == "vanishes":
        shutil.rmtree(args.private)
    report = {"lab": job["lab"], "student": student, "score": 7, "max_score": 10,
              "seconds": 0.5, "parts": {}, "uid": args.uid, "alone": alone}
    if student == "refused":
        report.update(error="nbgrader: no such assignment", score=None, max_score=None)
    print(json.dumps(report), flush=True)
if (course / "ignores-eof").exists():
    ignore_signals()
    while True:
        time.sleep(1)
time.sleep(0.2)  # ends a moment after its stdin does
'''


@pytest.fixture
def fake_worker(tmp_path, monkeypatch):
    program = tmp_path / "fake_worker.py"
    program.write_text(FAKE_WORKER)
    monkeypatch.setattr(command, "WORKER", [sys.executable, str(program)])
    return program


@pytest.fixture
def pools(fake_worker):
    made = []

    def pool(course: Path, size: int, uid_base: int = 64000, unsandboxed: bool = True):
        p = command.Pool(course, size, uid_base, unsandboxed)
        made.append(p)
        return p
    yield pool
    for p in made:
        p.close()


def started(course: Path) -> list[dict]:
    """What each worker the fake program started said about itself, in the order they started."""
    said = [json.loads(p.read_text()) for p in (course / "workers").glob("*.json")]
    return sorted(said, key=lambda w: w["start"])


def attempts(course: Path) -> list[str]:
    return (course / "attempts.log").read_text().split()


def test_a_pool_grades_each_submission_once_in_workers_of_their_own(tmp_path, pools):
    course = tmp_path / "course"
    course.mkdir()
    pool = pools(course, 2, uid_base=64000, unsandboxed=False)
    said = []
    jobs = [("smtp", "ada"), ("smtp", "bo"), ("pop3", "ada"), ("smtp", "cy")]
    results = pool.grade(jobs, said.append)
    assert [(r["lab"], r["student"], r["score"]) for r in results] == \
        [(lab, student, 7) for lab, student in jobs]
    assert sorted(said, key=lambda r: jobs.index((r["lab"], r["student"]))) == results
    assert sorted(attempts(course)) == sorted(f"{lab}/{s}" for lab, s in jobs)
    procs = [w["proc"] for w in pool.workers.values()]
    files = [w["log"] for w in pool.workers.values()]
    pool.close()
    assert [p.returncode for p in procs] == [0, 0]  # they ended on their own, at the end
    assert all(f.closed for f in files)
    workers = started(course)
    assert sorted(w["uid"] for w in workers) == [64000, 64002]  # two ids each: two phases
    for w in workers:
        assert w["argv"][:2] == ["--course", str(course)] and w["sandbox"]
        assert w["had_private"] and w["session_leader"] and not w["early"]
        assert w["path"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
        assert not os.path.exists(w["private"])
    logs = sorted((course / "grade-reports" / "logs").glob("worker*.log"))
    assert [p.name for p in logs] == ["worker0.log", "worker1.log"]
    assert all("ready" in p.read_text() for p in logs)
    again = pools(course, 1)  # the same course again: its folders are there already
    assert again.grade([("smtp", "ada")], said.append)[0]["score"] == 7
    assert "--no-sandbox" in started(course)[-1]["argv"]


def test_a_submission_whose_worker_ends_is_graded_again_once_then_reported(tmp_path, pools):
    course = tmp_path / "course"
    course.mkdir()
    pool = pools(course, 1)
    said = []
    results = pool.grade([("smtp", "dies-once"), ("smtp", "ada"), ("smtp", "dies"),
                          ("smtp", "bo")], said.append)
    # the submission lost is graded again first
    assert attempts(course) == ["smtp/dies-once", "smtp/dies-once", "smtp/ada", "smtp/dies",
                                "smtp/dies", "smtp/bo"]
    assert [r["score"] for r in results] == [7, 7, None, 7]
    assert results[2] == {"lab": "smtp", "student": "dies", "score": None, "max_score": None,
                          "error": "the grading worker ended unexpectedly"}
    assert results[2] in said and len(said) == 4
    assert len(started(course)) == 4  # a new worker for each one that ended


def test_two_workers_grade_two_submissions_at_once(tmp_path, pools):
    course = tmp_path / "course"
    course.mkdir()
    pool = pools(course, 2)
    waits, other = pool.grade([("smtp", "waits-for-another"), ("smtp", "ada")], lambda r: None)
    assert not waits["alone"] and {waits["uid"], other["uid"]} == {64000, 64002}


def test_the_other_workers_results_still_arrive_after_one_was_replaced(tmp_path, pools):
    course = tmp_path / "course"
    course.mkdir()
    pool = pools(course, 2)
    results = pool.grade([("smtp", "dies-once"), ("smtp", "slow")], lambda r: None)
    assert [r["score"] for r in results] == [7, 7]  # (the pipe of the worker that ended is
    # not read again: it would be read instead of the new worker's, which has nothing to say)


def test_workers_that_fail_to_start_now_and_then_do_not_stop_the_grading(tmp_path, pools):
    course = tmp_path / "course"
    course.mkdir()
    (course / "flaky").touch()  # every start but the 1st, 4th, 7th ... fails
    pool = pools(course, 1)
    results = pool.grade([("smtp", "dies-once-a"), ("smtp", "dies-once-b")], lambda r: None)
    assert [r["score"] for r in results] == [7, 7]
    assert (course / "starts.log").read_text().split() == ["start"] * 7


def test_a_stuck_submission_has_its_worker_killed_and_replaced(tmp_path, pools, monkeypatch):
    monkeypatch.setattr(command, "SUBMISSION_LIMIT", 1.0)
    course = tmp_path / "course"
    course.mkdir()
    pool = pools(course, 1)
    results = pool.grade([("smtp", "hangs"), ("smtp", "ada")], lambda r: None)
    assert results[0]["error"] == "grading took longer than 1 s" and results[0]["score"] is None
    assert results[1]["score"] == 7
    assert attempts(course) == ["smtp/hangs", "smtp/hangs", "smtp/ada"]
    for w in started(course)[:2]:  # the two stuck ones (they ignore SIGTERM) are gone
        assert not os.path.exists(w["private"])


def test_stopping_a_worker_kills_its_process_group_and_waits_for_it(tmp_path, pools):
    course = tmp_path / "course"
    course.mkdir()
    pool = pools(course, 1)
    pool.grade([("smtp", "ada")], lambda r: None)
    proc = pool.workers[0]["proc"]
    pool._stop(0)
    assert proc.returncode == -9


def test_closing_ends_a_worker_that_does_not_end_on_its_own(tmp_path, pools, monkeypatch):
    monkeypatch.setattr(command, "CLOSE_WAIT", 0.5)
    course = tmp_path / "course"
    course.mkdir()
    (course / "ignores-eof").touch()
    pool = pools(course, 1)
    pool.grade([("smtp", "vanishes")], lambda r: None)  # it removes its own folder, too
    proc = pool.workers[0]["proc"]
    pool.close()
    assert proc.returncode == -9 and pool.workers == {}


def test_workers_that_cannot_start_stop_the_grading_with_what_they_said(tmp_path, pools):
    course = tmp_path / "course"
    course.mkdir()
    (course / "broken").touch()
    pool = pools(course, 1)
    with pytest.raises(command.WorkerFailed, match="unshare: Operation not permitted"):
        pool.grade([("smtp", "ada")], lambda r: None)
    log = (course / "grade-reports" / "logs" / "worker0.log").read_text()
    assert log.count("unshare") == command.START_TRIES == 3


def test_the_worker_count_rule():
    assert command.worker_count(5, 3) == 3  # never more than the submissions
    assert command.worker_count(2, 10) == 2
    assert command.worker_count(-2, 10) == 1
    cpus = os.cpu_count() or 1
    assert command.worker_count(None, 100) == command.worker_count(0, 100) == cpus + 1


@pytest.mark.parametrize("cpus, expected", [(3, 4), (None, 2)])
def test_the_default_worker_count_is_one_more_than_the_cpus(monkeypatch, cpus, expected):
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    assert command.worker_count(None, 10) == expected
    assert command.worker_count(None, 1) == 1


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(argv)


def test_the_command_line():
    args = parse("smtp", "pop3", "--workers", "3", "--student", "ada", "--student", "bo",
                 "--collect", "zip", "--course", "/srv/course", "--no-sandbox", "--uid-base",
                 "70000", "--quiet")
    assert (args.labs, args.workers, args.student, args.collect, args.course, args.no_sandbox,
            args.uid_base, args.quiet) == (["smtp", "pop3"], 3, ["ada", "bo"], "zip",
                                           "/srv/course", True, 70000, True)
    args = parse("smtp")
    assert (args.workers, args.student, args.collect, args.course, args.no_sandbox,
            args.uid_base, args.quiet) == (None, [], None, ".", False, None, False)
    with pytest.raises(SystemExit):
        parse("smtp", "--collect", "email")


def test_tool_environment_puts_this_pythons_scripts_first(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("MAILLAB_TEST_MARK", "kept")
    env = command.tool_environment()
    assert env["PATH"] == os.pathsep.join([os.path.dirname(sys.executable), "/usr/bin:/bin"])
    assert env["MAILLAB_TEST_MARK"] == "kept" and os.environ["PATH"] == "/usr/bin:/bin"


def make_course(root: Path, submitted: dict[str, list[str]], folder: str = "submitted") -> Path:
    for lab, students in submitted.items():
        for student in students:
            (root / folder / student / lab).mkdir(parents=True)
    return root


def test_submissions_are_the_students_folders_of_the_lab(tmp_path, monkeypatch):
    course = make_course(tmp_path / "course", {"smtp": ["bo", "ada"], "pop3": ["cy"]})
    (course / "submitted" / "zed").mkdir()
    (course / "submitted" / "zed" / "smtp").write_text("not a folder")
    monkeypatch.chdir(tmp_path)  # the course is not here
    assert command.submissions(course, "smtp") == ["ada", "bo"]
    assert command.submissions(course, "imap") == []
    other = make_course(tmp_path / "other", {"smtp": ["di"]}, folder="handed_in")
    (other / "nbgrader_config.py").write_text(
        "c = get_config()\nc.CourseDirectory.submitted_directory = 'handed_in'\n")
    assert command.submissions(other, "smtp") == ["di"]


class Terminal(io.StringIO):
    flushed = ""  # what had been written at the last flush (stderr buffers up to a line end)

    def isatty(self) -> bool:
        return True

    def flush(self) -> None:
        self.flushed = self.getvalue()


def test_progress_lines_a_bar_on_a_terminal_and_nothing_when_quiet(monkeypatch):
    ada = {"student": "ada", "score": 7.0, "max_score": 10.0, "seconds": 1.25}
    bo = {"student": "bo", "score": None, "max_score": None}
    lines = io.StringIO()
    monkeypatch.setattr(sys, "stderr", lines)
    progress = command.Progress(2)
    progress.done(ada)
    progress.done(bo)
    progress.finish()
    assert lines.getvalue() == "1/2 ada: 7/10 (1.2 s)\n2/2 bo: not graded (0.0 s)\n"
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    progress = command.Progress(2)
    progress.done(ada)
    assert terminal.getvalue() == "\r[" + "#" * 15 + "." * 15 + "] " + \
        "1/2 ada: 7/10 (1.2 s)".ljust(60)
    assert terminal.flushed == terminal.getvalue()
    progress.finish()
    assert terminal.getvalue().endswith("\n")
    quiet = Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    progress = command.Progress(2, quiet=True)
    progress.done(ada)
    progress.finish()
    assert quiet.getvalue() == "" and progress.count == 1


def test_the_table_says_score_time_checks_and_what_to_look_at():
    many = [f"odd thing {i} " + "x" * 80 for i in range(5)]
    results = [{"student": "ada", "score": 7, "max_score": 10, "seconds": 3.04,
                "parts": {"a": {"passed": True, "kernel_passed": True},
                          "b": {"passed": False, "kernel_passed": False}}},
               {"student": "bo", "score": None, "error": "nbgrader refused", "parts": {}},
               {"student": "cy", "score": 0, "max_score": 10, "odd": many}]
    assert command.table(results).splitlines() == [
        "student  score       time   sealed checks  look at",
        "ada      7/10        3.0 s  1/2 passed",
        "bo       not graded  0.0 s  0/0 passed     not graded: nbgrader refused",
        "cy       0/10        0.0 s  0/0 passed     " + many[0][:69] + "…",
        "                                           " + many[1][:69] + "…",
        "                                           " + many[2][:69] + "…",
        "                                           " + "… and 2 more in the report"]


def test_oddities_name_errors_restarts_disagreements_notes_and_skipped_statements():
    result = {"error": "worker ended", "kernel_restarts": 1,
              "parts": {"a": {"passed": True, "kernel_passed": False, "notes": ["a: note"]},
                        "b": {"passed": True, "kernel_passed": True}},
              "loading": ["loading: cell 2, statement 1: exit code 1 (skipped)",
                          "cell 3: NameError: x"]}
    assert command.oddities(result) == [
        "not graded: worker ended", "the notebook's kernel was restarted 1 time(s)",
        "a: the notebook's own test failed, the grader's check passed", "a: note",
        "loading: cell 2, statement 1: exit code 1 (skipped)"]
    assert command.oddities({"parts": {}}) == []


# ------------------------------------------------------------------ maillab grade as a whole
class Lock(io.StringIO):
    """Stands for the lock file reserve_uids holds open."""


@pytest.fixture
def grade(fake_worker, monkeypatch, capsys):
    """`maillab grade ARGS` in this process: (exit status, stdout, stderr, uid bases asked)."""
    asked, locks = [], []

    def reserve_uids(first=None):
        asked.append(first)
        locks.append(Lock())
        return 65000, locks[-1]

    def refuse():
        raise AssertionError("check_available() called with --no-sandbox")
    monkeypatch.setattr(sandbox, "reserve_uids", reserve_uids)
    monkeypatch.setattr(sandbox, "check_available", refuse)

    def run(*argv: str):
        status = command.run(parse(*argv))
        out, err = capsys.readouterr()
        assert all(lock.closed for lock in locks)
        return status, out, err, asked
    return run


def test_maillab_grade_writes_a_report_per_lab_and_a_table(tmp_path, grade):
    course = make_course(tmp_path / "course", {"smtp": ["bo", "ada"], "pop3": ["ada"],
                                               "imap": ["cy"]})
    status, out, err, asked = grade("smtp", "pop3", "--course", str(course), "--no-sandbox",
                                    "--workers", "2", "--uid-base", "70000", "--quiet")
    assert (status, err, asked) == (0, "", [70000])
    smtp = course / "grade-reports" / "smtp.json"
    report = json.loads(smtp.read_text())
    assert smtp.read_text() == json.dumps(report, indent=1) + "\n"
    assert {k: report[k] for k in ("lab", "workers", "sandbox")} == \
        {"lab": "smtp", "workers": 2, "sandbox": False}
    assert [(r["lab"], r["student"]) for r in report["submissions"]] == \
        [("smtp", "ada"), ("smtp", "bo")]
    pop3 = json.loads((course / "grade-reports" / "pop3.json").read_text())
    assert [r["student"] for r in pop3["submissions"]] == ["ada"]
    assert not (course / "grade-reports" / "imap.json").exists()
    assert out.startswith("smtp:\n" + command.table(report["submissions"]) + "\npop3:\n")
    summary = out.splitlines()[-1]
    assert summary == f"3 submissions in {report['seconds']:.1f} s with 2 workers; " \
                      "details in grade-reports/"
    assert {w["uid"] for w in started(course)} == {65000, 65002}
    assert not any(os.path.exists(w["private"]) for w in started(course))  # all closed


def test_maillab_grade_in_sandboxes_checks_first_and_says_why_it_cannot(tmp_path, grade,
                                                                      monkeypatch):
    course = make_course(tmp_path / "course", {"smtp": ["ada"]})

    def unavailable():
        raise sandbox.SandboxUnavailable("grading in sandboxes needs root")
    monkeypatch.setattr(sandbox, "check_available", unavailable)
    status, out, err, _ = grade("smtp", "--course", str(course))
    assert (status, err) == (2, "maillab grade: grading in sandboxes needs root\n")
    assert not (course / "grade-reports").exists()
    monkeypatch.setattr(sandbox, "check_available", lambda: None)
    status, out, err, _ = grade("smtp", "--course", str(course), "--quiet")
    assert status == 0 and started(course)[0]["sandbox"]
    assert json.loads((course / "grade-reports" / "smtp.json").read_text())["sandbox"]


def test_maillab_grade_without_user_ids_to_spare_says_so(tmp_path, grade, monkeypatch):
    course = make_course(tmp_path / "course", {"smtp": ["ada"]})

    def taken(first=None):
        raise sandbox.SandboxUnavailable("another grading uses the sandbox user ids from 70000")
    monkeypatch.setattr(sandbox, "reserve_uids", taken)
    status, out, err, _ = grade("smtp", "--course", str(course), "--no-sandbox")
    assert (status, err) == (2, "maillab grade: another grading uses the sandbox user ids "
                                "from 70000\n")


def test_maillab_grade_with_nothing_to_grade_says_where_it_looked(tmp_path, grade):
    course = tmp_path / "course"
    course.mkdir()
    status, out, err, asked = grade("smtp", "--course", str(course), "--no-sandbox")
    assert (status, asked) == (1, [])
    assert err == f"maillab grade: no submissions of smtp in {course / 'submitted'}\n"


def test_students_named_grade_without_looking_and_a_name_twice_is_graded_once(tmp_path, grade):
    course = tmp_path / "course"
    course.mkdir()
    status, out, err, _ = grade("smtp", "smtp", "--course", str(course), "--no-sandbox",
                                "--student", "ada", "--student", "ada", "--quiet")
    assert status == 0 and attempts(course) == ["smtp/ada"]
    assert out.count("smtp:") == 1


def test_maillab_grade_exits_1_when_a_submission_was_not_graded(tmp_path, grade):
    course = make_course(tmp_path / "course", {"smtp": ["ada", "refused"]})
    status, out, err, _ = grade("smtp", "--course", str(course), "--no-sandbox", "--quiet")
    assert status == 1 and "not graded: nbgrader: no such assignment" in out


def test_maillab_grade_shows_a_bar_on_a_terminal(tmp_path, grade, monkeypatch):
    course = make_course(tmp_path / "course", {"smtp": ["ada", "bo"]})
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    status, out, err, _ = grade("smtp", "--course", str(course), "--no-sandbox")
    assert status == 0
    assert terminal.getvalue().endswith("\r[" + "#" * 30 + "] " +
                                        "2/2 bo: 7/10 (0.5 s)".ljust(60) + "\n") or \
        terminal.getvalue().endswith("\r[" + "#" * 30 + "] " +
                                     "2/2 ada: 7/10 (0.5 s)".ljust(60) + "\n")


def test_maillab_grade_stops_when_its_workers_cannot_start(tmp_path, grade, monkeypatch):
    course = make_course(tmp_path / "course", {"smtp": ["ada"]})
    (course / "broken").touch()
    status, out, err, _ = grade("smtp", "--course", str(course), "--no-sandbox", "--quiet")
    assert status == 2 and err.startswith("maillab grade: the grading worker ended before it "
                                          "was ready, 3 times")
    assert err.endswith("unshare: Operation not permitted\n")
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    status, out, err, _ = grade("smtp", "--course", str(course), "--no-sandbox")
    assert status == 2 and terminal.getvalue().startswith("\nmaillab grade: ")  # off the bar


@pytest.mark.parametrize("how, step", [("zip", "zip_collect"), ("exchange", "collect")])
def test_maillab_grade_collects_first_and_stops_when_nbgrader_fails(tmp_path, grade, monkeypatch,
                                                                    how, step):
    course = make_course(tmp_path / "course", {"smtp": ["ada"]})
    ran = []

    def nbgrader(cmd, cwd, env):
        ran.append((cmd, cwd, env["PATH"].split(os.pathsep)[0]))
        return subprocess.CompletedProcess(cmd, 0 if len(ran) == 1 else 5)
    monkeypatch.setattr(subprocess, "run", nbgrader)
    status, out, err, _ = grade("smtp", "--course", str(course), "--no-sandbox", "--quiet",
                                "--collect", how)
    assert status == 0
    # a later batch of zips, a pupil's second submission: collected too
    force = ["--force"] if step == "zip_collect" else ["--update"]
    assert ran == [([sys.executable, "-m", "nbgrader", step, "smtp", *force], course.resolve(),
                    os.path.dirname(sys.executable))]
    status, out, err, asked = grade("smtp", "--course", str(course), "--no-sandbox",
                                    "--collect", how)
    assert (status, err) == (5, f"maillab grade: nbgrader {step} smtp failed\n")
    assert asked == [None]  # (from the first run) no grading after a failed collect
