#!/usr/bin/env python3
"""Start the maillab course, or run its tests. Needs only Python 3.11+; standard library only.

    python3 course.py             open the course in JupyterLab
    python3 course.py --lang el   open the Greek edition (course/el/), Η ελληνική έκδοση
    python3 course.py test        run the test suite

The first run creates a virtual environment in .venv and installs maillab into it (a few
minutes); later runs reinstall only when pyproject.toml has changed. Any further arguments are
passed on: to `jupyter lab` (e.g. --no-browser, --port 9999) or to pytest (e.g. -k smtp, -x).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / "maillab-install.json"  # what was installed, from which pyproject.toml
WELCOME = "course/00-welcome.ipynb"  # a translated edition has its own: course/<lang>/00-welcome
PYTEST_FLAGS = ["-q", "-ra", "--timeout=300"]


def bootstrap(extras: set[str]) -> None:
    """Make sure .venv exists and holds maillab (editable) with the given extras."""
    if sys.version_info < (3, 11):
        sys.exit(f"maillab needs Python 3.11 or newer; this is {sys.version.split()[0]}.")
    if not PYTHON.exists():
        print("Creating the virtual environment in .venv (first run only) ...", flush=True)
        try:
            venv.create(VENV, with_pip=True)
        except (OSError, subprocess.CalledProcessError) as error:
            shutil.rmtree(VENV, ignore_errors=True)  # a half-made .venv would confuse the next run
            sys.exit(f"Could not create .venv ({error}).\n"
                     "On Debian/Ubuntu: sudo apt-get install python3-venv, then try again.")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    try:
        stamp = json.loads(STAMP.read_text())
    except (OSError, ValueError):
        stamp = {}
    current = stamp.get("pyproject") == digest
    installed = set(stamp.get("extras", [])) if current else set()
    if current and extras <= installed:
        return  # up to date: nothing to install
    extras = extras | installed  # keep what an earlier run added (e.g. the test tools)
    target = "." + (f"[{','.join(sorted(extras))}]" if extras else "")
    print(f"Installing maillab{target[1:]} and its dependencies into .venv"
          " (a few minutes the first time) ...", flush=True)
    STAMP.unlink(missing_ok=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    result = subprocess.run([*pip, "-e", target], cwd=ROOT)
    if result.returncode:
        sys.exit(f"Installation failed (pip exit code {result.returncode}); see above.")
    STAMP.write_text(json.dumps({"pyproject": digest, "extras": sorted(extras)}))


def run(command: list[str]) -> None:
    """Run a program from .venv as if the environment were activated, and exit with its code."""
    os.environ["VIRTUAL_ENV"] = str(VENV)
    os.environ["PATH"] = str(BIN) + os.pathsep + os.environ.get("PATH", "")
    os.chdir(ROOT)
    if os.name == "nt":
        sys.exit(subprocess.call(command))
    os.execv(command[0], command)  # the program takes over this process (and Ctrl-C)


def welcome_page(args: list[str]) -> tuple[str, list[str]]:
    """The first notebook to open (``--lang el``: the Greek edition's) and the other arguments."""
    lang, rest = "en", []
    for arg in args:
        if rest and rest[-1] == "--lang":
            rest.pop()
            lang = arg
        elif arg.startswith("--lang="):
            lang = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if rest and rest[-1] == "--lang":
        sys.exit("--lang needs a language, e.g. python3 course.py --lang el")
    course, welcome = WELCOME.rsplit("/", 1)
    page = WELCOME if lang == "en" else f"{course}/{lang}/{welcome}"
    if not (ROOT / page).exists():
        sys.exit(f"There is no edition of the course in {lang!r} ({page} is missing).")
    return page, rest


def main(args: list[str]) -> None:
    if args[:1] in (["-h"], ["--help"], ["help"]):
        print(__doc__.strip())
    elif args[:1] == ["test"]:
        bootstrap({"test"})
        run([str(PYTHON), "-m", "pytest", *PYTEST_FLAGS, *args[1:]])
    else:
        page, args = welcome_page(args)
        bootstrap(set())
        # The whole repository in the file browser (course/ and labs/), the welcome notebook open,
        # also from the URL printed with --no-browser.
        options = [f"--ServerApp.root_dir={ROOT}", f"--LabApp.default_url=/lab/tree/{page}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            options.append("--allow-root")  # Jupyter refuses to run as root without it
        run([str(BIN / "jupyter"), "lab", *options, *args])


if __name__ == "__main__":
    main(sys.argv[1:])
