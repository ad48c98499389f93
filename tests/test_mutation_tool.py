"""bench/mutation.py on a tiny project: it finds a killed and a surviving mutant, counts an
equivalent one apart, fails under the floor, and a rerun after a new test runs only what had
survived. The real run over maillab is slow and not part of the suite (docs/mutation.md)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"

MODULE = '''\
def is_adult(age):
    """True from the 18th birthday on."""
    return age >= 18
'''

TEST = '''\
from tinymod import is_adult


def test_adult():
    assert is_adult(30)
    assert not is_adult(10)
'''

CONFIG = '''\
[[group]]
name = "tiny"
modules = ["src/tinymod.py"]
tests = ["tests/test_tiny.py"]
'''


def _harness(project: Path, work: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCH / "mutation.py"), "--from-dir", str(project),
         "--config", str(project / "mutation.toml"), "--equivalent", str(project / "equiv.txt"),
         "--workdir", str(work), "--workers", "1", "--no-nice", *args],
        capture_output=True, text=True, timeout=300)


def _tiny_project(tmp_path: Path, module: str, test: str) -> tuple[Path, Path]:
    """A project of ``module`` (src/tinymod.py) and ``test`` (tests/test_tiny.py) with the
    harness's configuration and no equivalent marks yet, and a work folder beside it."""
    project, work = tmp_path / "project", tmp_path / "work"
    (project / "src").mkdir(parents=True)
    (project / "tests").mkdir()
    (project / "src" / "tinymod.py").write_text(module)
    (project / "tests" / "test_tiny.py").write_text(test)
    (project / "mutation.toml").write_text(CONFIG)
    (project / "equiv.txt").write_text("")
    return project, work


def _mutants(project: Path) -> dict[str, str]:
    """change -> id, as the harness finds them."""
    spec = importlib.util.spec_from_file_location("bench_mutation", BENCH / "mutation.py")
    mutation = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mutation  # dataclasses look their module up there
    spec.loader.exec_module(mutation)
    return {m.change: m.id for m in mutation.find_mutants(project, "src/tinymod.py")}


def test_killed_surviving_and_equivalent_mutants(tmp_path):
    project, work = _tiny_project(tmp_path, MODULE, TEST)

    mutants = _mutants(project)
    # The boundary, the off-by-one constant and the lost return value; the docstring is left
    # alone.
    assert set(mutants) == {"age >= 18 -> age > 18", "18 -> 19", "age >= 18 -> None"}
    # 18 -> 19 is not really equivalent; the fixture marks it to show how marks are counted.
    (project / "equiv.txt").write_text(
        f"# id  where  -- why\n{mutants['18 -> 19']}  tinymod.py:3 18 -> 19  -- fixture mark\n")

    first = _harness(project, work, "--out", str(tmp_path / "out"))
    assert first.returncode == 1, first.stdout + first.stderr  # 1 of 2 killed: under the floor
    assert "[return-none] age >= 18 -> None: killed" in first.stdout
    assert "[compare] age >= 18 -> age > 18: survived" in first.stdout
    assert "| tinymod.py | 3 | 1 | 1 | 0 | 1 | 0 | 0 | 50.0% | FAIL |" in first.stdout
    survivors = (tmp_path / "out" / "survivors.md").read_text()
    assert f"`{mutants['age >= 18 -> age > 18']}` src/tinymod.py:3 [compare]" in survivors
    assert "18 -> 19" not in survivors

    # A test for the boundary kills the survivor; the killed mutant is not run again.
    (project / "tests" / "test_tiny.py").write_text(TEST + "    assert is_adult(18)\n")
    second = _harness(project, work)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "[compare] age >= 18 -> age > 18: killed" in second.stdout
    assert "-> None:" not in second.stdout
    assert "| tinymod.py | 3 | 1 | 2 | 0 | 0 | 0 | 0 | 100.0% | goal |" in second.stdout


SPREAD = '''\
NAMES = ["NOOP", "HELP", "RSET", "VRFY", "EXPN", "HELO", "EHLO", "MAIL", "RCPT", "DATA", "AUTH",
         "QUIT"]


def known(command):
    return command in NAMES
'''

SPREAD_TEST = '''\
from tinymod import known


def test_known():
    assert known("QUIT")
'''


def test_a_change_on_a_later_line_of_a_statement_runs_the_tests_of_its_first_line(tmp_path):
    """A list of many constants is built by one instruction of its statement's first line, so
    coverage.py never sees its second line: "QUIT" there was "no test runs this line" (as
    "MOVE" in imap/core.py's CAPABILITIES) although every test of the module runs it."""
    project, work = _tiny_project(tmp_path, SPREAD, SPREAD_TEST)
    run = _harness(project, work)
    assert "\"QUIT\" -> 'QUI': killed" in run.stdout, run.stdout + run.stderr
    assert "no-test" not in run.stdout


LEANING = '''\
def is_adult(age):
    return age >= 18


def greet(name):
    return "hi " + name
'''

LEANING_TEST = '''\
from tinymod import greet, is_adult

SEEN = []


def test_first():
    SEEN.append(is_adult(30))


def test_second_leans_on_the_first():
    assert SEEN, "runs only after test_first"
    assert greet("x") == "hi x"
'''


def test_a_kill_by_a_test_that_fails_on_the_unmutated_code_does_not_count(tmp_path):
    """A mutant runs only the tests that execute its line; a test that passes only after
    another one (test_smtp's transcript test did, by accident) then fails whatever the code,
    and every such mutant was "killed". Its first kill is now checked on the unmutated code."""
    project, work = _tiny_project(tmp_path, LEANING, LEANING_TEST)
    run = _harness(project, work)
    assert "test_second_leans_on_the_first fails on the unmutated code too" in run.stdout, \
        run.stdout + run.stderr
    assert "\"hi \" + name -> None: no-test" in run.stdout
