"""pytest plugin used by bench/mutation.py: which test runs which line of the mutated modules.

Loaded with ``-p mutation_coverage`` in the one coverage run that precedes the mutants. It
measures the package with coverage.py and switches the coverage context to the test's node id
before each test (setup, call and teardown), so that ``CoverageData.contexts_by_lineno`` later
answers "which tests execute line N". Lines run while modules are imported get the empty context.

Programs a test starts (``python -m maillab serve``, nbgrader) are measured too: before each test
the plugin points ``COVERAGE_PROCESS_START`` at a small config file that carries the test's id as
the static context; coverage.py's start-up hook (the ``.pth`` file it installs) does the rest.
Programs started with a cleared environment (the grading sandbox) are not measured.

It also writes each test's outcome and duration, so the harness runs only tests that pass on the
unmutated code and can give each mutant a timeout from what its tests normally cost.

Environment: MUTATION_COVERAGE_DATA (data file), MUTATION_COVERAGE_INCLUDE (a path pattern),
MUTATION_COVERAGE_SUMMARY (where the outcomes and durations go, as JSON).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

_state: dict = {}


def pytest_configure(config):
    data_file = os.environ.get("MUTATION_COVERAGE_DATA")
    if not data_file or "cov" in _state:
        return
    import coverage

    include = os.environ["MUTATION_COVERAGE_INCLUDE"]
    cov = coverage.Coverage(data_file=data_file, data_suffix=True, include=[include],
                            config_file=False)
    _state.update(cov=cov, data_file=data_file, include=include, durations={}, outcomes={},
                  order=[], rc_dir=tempfile.mkdtemp(prefix="mutation-cov-"))
    cov.start()


def _subprocess_config(nodeid: str) -> str:
    """A coverage config file for programs this test starts: same data, this test's context."""
    path = Path(_state["rc_dir"]) / f"{len(_state['order'])}.rc"
    # coverage.py expands $NAME in config values; a node id never holds "$" in this suite,
    # but double it anyway so an id is recorded as it is.
    context = nodeid.replace("$", "$$")
    path.write_text("[run]\n"
                    f"data_file = {_state['data_file']}\n"
                    "parallel = true\n"
                    "sigterm = true\n"
                    f"include = {_state['include']}\n"
                    f"context = {context}\n")
    return str(path)


def pytest_runtest_logstart(nodeid, location):
    if "cov" not in _state:
        return
    _state["order"].append(nodeid)
    _state["cov"].switch_context(nodeid)
    os.environ["COVERAGE_PROCESS_START"] = _subprocess_config(nodeid)


def pytest_runtest_logfinish(nodeid, location):
    if "cov" not in _state:
        return
    _state["cov"].switch_context("")
    os.environ.pop("COVERAGE_PROCESS_START", None)


def pytest_runtest_logreport(report):
    if "cov" not in _state:
        return
    nodeid = report.nodeid
    _state["durations"][nodeid] = _state["durations"].get(nodeid, 0.0) + report.duration
    outcomes = _state["outcomes"]
    if report.failed:
        outcomes[nodeid] = "failed"
    elif report.skipped and outcomes.get(nodeid) != "failed":
        outcomes[nodeid] = "xfail" if hasattr(report, "wasxfail") else "skipped"
    elif report.when == "call" and nodeid not in outcomes:
        outcomes[nodeid] = "xpass" if hasattr(report, "wasxfail") else "passed"


def pytest_unconfigure(config):
    cov = _state.pop("cov", None)
    if cov is None:
        return
    cov.stop()
    cov.save()
    summary = {"durations": _state["durations"], "outcomes": _state["outcomes"],
               "order": _state["order"]}
    Path(os.environ["MUTATION_COVERAGE_SUMMARY"]).write_text(json.dumps(summary, indent=1))
