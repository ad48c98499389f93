"""A long fuzzing run over every protocol of the lab: hangs, exceptions, internal errors, memory.

Run: python bench/fuzz.py [--inputs 100000] [--seed 1] [--only imap,pop3] [--out DIR]
     python bench/fuzz.py --replay FILE --target imap     # one saved input, to debug it

Every *target* gets inputs made by mutating its seeds (byte flips, inserted tokens and special
bytes, cut, repeated and spliced pieces, long runs) in a worker process of its own. Printed per
target: inputs and inputs/s, hangs (an input over ``--hang`` seconds, 1 s by default), exceptions
that escaped the target, protocol failures the target reported (SERVERBUG, HTTP 500, ...), the
slowest input, and the worker's RSS after a warm-up and at its peak. A protocol (the target
name up to its first "-": smtp-auth counts for smtp) needs ``--inputs`` inputs in all, split
among its targets. FAIL lines name what went wrong, with the saved input; nothing asserts.

On a shared, loaded machine an input can take over a second only because the worker waited for
a CPU. So an input over ``--hang`` is run again at once, alone (the same target, idle: a worker
runs one input at a time), and is a *hang* only if it is slow again; otherwise it is counted as
*slow* (shown, not a failure), with both times and the CPU time the first run used. When even
the replay waited rather than worked (it used under a quarter of ``--hang`` in CPU time, the
lab's threads included) while the load average is over twice the cores, it is counted apart as
*starved*: listed with its times, not a failure, worth a replay on a quiet machine (--replay).

The contract for a module of targets (this file imports bench/fuzz_smtp.py and
bench/fuzz_webmail.py when they exist, beside its own IMAP, POP3 and MIME targets):

``TARGETS: dict[str, Callable[[bytes], str | None]]`` (required)
    ``target(data)`` runs one input and returns None when the answer was fine, or a short
    text naming a protocol failure ("SERVERBUG ...", "HTTP 500 ..."). An exception that
    escapes it counts as an exception. The harness measures each input's time. Targets are
    created when the module is imported but must start servers on first use only.
``SEEDS`` (optional)
    Inputs worth mutating: a list for all targets, or a dict from target name to a list.
``TOKENS`` (optional)
    Words the mutator inserts (same two shapes as SEEDS).
``MAX_INPUT`` (optional)
    The largest input a mutation may make (bytes), for all targets or a dict per target;
    default 64 KiB.
``random_input(rng: random.Random) -> bytes`` (optional)
    Made-up inputs, mixed in with the mutations (a quarter of them).
``CLOSE`` (optional)
    A function run at the end of a worker (temporary folders and the like).
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import os
import random
import resource
import signal
import sys
import tempfile
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

PLUGINS = ["fuzz_smtp", "fuzz_webmail"]
KILL_AFTER = 20.0  # seconds: an input still running is interrupted (a hang for certain)
SILENCE = 120.0  # seconds without word from a worker: it is stuck where no signal reaches
MAX_INPUT = 64 * 1024  # mutated inputs grow up to this size (a linear target reads it well within 1 s)
GENERIC_SEEDS = [b"", b"\r\n", b"x", b"hello world\r\n"]
SPECIAL = [b"\r\n", b"\n", b"\r", b"\x00", b"\xff", b"\xc3\xa9", b"\xed\xa0\x80", b"(", b")", b"[", b"]",
           b"{", b"}", b"<", b">", b'"', b"\\", b"%", b"*", b" ", b"\t", b"=", b";", b":", b",", b".",
           b"-1", b"0", b"4294967296", b"99999999999999999999", b"{4294967295}\r\n", b"=?utf-8?q?=0D=0A?="]


# ----------------------------------------------------------------------------- targets

def own_targets() -> dict:
    """This file's targets, in the plug-in shape: the IMAP and POP3 cores, the MIME parsers."""
    from maillab.imap.fuzzing import IMAP_SEEDS, IMAP_TOKENS, MIME_SEEDS, MIME_TOKENS, ImapTarget, mime_target
    from maillab.pop3.fuzzing import POP3_SEEDS, POP3_TOKENS, Pop3Target
    imap, pop3 = ImapTarget(), Pop3Target()

    def sessions(seeds, states):
        """Seeds with a state byte and a cut byte in front, alone and a few in a row."""
        rng = random.Random(7)
        out = [bytes([s, rng.randrange(256)]) + seed for s in range(states) for seed in seeds]
        out += [bytes([rng.randrange(states), rng.randrange(256)]) + b"".join(rng.sample(seeds, 4))
                for _ in range(50)]
        return out

    def close():
        imap.close()
        pop3.close()
    # The heaviest hostile messages cost a second each: the test suite runs them one by one.
    light = [m for m in MIME_SEEDS if len(m) < 64 * 1024]
    return {"TARGETS": {"imap": imap, "pop3": pop3, "mime": mime_target},
            # A session input of a few kilobytes holds dozens of commands; each turn of the
            # loop (one command) is timed by the target itself.
            "MAX_INPUT": {"imap": 4096, "pop3": 4096, "mime": MAX_INPUT},
            "SEEDS": {"imap": sessions(IMAP_SEEDS, len(ImapTarget.STATES)),
                      "pop3": sessions(POP3_SEEDS, len(Pop3Target.STATES)), "mime": light},
            "TOKENS": {"imap": IMAP_TOKENS, "pop3": POP3_TOKENS, "mime": MIME_TOKENS},
            "CLOSE": close}


def load_source(source: str) -> dict:
    """A source's targets and inputs: ``"own"`` or a plug-in module's name."""
    if source == "own":
        return own_targets()
    module = importlib.import_module(source)
    return {key: getattr(module, key) for key in ("TARGETS", "SEEDS", "TOKENS", "MAX_INPUT", "random_input",
                                                   "CLOSE") if hasattr(module, key)}


def sources() -> dict[str, list[str]]:
    """Each source and its target names (plug-ins that are not there are left out)."""
    found = {"own": ["imap", "pop3", "mime"]}
    for name in PLUGINS:
        if (HERE / f"{name}.py").exists():
            try:
                found[name] = list(importlib.import_module(name).TARGETS)
            except Exception as e:  # a plug-in that does not import is reported, not fatal
                print(f"FAIL {name}: cannot import it ({type(e).__name__}: {e})")
    return found


def _for(table, name: str, default: list[bytes]) -> list[bytes]:
    if isinstance(table, dict):
        return list(table.get(name) or default)
    return list(table) if table else default


# ----------------------------------------------------------------------------- inputs

class Mutator:
    """Inputs made from seeds by a few random edits each (the "havoc" of AFL, simplified)."""

    def __init__(self, rng: random.Random, seeds: list[bytes], tokens: list[bytes], generate=None,
                 max_input: int = MAX_INPUT):
        self.rng, self.seeds, self.tokens, self.generate = rng, seeds or GENERIC_SEEDS, tokens + SPECIAL, generate
        self.max_input = max_input

    def next(self) -> bytes:
        rng = self.rng
        if self.generate is not None and rng.random() < 0.25:
            return self.generate(rng)
        if rng.random() < 0.03:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
        data = bytearray(rng.choice(self.seeds))
        for _ in range(rng.randint(1, 8)):
            self._edit(data)
            if len(data) > self.max_input:
                del data[self.max_input:]
        return bytes(data)

    def _edit(self, data: bytearray) -> None:
        rng = self.rng
        n = len(data)
        i = rng.randrange(n + 1)
        op = rng.randrange(10)
        if op == 0 and n:
            data[min(i, n - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            data[min(i, n - 1)] = rng.choice(b"\x00\r\n ()[]{}<>\"\\%*:;,.=-\x7f\x80\xff0")
        elif op in (2, 3):
            data[i:i] = rng.choice(self.tokens)
        elif op == 4 and n:
            del data[i:i + rng.randint(1, 32)]
        elif op == 5 and n:  # repeat a piece: many parts, deep nesting, long lines
            j = min(n, i + rng.randint(1, 64))
            data[j:j] = data[i:j] * rng.choice((2, 3, 10, 100, 1000))
        elif op == 6:
            other = rng.choice(self.seeds)
            k = rng.randrange(len(other) + 1)
            data[i:] = other[k:]
        elif op == 7:
            data[i:i] = rng.choice((b"A", b"(", b")", b"\r\n", b" ", b"\x00", b"*", b"--b\r\n")) * rng.choice(
                (100, 1000, 10_000, 60_000))
        elif op == 8 and n:
            del data[i:]
        else:
            data[i:i] = bytes([rng.randrange(256)])


# ----------------------------------------------------------------------------- the worker

class _Interrupted(BaseException):
    pass


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_one(target, data: bytes) -> tuple[str | None, str | None, float, float]:
    """One input through a target: (kind of trouble or None, its message, seconds, CPU seconds
    of this process meanwhile, the target's server threads included)."""
    kind = message = None
    signal.setitimer(signal.ITIMER_REAL, KILL_AFTER)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        verdict = target(data)
        if verdict is not None:
            kind, message = "failure", str(verdict)
    except _Interrupted:
        kind, message = "hang", f"still running after {KILL_AFTER:g} s: interrupted"
    except Exception as e:  # noqa: BLE001 - what escapes a target is what we count
        kind, message = "exception", f"{type(e).__name__}: {e}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return kind, message, time.perf_counter() - t0, time.process_time() - c0


def worker(conn, source: str, name: str, count: int, seed: int, hang: float, out_dir: str) -> None:
    """Run ``count`` inputs through one target; report to the parent through ``conn``."""
    plugin = load_source(source)
    target = plugin["TARGETS"][name]
    rng = random.Random(seed)
    limit = plugin.get("MAX_INPUT", MAX_INPUT)
    mutator = Mutator(rng, _for(plugin.get("SEEDS"), name, GENERIC_SEEDS), _for(plugin.get("TOKENS"), name, []),
                      plugin.get("random_input"), limit.get(name, MAX_INPUT) if isinstance(limit, dict) else limit)

    def interrupt(_signum, _frame):
        raise _Interrupted()
    signal.signal(signal.SIGALRM, interrupt)
    try:  # a warm-up, not counted: a target may start a lab or a server on its first input
        target(mutator.seeds[0])
    except Exception:  # noqa: BLE001 - the counted inputs will show it again
        pass
    stats = {"inputs": 0, "seconds": 0.0, "hangs": 0, "slow": 0, "starved": 0, "exceptions": 0, "failures": 0,
             "slowest": 0.0, "slowest_alone": 0.0, "examples": [], "rss_warm": 0.0}
    last_report = time.monotonic()
    for i in range(count):
        data = mutator.next()
        kind, message, took, cpu = run_one(target, data)
        stats["inputs"] += 1
        stats["seconds"] += took
        stats["slowest"] = max(stats["slowest"], took)
        if kind is None and took > hang:
            _k, _m, again, cpu_again = run_one(target, data)  # alone, at once
            if again > hang:  # once more, in case the machine was still busy
                again, cpu_again = min((again, cpu_again), run_one(target, data)[2:])
            stats["slowest_alone"] = max(stats["slowest_alone"], min(took, again))
            load = os.getloadavg()[0]
            if again > hang and cpu_again < hang / 4 and load > 2 * (os.cpu_count() or 1):
                kind, message = "starved", (f"{took:.2f} s, again alone {again:.2f} s but {cpu_again:.2f} s "
                                            f"of CPU, at load {load:.0f}")
            elif again > hang:
                kind, message = "hang", f"{took:.2f} s, again alone {again:.2f} s ({cpu_again:.2f} s of CPU)"
            else:
                kind, message = "slow", (f"{took:.2f} s ({cpu:.2f} s of CPU), again alone {again:.3f} s: "
                                         f"the machine's load")
        if kind is not None:
            stats[{"failure": "failures", "exception": "exceptions", "hang": "hangs", "slow": "slow",
                   "starved": "starved"}[kind]] += 1
            if sum(1 for e in stats["examples"] if e[0] == kind) < 3 or took >= KILL_AFTER:
                path = Path(out_dir) / f"{name}-{kind}-{seed}-{i}.bin"
                path.write_bytes(data)
                stats["examples"].append((kind, message[:300], str(path)))
        if i == 100:
            stats["rss_warm"] = _rss_mb()
        if kind == "hang" and took >= KILL_AFTER:
            break  # the target may be left in a broken state: the parent starts a fresh worker
        if time.monotonic() - last_report > 1.0:
            conn.send(("progress", stats["inputs"]))
            last_report = time.monotonic()
    # What the target keeps, not what the C allocator holds on to: a lab that has had no
    # traffic for a while collects garbage and hands free pages back (maillab.lab's quiet
    # check); do the same before the last reading.
    from maillab.lab import release_free_memory
    release_free_memory()
    stats["rss_end"] = _rss_mb()
    stats["rss_peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if not stats["rss_warm"]:
        stats["rss_warm"] = stats["rss_end"]
    close = plugin.get("CLOSE")
    if close is not None:
        close()
    conn.send(("done", stats))


def run_target(source: str, name: str, count: int, seed: int, hang: float, out_dir: str) -> dict:
    """Run a target's inputs in worker processes (a fresh one after a hang that had to be cut)."""
    ctx = multiprocessing.get_context("spawn")
    total = {"inputs": 0, "seconds": 0.0, "hangs": 0, "slow": 0, "starved": 0, "exceptions": 0, "failures": 0,
             "slowest": 0.0, "slowest_alone": 0.0, "examples": [], "rss_warm": 0.0, "rss_end": 0.0,
             "rss_peak": 0.0, "wall": 0.0}
    start = time.monotonic()
    round_ = 0
    while total["inputs"] < count:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker, args=(child, source, name, count - total["inputs"],
                                                seed * 1000 + round_, hang, out_dir), daemon=True)
        proc.start()
        child.close()
        stats = None
        seen = 0
        while True:
            if not parent.poll(SILENCE):
                proc.kill()
                total["hangs"] += 1
                total["examples"].append(("hang", f"the worker said nothing for {SILENCE:g} s "
                                                  f"(after input {seen}); killed", ""))
                total["inputs"] += seen + 1
                break
            try:
                kind, payload = parent.recv()
            except EOFError:  # the worker died (out of memory, a crash in C)
                total["exceptions"] += 1
                total["examples"].append(("exception", f"the worker died with code {proc.exitcode} "
                                                       f"after input {seen}", ""))
                total["inputs"] += seen + 1
                break
            if kind == "progress":
                seen = payload
                continue
            stats = payload
            break
        proc.join(5)
        if proc.is_alive():
            proc.kill()
        round_ += 1
        if stats is not None:
            for key in ("inputs", "seconds", "hangs", "slow", "starved", "exceptions", "failures"):
                total[key] += stats[key]
            for key in ("slowest", "slowest_alone"):
                total[key] = max(total[key], stats[key])
            total["examples"] += stats["examples"]
            total["rss_warm"] = total["rss_warm"] or stats["rss_warm"]
            total["rss_end"] = stats["rss_end"]
            total["rss_peak"] = max(total["rss_peak"], stats["rss_peak"])
    total["wall"] = time.monotonic() - start
    return total


# ----------------------------------------------------------------------------- main

def protocol(target: str) -> str:
    return target.split("-", 1)[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--inputs", type=int, default=100_000, help="inputs per protocol (split among its targets)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hang", type=float, default=1.0, help="seconds: an input slower than this is a hang")
    ap.add_argument("--only", default="", help="comma-separated protocols or targets")
    ap.add_argument("--out", default="", help="folder for failing inputs (default: a new temporary one)")
    ap.add_argument("--replay", default="", help="run one saved input through --target and print the verdict")
    ap.add_argument("--target", default="")
    args = ap.parse_args()
    found = sources()
    if args.replay:
        source = next(s for s, names in found.items() if args.target in names)
        target = load_source(source)["TARGETS"][args.target]
        t0 = time.perf_counter()
        print(repr(target(Path(args.replay).read_bytes())), f"({time.perf_counter() - t0:.3f} s)")
        return 0
    wanted = {w for w in args.only.split(",") if w}
    plan = [(source, name) for source, names in found.items() for name in names
            if not wanted or name in wanted or protocol(name) in wanted]
    per_protocol: dict[str, int] = {}
    for _source, name in plan:
        per_protocol[protocol(name)] = per_protocol.get(protocol(name), 0) + 1
    out_dir = args.out or tempfile.mkdtemp(prefix="maillab-fuzz-")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    print(f"fuzzing {len(plan)} targets, {args.inputs:,} inputs per protocol, seed {args.seed}, hang over "
          f"{args.hang:g} s; load {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}, {os.cpu_count()} cores; "
          f"failing inputs go to {out_dir}", flush=True)
    results = {}
    for source, name in plan:
        count = -(-args.inputs // per_protocol[protocol(name)])
        seed = args.seed * 7919 + zlib.crc32(name.encode())
        results[name] = r = run_target(source, name, count, seed, args.hang, out_dir)
        print(f"  {name}: {r['inputs']:,} inputs in {r['wall']:.0f} s (load {os.getloadavg()[0]:.2f})", flush=True)

    print()
    head = (f"{'target':18}{'inputs':>10}{'inputs/s':>10}{'slow':>6}{'starved':>8}{'hangs':>7}{'exceptions':>11}"
            f"{'failures':>10}{'slowest ms':>12}{'alone ms':>10}{'RSS warm':>10}{'RSS peak':>10}{'RSS end':>9}")
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        rate = r["inputs"] / r["seconds"] if r["seconds"] else 0.0
        print(f"{name:18}{r['inputs']:>10,}{rate:>10.0f}{r['slow']:>6}{r['starved']:>8}{r['hangs']:>7}{r['exceptions']:>11}"
              f"{r['failures']:>10}{r['slowest'] * 1000:>12.0f}{r['slowest_alone'] * 1000:>10.0f}"
              f"{r['rss_warm']:>9.0f}M{r['rss_peak']:>9.0f}M{r['rss_end']:>8.0f}M")
    print(f"(load {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} at the end; slow: over {args.hang:g} s in "
          f"the run, not when run again alone; starved: slow again but idle (little CPU) on a loaded "
          f"machine; hangs: over {args.hang:g} s both times; alone ms: the "
          f"slowest of those inputs at its faster run; RSS: the target's worker after 100 inputs, at "
          f"its peak, at the end after the trim a quiet lab does: gc and malloc_trim)")

    fails = []
    totals: dict[str, int] = {}
    for name, r in results.items():
        totals[protocol(name)] = totals.get(protocol(name), 0) + r["inputs"]
        for kind, key in (("hang", "hangs"), ("exception", "exceptions"), ("failure", "failures")):
            if r[key]:
                example = next((e for e in r["examples"] if e[0] == kind), None)
                detail = f": {example[1]}" + (f" (input: {example[2]})" if example and example[2] else "") \
                    if example else ""
                fails.append(f"FAIL {name}: {r[key]} {key}{detail}")
        if r["rss_warm"] and r["rss_end"] > 1.5 * r["rss_warm"] + 20:
            fails.append(f"FAIL {name}: RSS grew from {r['rss_warm']:.0f} MB to {r['rss_end']:.0f} MB "
                         f"(goal: within 1.5x)")
    for proto, n in totals.items():
        if n < args.inputs:
            fails.append(f"FAIL {proto}: {n:,} inputs, below the floor of {args.inputs:,}")
    for name, r in results.items():
        for kind, message, path in r["examples"]:
            if kind in ("slow", "starved"):
                print(f"{kind} (not a hang) {name}: {message}" + (f" (input: {path})" if path else ""))
    print()
    print("\n".join(fails) if fails else "no hangs, exceptions or protocol failures")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
