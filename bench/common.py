"""What every benchmark here shares: interleaved rounds, median and spread, load, verdicts.

These machines are shared and noisy, so a figure is only worth printing beside its peer
measured in the same run, round by round (A then B, then B then A, ...), as a median with its
spread and the load average of the moment. A figure on the wrong side of its goal is printed
with FAIL beside it; nothing here asserts.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"


def load() -> str:
    """The 1, 5 and 15 minute load averages, for printing beside figures."""
    return "load %.2f %.2f %.2f" % os.getloadavg()


def header(title: str) -> None:
    print(f"\n== {title} ({load()}, {os.cpu_count()} cores, Python {sys.version.split()[0]})",
          flush=True)


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    """A function that runs ``fn`` and returns the seconds it took."""
    def run() -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t
    return run


def interleaved(contenders: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each round runs every contender once; the order flips every round (ABBA...), so that
    neither always runs on a cache the other warmed or in the other's wake. Each contender
    returns its own figure (seconds from ``timed``, or a rate)."""
    names = list(contenders)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            samples[name].append(contenders[name]())
    return samples


def med(samples: list[float]) -> float:
    return statistics.median(samples)


def spread(samples: list[float], scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    """'12.3 [11.0-15.2]': the median and the range of the rounds."""
    lo, mid, hi = min(samples) * scale, med(samples) * scale, max(samples) * scale
    return f"{fmt.format(mid)} [{fmt.format(lo)}-{fmt.format(hi)}]"


def at_most(value: float, goal: float | None) -> str:
    """'ok' or 'FAIL' for a figure that must not exceed its goal (times, ratios of times)."""
    if goal is None:
        return ""
    return "ok" if value <= goal else "FAIL"


def at_least(value: float, floor: float | None) -> str:
    """'ok' or 'FAIL' for a figure that must not fall under its floor (rates, ratios of rates)."""
    if floor is None:
        return ""
    return "ok" if value >= floor else "FAIL"


def python_env() -> dict[str, str]:
    """The environment for child interpreters: this checkout's ``src`` comes first, and
    compiled bytecode is kept (in a cache folder of the benchmarks) as it is for any user:
    with PYTHONDONTWRITEBYTECODE, as on some agents' machines, maillab would be compiled
    from source at every start while installed packages load their .pyc files."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(tempfile.gettempdir(), "maillab-bench-pycache")
    return env
