#!/usr/bin/env python3
"""Mutation testing: plant one realistic bug at a time and see whether some test fails.

    .venv/bin/python bench/mutation.py                       # every module of bench/mutation.toml
    .venv/bin/python bench/mutation.py --modules 'src/maillab/sessions/*'
    .venv/bin/python bench/mutation.py --report               # the table from cached results only
    .venv/bin/python bench/mutation.py --list --modules src/maillab/imap/search.py

How it works (docs/mutation.md has the details and how to read the output):

1. A snapshot of the repository (``git archive`` of a commit, or a copy of a folder) goes under
   the work folder (/work/mut by default). The checkout the script lives in is never changed:
   other people work in it.
2. One coverage run per group of bench/mutation.toml, with a coverage context per test
   (bench/mutation_coverage.py), tells which tests execute which line, which tests pass on the
   unmutated code and how long each takes.
3. Mutants come from the AST: comparison boundaries and negations, ``and``/``or``, ``not``,
   off-by-one integers, ``True``/``False``, ``return x`` -> ``return None``, a removed call /
   ``break`` / ``continue`` / ``raise`` / state update, protocol tokens and CRLF, slice bounds,
   exception handlers that catch nothing, ``min``/``max``. Docstrings, logging, ``_()`` text,
   f-strings, annotations and ``__repr__`` are left alone, and so is a line marked
   ``# pragma: no mutate``.
4. Each mutant is written into one worker's own copy of the snapshot, and only the passing tests
   that execute its line run (``pytest -x``, in collection order) under ``nice -n 19`` with a
   timeout from the tests' usual duration. A failing test kills the mutant, a timeout too.
5. Results are cached by mutant id + a hash of the enclosing function's source, so a rerun only
   runs mutants that survived (new tests may kill them now) or whose function changed.
6. bench/mutation_equivalent.txt names mutants that cannot be killed because the program behaves
   the same, each with its reason. The score of a module is killed / non-equivalent mutants;
   FAIL under 90 %, the goal is 95 %.
"""

from __future__ import annotations

import argparse
import ast
import copy
import fcntl
import fnmatch
import hashlib
import importlib
import io
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from queue import Queue

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STOPPING = threading.Event()  # set on Ctrl-C or SIGTERM: no new mutant starts
FLOOR = 0.90  # killed / non-equivalent mutants, per module
GOAL = 0.95

# Not copied into the snapshot: version control, environments, build output, caches.
IGNORED = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc", "build", ".hypothesis",
                                 ".pytest_cache", "test-artifacts", "node_modules",
                                 ".ipynb_checkpoints")

# --- finding mutants ------------------------------------------------------------------------

COMPARE_SWAPS = {  # boundary for orderings, negation for the rest
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In,
    ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}
# Calls whose arguments are display text or diagnostics, not behaviour.
DISPLAY_CALLS = {"_", "N_", "ngettext", "print", "for_learner"}
LOGGER_NAMES = {"log", "logger", "logging", "_log", "LOG", "warnings"}
DISPLAY_FUNCTIONS = re.compile(r"^(__repr__|__str__|__format__|_repr_\w+_)$")
# A protocol word: a command, a response code, a flag, a capability ("LOGIN", "+OK", "\\Seen").
# Lower-case words ("key", "rb", "do_user") are mostly names inside the program, not protocol.
TOKEN = re.compile(r"^(\\[A-Za-z]+|[+\-*]?[A-Z0-9][A-Z0-9._\-]{1,39})$")
NO_MUTATE = b"pragma: no mutate"
# What an exception handler is changed into: a class nothing raises, i.e. no handler at all.
NEVER_RAISED = "type('NeverRaised', (Exception,), {})"


@dataclass
class Mutant:
    path: str  # relative to the project root
    line: int
    end_line: int
    col: int  # byte offset in the line, as the AST gives it
    operator: str
    original: str  # the replaced source text (first line of it)
    replacement: str
    scope: str  # "Class.method", "function" or "<module>"
    scope_hash: str  # the enclosing function's source (or the top-level statement's)
    source_line: str
    start: int = 0  # byte offsets of the replaced span in the file
    end: int = 0
    id: str = ""
    statement_line: int = 0  # the first line of the innermost statement around the change

    @property
    def cache_key(self) -> str:
        return f"{self.id}:{self.scope_hash}"

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def change(self) -> str:
        return f"{_clip(self.original)} -> {_clip(self.replacement)}"

    def apply(self, source: bytes) -> bytes:
        return source[:self.start] + self.replacement.encode() + source[self.end:]


def _clip(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."


def _sha(*parts: str) -> str:
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()


def _is_logging_call(call: ast.Call) -> bool:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id in DISPLAY_CALLS
    if isinstance(func, ast.Attribute):
        base = func.value
        if isinstance(base, ast.Name) and base.id in LOGGER_NAMES:
            return True  # log.info(...), logging.getLogger(...), warnings.warn(...)
        if isinstance(base, ast.Attribute) and base.attr in LOGGER_NAMES:
            return True  # self.log.debug(...)
    return False


def _skipped_nodes(tree: ast.AST) -> set[int]:
    """ids of nodes never mutated: display text, logging, annotations, docstrings and such."""
    skipped: set[int] = set()

    def skip(*nodes):
        for node in nodes:
            if node is not None:
                skipped.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _is_logging_call(node):
            skip(node)
        elif isinstance(node, ast.Expr) and (
                isinstance(node.value, ast.Constant)
                or isinstance(node.value, ast.Call) and _is_logging_call(node.value)):
            skip(node)  # docstrings, bare strings, logging statements
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if DISPLAY_FUNCTIONS.match(node.name):
                skip(node)
            skip(*node.decorator_list, node.returns)
            for arg in ast.walk(node.args):
                if isinstance(arg, ast.arg):
                    skip(arg.annotation)
        elif isinstance(node, ast.ClassDef):
            skip(*node.decorator_list)
        elif isinstance(node, ast.AnnAssign):
            skip(node.annotation)
        elif isinstance(node, ast.JoinedStr):
            skip(node)  # f-strings are messages
        elif isinstance(node, ast.If) and _is_setup_guard(node.test):
            skip(node)
        elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            skip(node)
        elif _is_tuning_knob(node):
            skip(node.value)
        elif _is_constant_arithmetic(node):
            # 2**32 - 1, 12 * 3600: one number, mutated as a whole (see _expression_mutants)
            skip(*ast.iter_child_nodes(node))
        elif isinstance(node, (ast.Import, ast.ImportFrom, ast.Global, ast.Nonlocal)):
            skip(node)
        elif isinstance(node, ast.Call):
            # The codec's name and error handler: "ascii" vs "ASCII" is no bug.
            for keyword in node.keywords:
                if keyword.arg in ("encoding", "errors", "repr"):
                    skip(keyword.value)
            if isinstance(node.func, ast.Attribute) and node.func.attr in ("encode", "decode"):
                skip(*node.args)
    return skipped


def _is_constant_arithmetic(node: ast.AST) -> bool:
    return isinstance(node, ast.BinOp) and all(
        isinstance(n, (ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop))
        or isinstance(n, ast.Constant) and type(n.value) in (int, float)
        for n in ast.walk(node))


def _is_tuning_knob(node: ast.AST) -> bool:
    """``PARALLEL = 4``, ``OUTPUT_BUDGET = 1 << 20``: a named number chosen for speed or size,
    where one more is no bug. (The code that compares against it is still mutated.)"""
    if not (isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None):
        return False
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    if not all(isinstance(t, ast.Name) and t.id.isupper() for t in targets):
        return False
    return all(isinstance(n, (ast.Constant, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop))
               and not isinstance(getattr(n, "value", 0), (str, bytes))
               for n in ast.walk(node.value))


def _is_setup_guard(test: ast.expr) -> bool:
    text = ast.unparse(test)
    return text in ("TYPE_CHECKING", "typing.TYPE_CHECKING", "__name__ == '__main__'")


class MutantFinder:
    """All mutants of one module, each checked to compile and to change exactly one node."""

    def __init__(self, path: str, source: bytes):
        self.path = path
        self.source = source
        self.tree = ast.parse(source)
        self.lines = source.split(b"\n")
        self.line_starts = [0]
        for line in self.lines:
            self.line_starts.append(self.line_starts[-1] + len(line) + 1)
        self.parents: dict[int, ast.AST] = {}
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[id(child)] = node
        self.skipped = _skipped_nodes(self.tree)
        self.no_mutate = {i + 1 for i, line in enumerate(self.lines) if NO_MUTATE in line}

    # where a node lives
    def offset(self, line: int, col: int) -> int:
        return self.line_starts[line - 1] + col

    def scope_of(self, node: ast.AST) -> tuple[str, str]:
        names, function, top = [], None, node
        current = node
        while id(current) in self.parents:
            parent = self.parents[id(current)]
            if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.append(parent.name)
                if function is None and not isinstance(parent, ast.ClassDef):
                    function = parent
            if isinstance(parent, ast.Module):
                top = current
            current = parent
        owner = function or top
        text = self.source[self.offset(owner.lineno, owner.col_offset):
                           self.offset(owner.end_lineno, owner.end_col_offset)]
        return ".".join(reversed(names)) or "<module>", hashlib.sha1(text).hexdigest()[:12]

    # the candidate changes
    def candidates(self):
        """(node to replace, its replacement node, operator name) for every mutable spot."""
        for node in ast.walk(self.tree):
            if id(node) in self.skipped or getattr(node, "lineno", 0) in self.no_mutate:
                continue
            yield from self._expression_mutants(node)
            yield from self._statement_mutants(node)

    def _expression_mutants(self, node):
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                new = copy.deepcopy(node)
                new.ops[i] = COMPARE_SWAPS[type(op)]()
                yield node, new, "compare"
        elif isinstance(node, ast.BoolOp):
            new = copy.deepcopy(node)
            new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            yield node, new, "boolean"
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield node, copy.deepcopy(node.operand), "not"
        elif isinstance(node, (ast.If, ast.While, ast.IfExp)) and not isinstance(
                node.test, (ast.Compare, ast.BoolOp, ast.UnaryOp, ast.Constant)):
            yield node.test, ast.UnaryOp(ast.Not(), copy.deepcopy(node.test)), "negate"
        elif isinstance(node, ast.Constant):
            yield from self._constant_mutants(node)
        elif _is_constant_arithmetic(node):
            yield node, ast.BinOp(copy.deepcopy(node), ast.Add(), ast.Constant(1)), "number"
        elif isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant)
                and (node.value.value is None or isinstance(node.value.value, bool))):
            yield node.value, ast.Constant(None), "return-none"
        elif isinstance(node, ast.Slice):
            for bound in ("lower", "upper"):
                value = getattr(node, bound)
                if value is not None and not isinstance(value, ast.Constant):
                    new = copy.deepcopy(node)
                    setattr(new, bound, None)
                    yield node, new, "slice"
        elif isinstance(node, ast.ExceptHandler) and node.type is not None:
            if isinstance(node.type, ast.Tuple) and len(node.type.elts) > 1:
                for i in range(len(node.type.elts)):
                    new = copy.deepcopy(node.type)
                    del new.elts[i]
                    yield node.type, new, "except"
            else:
                yield node.type, ast.parse(NEVER_RAISED, mode="eval").body, "except"
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("min", "max") and len(node.args) >= 2):
            new = copy.deepcopy(node)
            new.func.id = "max" if node.func.id == "min" else "min"
            yield node, new, "min-max"

    def _constant_mutants(self, node: ast.Constant):
        value = node.value
        if isinstance(value, bool):
            yield node, ast.Constant(not value), "true-false"
        elif isinstance(value, int):
            yield node, ast.Constant({0: 1, 1: 0}.get(value, value + 1)), "number"
        elif isinstance(value, (str, bytes)):
            crlf = "\r\n" if isinstance(value, str) else b"\r\n"
            lf = "\n" if isinstance(value, str) else b"\n"
            if crlf in value:
                yield node, ast.Constant(value.replace(crlf, lf)), "crlf"
            elif TOKEN.match(value if isinstance(value, str) else value.decode("latin-1")):
                yield node, ast.Constant(value[:-1]), "token"

    def _statement_mutants(self, node):
        removable = (
            isinstance(node, (ast.Break, ast.Continue, ast.Raise, ast.AugAssign, ast.Delete))
            or isinstance(node, ast.Expr) and isinstance(node.value, (ast.Call, ast.Await))
            or isinstance(node, ast.Assign) and all(
                isinstance(t, (ast.Attribute, ast.Subscript)) or self._rebinds(node, t)
                for t in node.targets))
        if removable:
            yield node, ast.Pass(), "remove"

    def _rebinds(self, assign: ast.Assign, target: ast.expr) -> bool:
        """True if ``target`` is a name the function already had (a parameter or an earlier
        assignment): ``line = line.strip()`` can be forgotten, a first assignment cannot."""
        if not isinstance(target, ast.Name):
            return False
        function = assign
        while id(function) in self.parents and not isinstance(
                function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = self.parents[id(function)]
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return False
        args = function.args
        names = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
        if target.id in names:
            return True
        return any(isinstance(n, ast.Name) and n.id == target.id and isinstance(n.ctx, ast.Store)
                   and n.lineno < assign.lineno for n in ast.walk(function))

    # turning a candidate into text
    def mutants(self) -> list[Mutant]:
        found = []
        for node, new, operator in self.candidates():
            mutant = self._materialize(node, new, operator)
            if mutant is not None:
                found.append(mutant)
        self._assign_ids(found)
        found.sort(key=lambda m: (m.line, m.col, m.operator, m.replacement))
        return found

    def _materialize(self, node, new, operator) -> Mutant | None:
        if node.lineno != node.end_lineno and operator != "remove":
            return None  # single-line changes only (a removed statement may span lines)
        if ast.dump(node) == ast.dump(new):
            return None
        start = self.offset(node.lineno, node.col_offset)
        end = self.offset(node.end_lineno, node.end_col_offset)
        text = "pass" if operator == "remove" else ast.unparse(new)
        for replacement in (text, f"({text})"):
            if self._changes_only(node, new, start, end, replacement.encode()):
                break
        else:
            return None
        scope, scope_hash = self.scope_of(node)
        original = self.source[start:end].decode("utf-8", "replace").split("\n")[0]
        source_line = self.lines[node.lineno - 1].decode("utf-8", "replace").strip()
        statement = node
        while not isinstance(statement, ast.stmt) and id(statement) in self.parents:
            statement = self.parents[id(statement)]
        return Mutant(self.path, node.lineno, node.end_lineno, node.col_offset, operator,
                      original, replacement, scope, scope_hash, source_line, start, end,
                      statement_line=getattr(statement, "lineno", node.lineno))

    def _unit_lines(self, node) -> tuple[int, int]:
        """The first and last line of the outermost function around ``node`` (with its
        decorators; outermost, so that a ``nonlocal`` finds its binding), or of its top-level
        statement: the smallest piece that compiles alone."""
        current, function = node, None
        while id(current) in self.parents:
            parent = self.parents[id(current)]
            if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)):
                function = parent
            if isinstance(parent, ast.Module):
                break
            current = parent
        if function is not None:
            return min([function.lineno] + [d.lineno for d in function.decorator_list]), \
                function.end_lineno
        return current.lineno, current.end_lineno

    def _changes_only(self, node, new, start: int, end: int, replacement: bytes) -> bool:
        """The mutated function compiles and holds ``new`` where ``node`` was (so no precedence
        surprise turned the change into another one). Only the enclosing function is parsed:
        parsing the whole module for each of hundreds of mutants is what would be slow."""
        first, last = self._unit_lines(node)
        unit_start, unit_end = self.line_starts[first - 1], self.line_starts[last]
        unit = (self.source[unit_start:start] + replacement + self.source[end:unit_end])
        shift = first - 1
        if unit[:1] in (b" ", b"\t"):  # a method: let an `if` take the indented block
            unit, shift = b"if 1:\n" + unit, first - 2
        try:
            tree = ast.parse(unit)
            compile(tree, self.path, "exec", dont_inherit=True)
        except (SyntaxError, ValueError):
            return False
        want = ast.dump(new)
        return any(getattr(n, "lineno", None) == node.lineno - shift
                   and n.col_offset in (node.col_offset, node.col_offset + 1)
                   and ast.dump(n) == want for n in ast.walk(tree))

    def _assign_ids(self, mutants: list[Mutant]) -> None:
        """An id that survives edits elsewhere in the file: the scope, the line's text and which
        of the identical lines in that scope it is, the column and the change."""
        lines_by_text: dict[tuple[str, str], set[int]] = {}
        for m in mutants:
            lines_by_text.setdefault((m.scope, m.source_line), set()).add(m.line)
        for m in mutants:
            nth = sorted(lines_by_text[(m.scope, m.source_line)]).index(m.line)
            m.id = _sha(m.path, m.scope, m.source_line, str(nth), str(m.col), m.operator,
                        m.replacement)[:10]


def find_mutants(root: Path, relpath: str) -> list[Mutant]:
    return MutantFinder(relpath, (root / relpath).read_bytes()).mutants()


# --- configuration, snapshot and copies ------------------------------------------------------

@dataclass
class Group:
    name: str
    modules: list[str]  # globs relative to the project root
    tests: list[str]  # test files (or node ids) of the group's coverage run
    fallback: bool = False  # lines no test reaches in-process run all the group's tests
    # module glob -> test files (or node ids) that run such lines of the matching modules:
    # the short list for code that runs where coverage cannot follow (the grading sandbox)
    fallback_tests: dict[str, list[str]] = field(default_factory=dict)

    def fallback_for(self, module: str) -> list[str] | None:
        """The fallback tests of ``module`` (its first matching glob), or None."""
        for pattern, tests in self.fallback_tests.items():
            if fnmatch.fnmatch(module, pattern):
                return tests
        return None


def load_groups(config: Path) -> list[Group]:
    data = tomllib.loads(config.read_text())
    return [Group(g["name"], g["modules"], g["tests"], g.get("fallback", False),
                  g.get("fallback_tests", {}))
            for g in data["group"]]


def expand_modules(root: Path, group: Group) -> list[str]:
    found = []
    for pattern in group.modules:
        for path in sorted(root.glob(pattern)):
            rel = path.relative_to(root).as_posix()
            if path.name != "__init__.py" or path.stat().st_size > 200:
                found.append(rel)
    return list(dict.fromkeys(found))


def make_snapshot(workdir: Path, repo: Path, commit: str | None,
                  from_dir: Path | None) -> tuple[Path, str]:
    """A pristine copy of the project that nothing ever mutates; returns (folder, its id)."""
    if from_dir is not None:
        digest = hashlib.sha1()
        for path in sorted(p for p in from_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(from_dir)
            if any(IGNORED(str(rel.parent), [part]) for part in rel.parts):
                continue
            digest.update(str(rel).encode() + b"\0" + path.read_bytes())
        snapshot_id = "dir-" + digest.hexdigest()[:12]
    else:
        snapshot_id = subprocess.run(["git", "-C", str(repo), "rev-parse", commit or "HEAD"],
                                     check=True, capture_output=True, text=True).stdout.strip()
    base = workdir / f"base-{snapshot_id[:12]}"
    if not (base / ".complete").exists():
        shutil.rmtree(base, ignore_errors=True)
        if from_dir is not None:
            shutil.copytree(from_dir, base, ignore=IGNORED)
        else:
            archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar",
                                      snapshot_id], check=True, capture_output=True).stdout
            base.mkdir(parents=True)
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                tar.extractall(base, filter="data")
        (base / ".complete").write_text(snapshot_id)
    return base, snapshot_id


def prepare_copy(base: Path, target: Path, snapshot_id: str) -> Path:
    """A worker's own copy of the snapshot; an existing one is reused after its package files
    are restored from the snapshot (a killed run may have left a mutant behind)."""
    stamp = target / ".snapshot"
    if not stamp.exists() or stamp.read_text() != snapshot_id:
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(base, target)
        stamp.write_text(snapshot_id)
    else:
        for path in (base / "src").rglob("*.py"):
            copy_target = target / path.relative_to(base)
            if not copy_target.exists() or copy_target.read_bytes() != path.read_bytes():
                shutil.copy2(path, copy_target)
    return target


class Clock:
    """Distinct whole-second mtimes for rewritten files, so that Python never takes a cached
    .pyc of the original for a mutant of the same size (or the other way round)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.last = int(time.time()) + 10

    def next(self) -> int:
        with self.lock:
            self.last += 1
            return self.last


# --- the coverage run -----------------------------------------------------------------------

@dataclass
class CoverageMap:
    lines: dict[str, dict[int, list[str]]]  # module -> line -> node ids that executed it
    durations: dict[str, float]
    outcomes: dict[str, str]
    order: list[str]
    seconds: float = 0.0
    load: float = 0.0  # the 1-minute load average when the coverage run ended (0: unknown)

    def passing(self) -> set[str]:
        return {t for t, outcome in self.outcomes.items() if outcome == "passed"}


def test_environment(copy_dir: Path, python: str, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    for key in ("COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG", "PYTEST_ADDOPTS",
                "MUTATION_COVERAGE_DATA"):
        env.pop(key, None)
    env["PYTHONPATH"] = os.pathsep.join(str(copy_dir / p) for p in ("src", "tests"))
    env["PATH"] = os.pathsep.join([os.path.dirname(python), env.get("PATH", "")])
    env.update(extra or {})
    return env


def pytest_args(basetemp: Path) -> list[str]:
    return ["-q", "-rfE", "--no-header", "-p", "no:cacheprovider", "--basetemp", str(basetemp)]


def pytest_command(python: str, basetemp: Path, nice: bool) -> list[str]:
    cmd = ["nice", "-n", "19"] if nice else []
    return cmd + [python, "-m", "pytest", *pytest_args(basetemp)]


def collect_coverage(group: Group, base: Path, snapshot_id: str, workdir: Path, python: str,
                     nice: bool, modules: list[str]) -> CoverageMap:
    key = _sha(snapshot_id, group.name, *group.tests, *modules)[:12]
    cache = workdir / "coverage" / f"{group.name}-{key}.json"
    if cache.exists():
        data = json.loads(cache.read_text())
        data["lines"] = {m: {int(k): v for k, v in lines.items()}
                         for m, lines in data["lines"].items()}
        return CoverageMap(**data)
    import coverage

    # a folder of this run's own: two runs of one group at once (other modules, other
    # --copies) shared "cov-imap" and broke each other's coverage data
    copy_dir = prepare_copy(base, workdir / f"cov-{group.name}-{key}", snapshot_id)
    data_dir = workdir / "coverage" / f"{group.name}-{key}.data"
    shutil.rmtree(data_dir, ignore_errors=True)
    Path(str(data_dir) + ".tests.json").unlink(missing_ok=True)
    data_dir.mkdir(parents=True)
    data_file = data_dir / ".coverage"
    env = test_environment(copy_dir, python, {
        "MUTATION_COVERAGE_DATA": str(data_file),
        "MUTATION_COVERAGE_INCLUDE": str(copy_dir / "src") + "/*",
        "MUTATION_COVERAGE_SUMMARY": str(data_dir) + ".tests.json"})
    env["PYTHONPATH"] += os.pathsep + str(HERE)  # the plugin, from this script's folder
    cmd = pytest_command(python, workdir / f"tmp-cov-{group.name}-{key}", nice)
    cmd += ["-p", "mutation_coverage", *group.tests]
    print(f"coverage run of group {group.name}: {' '.join(group.tests)}", flush=True)
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=copy_dir, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    summary_file = Path(str(data_dir) + ".tests.json")
    if not summary_file.exists():
        raise SystemExit(f"the coverage run of {group.name} failed:\n{done.stdout[-3000:]}"
                         f"\n{done.stderr[-3000:]}")
    summary = json.loads(summary_file.read_text())
    cov = coverage.Coverage(data_file=str(data_file), config_file=False)
    cov.combine([str(data_dir)], keep=False)
    data = cov.get_data()
    lines: dict[str, dict[int, list[str]]] = {}
    for measured in data.measured_files():
        rel = Path(measured).resolve().relative_to(copy_dir.resolve()).as_posix()
        if rel in modules:
            lines[rel] = {n: sorted(c) for n, c in data.contexts_by_lineno(measured).items()}
    result = CoverageMap(lines, summary["durations"], summary["outcomes"], summary["order"],
                         seconds, os.getloadavg()[0])
    cache.write_text(json.dumps(asdict(result)))
    shutil.rmtree(copy_dir, ignore_errors=True)
    shutil.rmtree(workdir / f"tmp-cov-{group.name}-{key}", ignore_errors=True)
    failing = sorted(t for t, o in result.outcomes.items() if o == "failed")
    print(f"  {seconds:.0f} s, {len(result.passing())} tests pass, {len(failing)} fail "
          f"(not used): {' '.join(failing[:10])}", flush=True)
    return result


_FIRST_USERS: dict[tuple[int, str], dict[str, str]] = {}


def _first_users(cmap: CoverageMap, module: str) -> dict[str, str]:
    """Test file -> its first test (in the run's order) that executed a line of ``module``."""
    key = (id(cmap), module)
    if key not in _FIRST_USERS:
        users = {c for cs in cmap.lines.get(module, {}).values() for c in cs}
        firsts: dict[str, str] = {}
        for test in cmap.order:
            if test in users:
                firsts.setdefault(test.split("::")[0], test)
        _FIRST_USERS[key] = firsts
    return _FIRST_USERS[key]


def tests_for(mutant: Mutant, cmap: CoverageMap, group: Group) -> list[str]:
    """The passing tests that execute the mutated line(s), in the order to run them. A line run
    only while modules are imported (a default value, a class attribute) gets every test that
    executes anything in the module."""
    passing = cmap.passing()
    module_lines = cmap.lines.get(mutant.path, {})
    contexts: set[str] = set()
    for line in range(mutant.line, mutant.end_line + 1):
        contexts.update(module_lines.get(line, ()))
    if not contexts and mutant.statement_line:
        # coverage names a statement by its first line: a change on a later line of a statement
        # that spans several (a name in a multi-line set literal) is run by the tests of that one
        contexts.update(module_lines.get(mutant.statement_line, ()))
    chosen = contexts & passing
    if "" in contexts:
        # Run at import (""): every test that imports the module sees the line, not only one
        # that happened to import it again in a process of its own (a server subprocess).
        chosen |= {c for cs in module_lines.values() for c in cs} & passing
    # A module-scoped fixture (one lab per test file) runs in the setup of the file's first test
    # that uses it, so its lines name that test alone although the file's later tests use what
    # it set up (start_smtp's settings of the submission port, say). A line of the first test
    # of a file that touches the module therefore counts for the whole file.
    firsts = _first_users(cmap, mutant.path)
    for test in chosen & set(firsts.values()):
        file = test.split("::")[0]
        chosen |= {t for t in passing if t.split("::")[0] == file}
    if not chosen:
        listed = group.fallback_for(mutant.path)
        if listed is not None:
            chosen = {t for t in passing if any(t == n or t.split("::")[0] == n for n in listed)}
        elif group.fallback:
            chosen = passing
    # Test files in collection order (conftest and module fixtures stay as pytest sets them
    # up), the quickest tests of each file first: most mutants die in the first test that runs.
    files = {t.split("::")[0]: i for i, t in reversed(list(enumerate(cmap.order)))}
    return sorted(chosen, key=lambda t: (files.get(t.split("::")[0], len(files)),
                                         cmap.durations.get(t, 0.0), t))


# --- running mutants ------------------------------------------------------------------------

@dataclass
class Outcome:
    status: str  # killed, timeout, survived, no-test, error
    seconds: float = 0.0
    tests: int = 0
    killed_by: str = ""
    detail: str = ""


class Runner:
    def __init__(self, base: Path, snapshot_id: str, workdir: Path, workers: int, python: str,
                 nice: bool, timeout_factor: float, timeout_extra: float, prefix: str = "wt",
                 fork: bool = True):
        self.base, self.python, self.nice = base, python, nice
        self.timeout_factor, self.timeout_extra = timeout_factor, timeout_extra
        self.clock = Clock()
        # A test's first kill in a run is checked: it must pass on the unmutated code (in the
        # same company of tests), else it fails for reasons of its own and kills nothing.
        self.trusted: set[str] = set()
        self.unreliable: set[str] = set()
        self._trust_lock = threading.Lock()
        self.copies: Queue = Queue()
        self.workdir = workdir
        self.servers: dict[Path, ForkServer] = {}
        copies = [prepare_copy(base, workdir / f"{prefix}-{n}", snapshot_id)
                  for n in range(1, workers + 1)]
        if fork:
            preload = preload_list(copies[0], python)
            for copy_dir in copies:
                self.servers[copy_dir] = ForkServer(copy_dir, python, nice, preload)
        for copy_dir in copies:
            self.copies.put(copy_dir)

    def close(self) -> None:
        for server in self.servers.values():
            server.close()

    def run(self, mutant: Mutant, tests: list[str], cmap: CoverageMap) -> Outcome:
        tests = [t for t in tests if t not in self.unreliable]
        if not tests:
            return Outcome("no-test")
        expected = sum(cmap.durations.get(t, 1.0) for t in tests)
        # The machine is shared: when it is busier than during the coverage run, wait longer.
        busier = max(1.0, os.getloadavg()[0] / max(cmap.load, 1.0)) if cmap.load else 1.0
        timeout = (self.timeout_extra + self.timeout_factor * expected) * busier
        # pytest-timeout ends a single test that hangs long before the whole run's timeout.
        longest = max(cmap.durations.get(t, 1.0) for t in tests)
        per_test = int(max(30.0, 10 * longest) * busier)
        copy_dir = self.copies.get()
        try:
            outcome = self._run_in(copy_dir, mutant, tests, timeout, per_test)
            while outcome.status == "killed" and outcome.killed_by in tests:
                killer = outcome.killed_by
                with self._trust_lock:
                    if killer in self.trusted:
                        break
                unmutated, said, _ = self._pytest(copy_dir, tests[:tests.index(killer) + 1],
                                                  timeout, per_test)
                with self._trust_lock:
                    if unmutated == 0:
                        self.trusted.add(killer)
                        break
                    self.unreliable.add(killer)
                # what it said, for finding out why (an order dependence, a shared resource)
                why = self.workdir / "unreliable" / (re.sub(r"[^\w.-]+", "_", killer)[:150] + ".txt")
                why.parent.mkdir(exist_ok=True)
                why.write_text(f"{' '.join(tests[:tests.index(killer) + 1])}\n\n{said[-20000:]}")
                print(f"  {killer} fails on the unmutated code too: its kills do not count in "
                      f"this run (its output: {why})", flush=True)
                tests = [t for t in tests if t != killer]
                if not tests:
                    return Outcome("no-test")
                outcome = self._run_in(copy_dir, mutant, tests, timeout, per_test)
            return outcome
        finally:
            self.copies.put(copy_dir)

    def _write(self, path: Path, data: bytes) -> None:
        path.write_bytes(data)
        stamp = self.clock.next()
        os.utime(path, (stamp, stamp))
        # and no compiled copy at all: a .pyc records only the source's mtime and size, and an
        # earlier run's clock (on the same worker copy) may have used this stamp for a mutant of
        # the same size (bufsize=1 -> 0): Python then ran that one instead
        for compiled in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
            compiled.unlink(missing_ok=True)

    def _run_in(self, copy_dir: Path, mutant: Mutant, tests: list[str], timeout: float,
                per_test: int) -> Outcome:
        target = copy_dir / mutant.path
        original = (self.base / mutant.path).read_bytes()
        self._write(target, mutant.apply(original))
        count = len(tests)
        try:
            returncode, text, seconds = self._pytest(copy_dir, tests, timeout, per_test)
        finally:
            self._write(target, original)
        if returncode is None:
            # A hang counts as killed only if the unmutated code passes the same tests in the
            # same time; otherwise the machine was too busy and the mutant runs again next time.
            unmutated, _, _ = self._pytest(copy_dir, tests, timeout, per_test)
            if unmutated != 0:
                return Outcome("error", seconds, count,
                               detail=f"the unmutated code does not pass in {timeout:.0f} s")
            return Outcome("timeout", seconds, count, detail=f"over {timeout:.0f} s")
        failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", text, re.M)
        if returncode == 0:
            return Outcome("survived", seconds, count)
        # 4 with an ERROR line: a test module no longer imports (the unmutated one did), so
        # pytest also finds none of the tests asked for in it.
        if returncode in (1, 2, 3) or returncode == 4 and failed:
            return Outcome("killed", seconds, count, failed[0] if failed else
                           f"pytest exit {returncode}")
        return Outcome("error", seconds, count, detail=text[-2000:])

    def _pytest(self, copy_dir: Path, tests: list[str], timeout: float, per_test: int):
        """(exit status or None on timeout, output, seconds) of ``pytest -x tests``."""
        shutil.rmtree(copy_dir / ".hypothesis", ignore_errors=True)
        basetemp = self.workdir / f"tmp-{copy_dir.name}"
        args = ["-x", f"--timeout={per_test}", *tests]
        if copy_dir in self.servers:
            return self.servers[copy_dir].pytest(pytest_args(basetemp) + args, timeout)
        cmd = pytest_command(self.python, basetemp, self.nice)
        started = time.monotonic()
        proc = subprocess.Popen(cmd + args, cwd=copy_dir,
                                env=test_environment(copy_dir, self.python),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_interruptible)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_tree(proc.pid, lambda: proc.communicate(timeout=15))
            proc.communicate()
            return None, "", time.monotonic() - started
        _end_group(proc.pid)
        return proc.returncode, out.decode("utf-8", "replace"), time.monotonic() - started


def preload_list(copy_dir: Path, python: str) -> list[str]:
    """The modules the tests will import that are not the project's own: everything the
    project's package and pytest pull in, found by importing them once in a throwaway process."""
    script = (
        "import importlib, json, pkgutil, sys\n"
        "root = sys.argv[1]\n"
        "for name in ['pytest', 'hypothesis', 'hypothesis.strategies']:\n"
        "    try: importlib.import_module(name)\n"
        "    except Exception: pass\n"
        "import _pytest\n"
        "names = ['_pytest.' + m.name for m in pkgutil.walk_packages(_pytest.__path__)]\n"
        "names += [m.name for m in pkgutil.walk_packages([root + '/src'])]\n"
        "for name in names:\n"
        "    if not name.endswith('__main__'):\n"
        "        try: importlib.import_module(name)\n"
        "        except BaseException: pass\n"
        "print(json.dumps([n for n, m in list(sys.modules.items())\n"
        "                  if not (getattr(m, '__file__', None) or '').startswith(root)]))\n")
    done = subprocess.run([python, "-c", script, str(copy_dir)], cwd=copy_dir,
                          env=test_environment(copy_dir, python), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        print(f"no preload list, forks start bare:\n{done.stderr[-2000:]}", flush=True)
        return []


class ForkServer:
    """One per worker copy: a Python that has already imported pytest and every third-party
    module the tests use (but nothing of the project), and forks a child per mutant that runs
    ``pytest.main``. The child imports the project afresh, mutant included. On a busy machine
    this saves most of a run's start-up: importing pytest, hypothesis, aiosmtpd, aiohttp and
    friends costs about 2 s of CPU, which a ``nice -n 19`` process can wait 20 s for."""

    def __init__(self, copy_dir: Path, python: str, nice: bool, preload: list[str]):
        self.copy_dir, self.python, self.nice, self.preload = copy_dir, python, nice, preload
        self.output = copy_dir.parent / f"out-{copy_dir.name}.txt"
        self.proc: subprocess.Popen | None = None
        self.buffer = b""

    def _start(self) -> None:
        cmd = (["nice", "-n", "19"] if self.nice else []) + [
            self.python, str(Path(__file__).resolve()), "--fork-server", str(self.copy_dir)]
        self.proc = subprocess.Popen(cmd, cwd=self.copy_dir,
                                     env=test_environment(self.copy_dir, self.python),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.buffer = b""
        self._send({"preload": self.preload})
        self._receive(None)  # ready

    def _send(self, message: dict) -> None:
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def _receive(self, timeout: float | None) -> dict | None:
        """The server's next line, or None if it does not come within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError("the fork server ended")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def pytest(self, args: list[str], timeout: float):
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        started = time.monotonic()
        self._send({"args": args, "output": str(self.output)})
        pid = self._receive(None)["pid"]
        answer = self._receive(timeout)
        if answer is None:
            stopped: list = []
            _stop_tree(pid, lambda: stopped.append(self._receive(15)))
            if not stopped or stopped[0] is None:
                self._receive(None)  # the server reaps the killed child and says so
            return None, "", time.monotonic() - started
        text = self.output.read_text("utf-8", "replace")
        return answer["status"], text, time.monotonic() - started

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()


def serve_forks(root: str) -> None:
    """The fork server's side (``--fork-server``): preload, then fork one pytest per request."""
    requests = sys.stdin.buffer
    answer = sys.stdout

    def say(message: dict) -> None:
        answer.write(json.dumps(message) + "\n")
        answer.flush()

    preload = json.loads(requests.readline())["preload"]
    for name in preload:
        try:
            importlib.import_module(name)
        except BaseException:  # a module that only imports in its own context: skip it
            pass
    for name, module in list(sys.modules.items()):  # nothing of the project may stay loaded
        if (getattr(module, "__file__", None) or "").startswith(root):
            del sys.modules[name]
    say({"ready": True})
    while line := requests.readline():
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os.setsid()
            signal.signal(signal.SIGINT, signal.default_int_handler)
            out = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(out, 1)
            os.dup2(out, 2)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            code = 4
            try:
                import pytest
                code = int(pytest.main(request["args"]))
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        say({"pid": pid})
        _, status = os.waitpid(pid, 0)
        _end_group(pid)
        say({"status": os.waitstatus_to_exitcode(status)})


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _interruptible() -> None:
    """In a child: SIGINT as usual, even when this script runs in the background (``nohup
    ... &`` ignores SIGINT, and children inherit that), so that _stop_tree's SIGINT reaches
    pytest and fixture teardown stops what the tests started."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stop_tree(pid: int, wait) -> None:
    """A mutant that hangs: ask pytest to stop (SIGINT runs fixture teardown, which stops the
    servers and programs a test started), ``wait()`` for it, then kill what is left of its
    process tree."""
    before = _descendants(pid)  # once pytest has ended, its orphans are nobody's descendants
    try:
        os.kill(pid, signal.SIGINT)
        wait()
    except (subprocess.TimeoutExpired, ProcessLookupError):
        pass
    for stray in {pid, *before, *_descendants(pid)}:
        try:
            os.kill(stray, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _end_group(pid)


def _end_group(pid: int) -> None:
    """Kill what is left of a mutant's pytest session (its process group), also after a normal
    end: a mutant may keep a program a test started alive (an answer process, a server)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --- results, equivalent mutants and the report ----------------------------------------------

class ResultCache:
    """Outcomes by cache key in one JSON file. Two runs may share it (different modules, their
    own worker copies): each write merges under a file lock."""

    def __init__(self, path: Path, fresh: bool = False):
        self.path = path
        self.lock = threading.Lock()
        self.data: dict[str, dict] = self._read()
        self.fresh = fresh  # ignore what earlier runs found
        self.mine: set[str] = set()

    def _read(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def get(self, mutant: Mutant) -> dict | None:
        if self.fresh and mutant.cache_key not in self.mine:
            return None
        return self.data.get(mutant.cache_key)

    def put(self, mutant: Mutant, outcome: Outcome, snapshot_id: str) -> None:
        record = {**asdict(outcome), "where": mutant.where, "change": mutant.change,
                  "snapshot": snapshot_id, "when": time.strftime("%Y-%m-%d %H:%M")}
        with self.lock, open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.data.update(self._read())
            self.data[mutant.cache_key] = record
            self.mine.add(mutant.cache_key)
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps(self.data, indent=0))
            temporary.replace(self.path)


def load_equivalents(path: Path) -> dict[str, str]:
    """``<id>  <where and what, for people>  -- <why the program behaves the same>``"""
    equivalents = {}
    if not path.exists():
        return equivalents
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        mutant_id = line.split()[0]
        reason = line.partition(" -- ")[2].strip()
        if not re.fullmatch(r"[0-9a-f]{10}", mutant_id) or not reason:
            raise SystemExit(f"{path}:{number}: want '<10-hex id> <where> -- <reason>'")
        equivalents[mutant_id] = reason
    return equivalents


@dataclass
class ModuleScore:
    module: str
    mutants: int = 0
    equivalent: int = 0
    killed: int = 0
    timeout: int = 0
    survived: int = 0
    no_test: int = 0
    pending: int = 0
    error: int = 0
    seconds: float = 0.0
    survivors: list = field(default_factory=list)

    @property
    def score(self) -> float | None:
        counted = self.mutants - self.equivalent - self.pending
        return (self.killed + self.timeout) / counted if counted else None

    @property
    def verdict(self) -> str:
        if self.score is None:
            return ""
        if self.pending:
            return "partial"
        return "FAIL" if self.score < FLOOR else ("goal" if self.score >= GOAL else "ok")


def score_module(module: str, mutants: list[Mutant], cache: ResultCache,
                 equivalents: dict[str, str]) -> ModuleScore:
    score = ModuleScore(module, len(mutants))
    for mutant in mutants:
        if mutant.id in equivalents:
            score.equivalent += 1
            continue
        record = cache.get(mutant)
        status = record["status"] if record else "pending"
        attribute = status.replace("-", "_")
        setattr(score, attribute, getattr(score, attribute) + 1)
        if status in ("survived", "no-test"):
            score.survivors.append((mutant, status))
    return score


def format_table(scores: list[ModuleScore]) -> str:
    header = (f"| module | mutants | equivalent | killed | timeout | survived | no test "
              f"| pending | score | verdict | wall time |\n|{'---|' * 11}")
    rows = [header]
    for s in scores:
        score = f"{100 * s.score:.1f}%" if s.score is not None else "-"
        rows.append(f"| {_short(s.module)} | {s.mutants} | {s.equivalent} "
                    f"| {s.killed} | {s.timeout} | {s.survived} | {s.no_test} | {s.pending} "
                    f"| {score} | {s.verdict} | {s.seconds / 60:.1f} min |")
    return "\n".join(rows)


def _short(module: str) -> str:
    return module.removeprefix("src/").removeprefix("maillab/")


def format_survivors(scores: list[ModuleScore]) -> str:
    out = []
    for s in scores:
        if not s.survivors:
            continue
        out.append(f"\n## {s.module} ({len(s.survivors)} surviving)\n")
        for mutant, status in s.survivors:
            note = " (no test runs this line)" if status == "no-test" else ""
            out.append(f"- `{mutant.id}` {mutant.where} [{mutant.operator}] "
                       f"`{mutant.change}`{note}\n    `{_clip(mutant.source_line, 100)}`")
    return "\n".join(out)


# --- the command line -----------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=HERE / "mutation.toml")
    parser.add_argument("--equivalent", type=Path, default=HERE / "mutation_equivalent.txt")
    parser.add_argument("--modules", nargs="*", default=[],
                        help="only modules matching these globs (e.g. 'src/maillab/imap/*')")
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument("--commit", default="HEAD", help="the commit to snapshot (git archive)")
    parser.add_argument("--from-dir", type=Path, help="snapshot this folder instead of a commit")
    parser.add_argument("--workdir", type=Path, default=Path("/work/mut"))
    parser.add_argument("--out", type=Path, help="write table.md, survivors.md here")
    parser.add_argument("--workers", type=int, default=2,
                        help="parallel mutants; most tests wait on sockets and timers, so more "
                             "workers than cores pay off")
    parser.add_argument("--copies", default="wt",
                        help="name prefix of the workers' copies (a second run at the same time "
                             "needs its own)")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--timeout-factor", type=float, default=3.0,
                        help="timeout = extra + factor x the tests' duration in the coverage run")
    parser.add_argument("--timeout-extra", type=float, default=30.0)
    parser.add_argument("--sample", type=float, default=1.0,
                        help="run this fraction of each module's mutants, chosen by id (the "
                             "same ones every time); the score is then an estimate")
    parser.add_argument("--fresh", action="store_true", help="ignore cached results")
    parser.add_argument("--only-new", action="store_true",
                        help="run only mutants never run before (not the survivors again)")
    parser.add_argument("--rerun-killed-by", nargs="*", default=[], metavar="TEST",
                        help="run again the mutants these tests killed (a test found to fail "
                             "for reasons of its own)")
    parser.add_argument("--no-nice", action="store_true")
    parser.add_argument("--no-fork", action="store_true",
                        help="start a fresh Python per mutant instead of forking a preloaded one")
    parser.add_argument("--fork-server", help=argparse.SUPPRESS)
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--report", action="store_true", help="cached results only, run nothing")
    args = parser.parse_args(argv)
    if args.fork_server:
        serve_forks(args.fork_server)
        return 0

    _stop_on_sigterm()
    args.workdir.mkdir(parents=True, exist_ok=True)
    base, snapshot_id = make_snapshot(args.workdir, args.repo.resolve(), args.commit,
                                      args.from_dir.resolve() if args.from_dir else None)
    print(f"snapshot {snapshot_id} in {base}", flush=True)
    groups = load_groups(args.config)
    equivalents = load_equivalents(args.equivalent)
    cache = ResultCache(args.workdir / "results.json", fresh=args.fresh)

    selected = []  # (group, module)
    for group in groups:
        for module in expand_modules(base, group):
            if not args.modules or any(fnmatch.fnmatch(module, g) for g in args.modules):
                selected.append((group, module))
    if not selected:
        raise SystemExit("no module matches")

    all_mutants = {module: find_mutants(base, module) for _, module in selected}
    if args.sample < 1:
        all_mutants = {m: [x for x in ms if int(x.id, 16) / 16 ** 10 < args.sample]
                       for m, ms in all_mutants.items()}
    if args.list:
        for module, mutants in all_mutants.items():
            for m in mutants:
                print(f"{m.id} {m.where} [{m.operator}] {m.change}")
        print(f"{sum(map(len, all_mutants.values()))} mutants", file=sys.stderr)
        return 0

    if not args.report:
        runner = Runner(base, snapshot_id, args.workdir, max(1, args.workers), args.python,
                        not args.no_nice, args.timeout_factor, args.timeout_extra, args.copies,
                        fork=not args.no_fork)
        try:
            for group in groups:
                modules = [m for g, m in selected if g is group]
                if not modules:
                    continue
                to_run = [m for module in modules for m in all_mutants[module]
                          if m.id not in equivalents
                          and _needs_run(cache.get(m), args.only_new, args.rerun_killed_by)]
                if not to_run or STOPPING.is_set():
                    continue
                cmap = collect_coverage(group, base, snapshot_id, args.workdir, args.python,
                                        not args.no_nice, expand_modules(base, group))
                for module in modules:
                    if STOPPING.is_set():
                        break
                    mutants = [m for m in to_run if m.path == module]
                    spent = _run_module(module, mutants, runner, cmap, group, cache, snapshot_id,
                                        args.workers)
                    add_run_time(args.workdir / "timings.json", module, spent, len(mutants),
                                 args.workers)
        finally:
            runner.close()

    timings = _read_json(args.workdir / "timings.json")
    scores = [score_module(module, all_mutants[module], cache, equivalents)
              for _, module in selected if all_mutants[module]]
    for s in scores:
        s.seconds = timings.get(s.module, {}).get("seconds", 0.0)
    table, survivors = format_table(scores), format_survivors(scores)
    stale = set(equivalents) - {m.id for ms in all_mutants.values() for m in ms}
    heading = (f"Mutation score at {snapshot_id} ({time.strftime('%Y-%m-%d %H:%M')}); "
               f"floor {FLOOR:.0%}, goal {GOAL:.0%} of non-equivalent mutants killed"
               + (f"; a {args.sample:.0%} sample of each module's mutants" if args.sample < 1
                  else ""))
    print(f"\n{heading}\n\n{table}\n{survivors}")
    if stale and not args.modules:
        print(f"\nequivalent-mutant ids that match no mutant any more: {' '.join(sorted(stale))}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "table.md").write_text(f"{heading}\n\n{table}\n")
        (args.out / "survivors.md").write_text(f"# Surviving mutants at {snapshot_id}\n"
                                               f"{survivors}\n")
    return 1 if any(s.verdict == "FAIL" for s in scores) else 0


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def add_run_time(path: Path, module: str, seconds: float, mutants: int, workers: int) -> None:
    """Wall time spent on a module, summed over runs (a rerun adds only what it ran)."""
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        timings = _read_json(path)
        entry = timings.setdefault(module, {"seconds": 0.0, "mutants run": 0, "runs": []})
        entry["seconds"] += seconds
        entry["mutants run"] += mutants
        entry["runs"].append({"seconds": round(seconds), "mutants": mutants, "workers": workers,
                              "when": time.strftime("%Y-%m-%d %H:%M")})
        path.write_text(json.dumps(timings, indent=1))


def _needs_run(record: dict | None, only_new: bool = False, suspects=()) -> bool:
    """Killed stays killed while its function is unchanged, unless one of ``suspects`` (test
    ids) killed it; the rest runs again (with ``only_new``, survivors too stay as they are)."""
    if record is None or record.get("killed_by") in suspects:
        return True
    done = ("killed", "timeout") + (("survived", "no-test") if only_new else ())
    return record["status"] not in done


def _run_module(module, mutants, runner, cmap, group, cache, snapshot_id, workers) -> float:
    started = time.monotonic()
    total = len(mutants)
    counter = iter(range(1, total + 1))
    lock = threading.Lock()

    def one(mutant: Mutant):
        if STOPPING.is_set():
            return
        tests = tests_for(mutant, cmap, group)
        outcome = runner.run(mutant, tests, cmap)
        cache.put(mutant, outcome, snapshot_id)
        with lock:
            print(f"[{next(counter)}/{total}] {mutant.where} [{mutant.operator}] "
                  f"{mutant.change}: {outcome.status} ({outcome.tests} tests, "
                  f"{outcome.seconds:.1f} s) {outcome.killed_by}", flush=True)
            if outcome.status == "error":
                print(outcome.detail, flush=True)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            list(pool.map(one, mutants))
        except KeyboardInterrupt:
            # Let the running mutants finish (their files are restored), start no more.
            STOPPING.set()
            print("interrupted: finishing the mutants that are running", flush=True)
            raise
    return time.monotonic() - started


def _stop_on_sigterm() -> None:
    """SIGTERM (a run in the background does not get Ctrl-C) stops like Ctrl-C: the running
    mutants finish and their files are restored, results so far are kept."""
    def stop(signum, frame):
        if not STOPPING.is_set():
            STOPPING.set()
            print("terminated: finishing the mutants that are running", flush=True)
    signal.signal(signal.SIGTERM, stop)


if __name__ == "__main__":
    sys.exit(main())
