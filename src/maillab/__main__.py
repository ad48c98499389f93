"""``python -m maillab serve``: the lab as a foreground process, for Thunderbird, curl or a terminal.

``python -m maillab grade LAB``: autograde a lab's submissions in sandboxes (maillab.grader).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .i18n import _
from .lab import MailLab


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maillab",
                                     description="maillab: a little mail system for learning.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser("serve", help="run the mail lab until Ctrl-C")
    serve_parser.add_argument("--root", help="keep the mail store, and the lab's CA and server "
                                             "keys (ROOT/tls/), in this folder (default: a "
                                             "temporary folder removed on exit)")
    serve_parser.add_argument("--ports", choices=["mnemonic", "any", "standard"],
                              default="mnemonic",
                              help="mnemonic: 2525, 1110, 1143 ... when free (default); any: free "
                                   "ports; standard: 25, 110, 143 (needs permission to bind ports "
                                   "below 1024)")
    grade = sub.add_parser("grade", help="autograde every collected submission of a lab, in "
                                         "sandboxes, checked outside the notebooks")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["grade"]:  # the grader's modules load for grading only, not for serve
        from .grader.command import add_arguments
        add_arguments(grade)
    args = parser.parse_args(argv)
    if args.command == "grade":
        from .grader.command import run
        return run(args)
    return serve(args)


def serve(args) -> int:
    ports = args.ports
    if ports == "standard":
        ports = {"smtp": 25, "pop3": 110, "imap": 143}
    lab = MailLab(root=args.root, ports=ports).start()
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(lab, flush=True)
    print(f"store: {lab.store.root}", flush=True)
    if lab.ca is not None:
        print(_("CA certificate (tell your mail program to trust it): {0}").format(lab.ca_file),
              flush=True)
    if any(s.protocol == "webmail" for s in lab.services):  # autoconfig (docs/webmail.md)
        print(_("mail programs find their settings at {0}<domain> (Thunderbird: the pref "
                "mailnews.auto_config_url)").format(
            f"http://localhost:{lab.webmail_port}/autoconfig/v1.1/"), flush=True)
    print("ready; press Ctrl-C to stop", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        lab.stop()
        print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
