"""Memory of a kernel in which ``lab = maillab.start()`` and ``lab`` are run again and again.

Run: python bench/bench_lab_memory.py [--rounds 10] [--messages 100]

IPython keeps every displayed value in its output cache (``Out[n]``), so each re-run of the
first cell of a notebook keeps the previous lab object alive. A replaced lab must therefore drop
what it holds (transcript lines, wire copies, store): issue 11 measured about 65 MB more per
re-run in 07-administrator. Two real kernels run the same rounds, interleaved: the course
kernel displays ``lab`` each time (as the notebooks do), the peer kernel does the same work
without displaying it (nothing in ``Out``). Each round sends ``--messages`` messages of 20 kB
through the lab and downloads them over IMAP, then reads the kernel's resident memory (RSS).
The figure is the growth per re-run; the course kernel should grow no faster than its peer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import at_most, header, python_env, spread  # noqa: E402
from jupyter_client.manager import start_new_kernel  # noqa: E402

SETUP = """
import gc, smtplib, imaplib, maillab
def _rss_mb():
    return [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmRSS")][0]
def _traffic(lab, count):
    text = ("Lorem ipsum dolor sit amet. " * 30 + "\\r\\n") * 24  # about 20 kB
    with smtplib.SMTP("127.0.0.1", lab.port("smtp", "example.net")) as s:
        for n in range(count):
            s.sendmail("news@example.com", ["maria@example.net"], f"Subject: {n}\\r\\n\\r\\n{text}")
    imap = imaplib.IMAP4("127.0.0.1", lab.port("imap", "example.net"))
    imap.login("maria", "sunflower"); imap.select("INBOX"); imap.fetch("1:*", "(BODY[])")
    imap.logout()
"""

GROWTH_GOAL_MB = 2.0  # per re-run, beyond the peer's


def run(kc, code: str) -> str:
    msg_id = kc.execute(code)
    out = ""
    while True:
        msg = kc.get_iopub_msg(timeout=120)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            out += msg["content"]["text"]
        elif msg["msg_type"] == "error":
            raise RuntimeError("\n".join(msg["content"]["traceback"]))
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--messages", type=int, default=100)
    args = parser.parse_args()
    os.environ.update(python_env())  # the kernels import this checkout's maillab
    header(f"kernel memory over {args.rounds} re-runs of lab = maillab.start(), "
           f"{args.messages} messages of 20 kB each")
    kernels = {name: start_new_kernel(kernel_name="python3") for name in ("course", "peer")}
    # ports="any": the two kernels are one Jupyter parent's; on the usual ports each new lab
    # would take them over from the other kernel's lab (maillab.handover), a cost not measured here
    cells = {"course": ["lab = maillab.start(ports='any')", "lab"],
             "peer": ["lab = maillab.start(ports='any')", "lab;"]}
    rss: dict[str, list[float]] = {name: [] for name in kernels}
    try:
        for _km, kc in kernels.values():
            run(kc, SETUP)
        for r in range(args.rounds):
            order = list(kernels) if r % 2 == 0 else list(kernels)[::-1]
            for name in order:
                kc = kernels[name][1]
                for cell in cells[name]:
                    run(kc, cell)
                run(kc, f"_traffic(lab, {args.messages})")
                rss[name].append(float(run(kc, "gc.collect(); print(_rss_mb())")))
    finally:
        for km, kc in kernels.values():
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    growth = {name: [b - a for a, b in zip(v, v[1:])] for name, v in rss.items()}
    for name in kernels:
        print(f"{name:7} RSS MB by round: " + " ".join(f"{x:.0f}" for x in rss[name]))
    for name in kernels:
        print(f"{name:7} growth per re-run MB: {spread(growth[name])}")
    extra = statistics.median(growth["course"]) - statistics.median(growth["peer"])
    print(f"course minus peer, MB per re-run: {extra:.1f} (goal <= {GROWTH_GOAL_MB}) "
          f"{at_most(extra, GROWTH_GOAL_MB)}")


if __name__ == "__main__":
    main()
