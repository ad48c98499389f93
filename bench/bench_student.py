"""What one student costs a shared server: JupyterLab, a kernel and its mail lab, idle and in each lab.

Run: python bench/bench_student.py [--rounds 3] [--labs smtp,pop3]

For each student a hub runs one JupyterLab server and, while a notebook is open, one kernel; the
mail lab lives inside that kernel. This script measures, per process: memory (RSS, and PSS,
which shares the Python binary and libraries fairly between processes: the figure that adds up
over many students), CPU seconds (user + system, of that process alone: other work on the
machine does not change it), open files and listening ports. Each lab's solution notebook
(tests/lab_corpus/<lab>/correct.ipynb) runs in the kernel to show the cost while working.
A bare kernel without maillab is measured in the same run, in interleaved rounds, as the peer.
At the end it prints how many students a 2-core/8 GB and an 8-core/32 GB server carry.
Nothing here asserts; a figure over its budget is printed with FAIL.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "lab_corpus"
LABS = ["smtp", "pop3", "imap", "journey", "web-and-security"]
MIB = 1024 * 1024
TICK = os.sysconf("SC_CLK_TCK")
# Budgets the sizing below rests on (docs/jupyterhub.md): over them, the table is wrong.
BUDGET_KERNEL_LAB_PSS_MIB = 200  # a kernel with its lab, at its peak during a lab
BUDGET_SERVER_PSS_MIB = 200  # a student's idle JupyterLab server


@dataclass
class Usage:
    rss: float  # MiB
    pss: float  # MiB
    peak_rss: float  # MiB, VmHWM: the most this process ever had
    cpu: float  # seconds, user + system
    files: int
    ports: int  # listening TCP sockets
    threads: int


def usage(pid: int) -> Usage:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    kib = lambda key: int(status[key].split()[0]) / 1024  # noqa: E731
    pss = 0.0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            pss = int(line.split()[1]) / 1024
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / TICK  # utime, stime
    inodes = set()
    fds = os.listdir(f"/proc/{pid}/fd")
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    listening = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                listening += 1
    return Usage(kib("VmRSS"), pss, kib("VmHWM"), cpu, len(fds), listening, int(status["Threads"]))


class Kernel:
    """An ipykernel as a hub starts one, driven through jupyter_client."""

    def __init__(self):
        from jupyter_client.manager import KernelManager

        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(cwd=tempfile.gettempdir())
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.pid = self.manager.provisioner.process.pid

    def run(self, code: str, timeout: float = 120) -> None:
        # Errors are the tests' business (tests/test_labs_corpus.py); here only the cost counts.
        self.client.execute_interactive(code, timeout=timeout, output_hook=lambda msg: None)

    def stop(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def code_cells(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text())["cells"]
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in cells if c["cell_type"] == "code"]


def bare_kernel() -> Usage:
    kernel = Kernel()
    try:
        time.sleep(0.5)
        return usage(kernel.pid)
    finally:
        kernel.stop()


def kernel_with_lab() -> Usage:
    kernel = Kernel()
    try:
        kernel.run("import maillab\nlab = maillab.start(ports='any')")
        time.sleep(0.5)
        return usage(kernel.pid)
    finally:
        kernel.stop()


def each_lab(labs: list[str]) -> dict[str, tuple[Usage, Usage, float]]:
    """Per lab: (usage before, usage after, seconds) of a fresh kernel running its solution."""
    out = {}
    for lab in labs:
        kernel = Kernel()
        try:
            before = usage(kernel.pid)
            start = time.perf_counter()
            for code in code_cells(CORPUS / lab / "correct.ipynb"):
                kernel.run(code)
            seconds = time.perf_counter() - start
            out[lab] = (before, usage(kernel.pid), seconds)
        finally:
            kernel.stop()
    return out


def jupyterlab_server() -> Usage:
    """A student's JupyterLab server, idle after start (what jupyterhub-singleuser runs)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = tempfile.mkdtemp(prefix="bench-student-")
    env = dict(os.environ, HOME=home, JUPYTER_RUNTIME_DIR=os.path.join(home, "runtime"))
    proc = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
                             "--ServerApp.token=bench", "--ServerApp.ip=127.0.0.1", "--allow-root",
                             f"--ServerApp.root_dir={home}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token=bench", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        # One page load, as a student's browser does, then idle.
        urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token=bench", timeout=30).read()
        time.sleep(1)
        return usage(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)


def med(values: list[float]) -> float:
    return statistics.median(values)


def fmt(values: list[float], unit: str = "") -> str:
    return f"{med(values):.1f}{unit} [{min(values):.1f}-{max(values):.1f}]"


def verdict(value: float, budget: float) -> str:
    return f"(budget {budget:.0f})" + ("  FAIL" if value > budget else "")


def students_for(memory_gib: float, cores: int, per_student_mib: float, start_cpu: float,
                 reserve_mib: float) -> tuple[int, float]:
    """(students that fit in memory, seconds for all of them to start a lab at the same time)."""
    fit = int((memory_gib * 1024 - reserve_mib) // per_student_mib)
    return fit, fit * start_cpu / cores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--labs", default=",".join(LABS))
    args = parser.parse_args(argv)
    labs = [lab for lab in args.labs.split(",") if lab]
    print(f"== one student's cost ({os.cpu_count()} cores, load %.2f %.2f %.2f, Python %s)"
          % (*os.getloadavg(), sys.version.split()[0]), flush=True)

    bare, with_lab = [], []
    for r in range(args.rounds):  # interleaved: ABBA, so neither always runs in the other's wake
        pair = [("bare", bare_kernel, bare), ("lab", kernel_with_lab, with_lab)]
        for _name, fn, into in (pair if r % 2 == 0 else pair[::-1]):
            into.append(fn())
    server = [jupyterlab_server() for _ in range(max(1, args.rounds // 2))]
    worked = each_lab(labs)

    def row(label: str, samples: list[Usage]) -> None:
        print(f"  {label:34} RSS {fmt([u.rss for u in samples], ' MiB'):24} "
              f"PSS {fmt([u.pss for u in samples], ' MiB'):24} CPU {fmt([u.cpu for u in samples], ' s'):18} "
              f"files {med([u.files for u in samples]):.0f}  ports {med([u.ports for u in samples]):.0f}  "
              f"threads {med([u.threads for u in samples]):.0f}")

    print("\nidle (median [min-max] of %d rounds):" % args.rounds)
    row("kernel, no lab (peer)", bare)
    row("kernel + maillab.start()", with_lab)
    row("JupyterLab server (one per student)", server)
    lab_extra = med([u.pss for u in with_lab]) - med([u.pss for u in bare])
    print(f"  the lab adds {lab_extra:.1f} MiB PSS to a kernel "
          f"({med([u.pss for u in with_lab]) / med([u.pss for u in bare]):.2f}x the bare kernel); "
          f"starting kernel + lab costs {med([u.cpu for u in with_lab]):.2f} s CPU "
          f"({med([u.cpu for u in with_lab]) / med([u.cpu for u in bare]):.2f}x a bare kernel's start)")

    print("\nduring each lab (a fresh kernel runs the lab's solution notebook):")
    peaks = []
    for lab, (before, after, seconds) in worked.items():
        peaks.append(after.peak_rss)
        print(f"  {lab:18} wall {seconds:5.1f} s  CPU {after.cpu - before.cpu:5.2f} s  "
              f"peak RSS {after.peak_rss:6.1f} MiB  PSS after {after.pss:6.1f} MiB  "
              f"files {after.files:3d}  ports {after.ports:2d}  threads {after.threads}")

    # ---- sizing
    kernel_peak = max(peaks) if peaks else med([u.rss for u in with_lab])
    # PSS counts shared pages once per sharer: a fair per-student figure. The peak adds what a
    # lab allocates on top (RSS peak minus RSS idle), which is private memory.
    per_kernel = med([u.pss for u in with_lab]) + max(0.0, kernel_peak - med([u.rss for u in with_lab]))
    per_server = med([u.pss for u in server])
    per_student = per_kernel + per_server
    start_cpu = med([u.cpu for u in with_lab]) + med([u.cpu for u in server])
    lab_cpu = max((after.cpu - before.cpu for before, after, _s in worked.values()), default=0.0)
    reserve = 1024 + 125 + 56 + per_student  # system, hub, proxy (RSS in tests/test_hub.py), the teacher
    print("\nsizing:")
    print(f"  per student: kernel + lab {per_kernel:.0f} MiB {verdict(per_kernel, BUDGET_KERNEL_LAB_PSS_MIB)}, "
          f"JupyterLab server {per_server:.0f} MiB {verdict(per_server, BUDGET_SERVER_PSS_MIB)}, "
          f"total {per_student:.0f} MiB")
    print(f"  CPU: {start_cpu:.1f} s to start a server, kernel and lab; at most {lab_cpu:.1f} s "
          f"for a whole lab's solution")
    print(f"  reserve for the system, hub, proxy and the teacher: {reserve:.0f} MiB")
    for name, gib, cores in (("2 cores / 8 GB", 8, 2), ("8 cores / 32 GB", 32, 8)):
        fit, burst = students_for(gib, cores, per_student, start_cpu, reserve)
        print(f"  {name:16} {fit:4d} students by memory; all starting at once: ~{burst:.0f} s of "
              f"CPU queue ({fit * lab_cpu / cores:.0f} s if all run a whole lab's solution at once)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
