"""Binder, reproduced as far as this machine allows (a few minutes).

repo2docker would: install environment.yml's packages, copy the repository in, run postBuild as
written, and start a Jupyter server in the repository. Here: a fresh virtual environment gets
exactly environment.yml's pip list, a copy of the committed files gets `bash postBuild` with
that environment first on PATH, a Jupyter server starts from it, and a lab is validated through
nbgrader's server extension (what the Validate button calls). The instructor-only parts must be
off and locked; the master passes, the student version fails honestly.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from labcourse import ROOT


# Longer than the suite's --timeout=300: this module's fixture does minutes of work.
pytestmark = pytest.mark.timeout(1200)


def committed_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [p for p in out.stdout.decode().split("\0") if p]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def binder(tmp_path_factory):
    base = tmp_path_factory.mktemp("binder")
    home = base / "home"  # repo2docker's /home/jovyan: the repository
    for rel in committed_files():
        src = ROOT / rel
        if src.is_file():
            (home / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, home / rel)
    for rel in ("src/maillab/grading.py", "nbgrader_config.py"):  # (also before a commit)
        shutil.copy2(ROOT / rel, home / rel)
    env_spec = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_list = [p for d in env_spec["dependencies"] if isinstance(d, dict) for p in d["pip"]]
    venv = base / "env"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bin_dir = venv / "bin"
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", *pip_list],
                   check=True, timeout=900)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", VIRTUAL_ENV=str(venv),
               HOME=str(base), JUPYTER_CONFIG_DIR=str(base / ".jupyter"),
               JUPYTER_DATA_DIR=str(base / ".local" / "share" / "jupyter"))
    post = subprocess.run(["bash", "postBuild"], cwd=home, env=env, capture_output=True,
                          text=True, timeout=600)
    assert post.returncode == 0, post.stdout + post.stderr
    port, token = free_port(), secrets.token_hex(16)
    server = subprocess.Popen(
        [str(bin_dir / "jupyter"), "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={home}", "--allow-root"],
        cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5)
            break
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("the Jupyter server did not start: " + server.stderr.read()[-3000:])
            time.sleep(0.5)
    yield {"url": url, "token": token, "env": env, "bin": bin_dir, "home": home}
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


def call(binder, method: str, path: str, data: dict | None = None):
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(binder["url"] + path, data=body, method=method,
                                 headers={"Authorization": f"token {binder['token']}"})
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_the_package_comes_from_postbuild_and_the_instructor_tools_are_off(binder):
    py = binder["bin"] / "python"
    where = subprocess.run([str(py), "-c", "import maillab, nbgrader; print(maillab.__file__)"],
                           env=binder["env"], capture_output=True, text=True, check=True)
    assert str(binder["bin"].parent) in where.stdout  # installed into the env, not the checkout
    ext = subprocess.run([str(binder["bin"] / "jupyter"), "server", "extension", "list"],
                         env=binder["env"], capture_output=True, text=True)
    listing = ext.stdout + ext.stderr
    assert "nbgrader.server_extensions.formgrader" in listing and "disabled" in listing
    lab = subprocess.run([str(binder["bin"] / "jupyter"), "labextension", "list"],
                         env=binder["env"], capture_output=True, text=True)
    text = lab.stdout + lab.stderr
    for plugin in ("formgrader", "create-assignment", "course-list"):
        assert f"@jupyter/nbgrader:{plugin}" in text, text
    assert "locked" in text.lower(), text
    status, _ = call(binder, "GET", "/formgrader")
    assert status == 404
    status, page = call(binder, "GET", "/lab/tree/course/00-welcome.ipynb")
    assert status == 200 and "JupyterLab" in page


def test_validate_button_passes_the_master_and_fails_the_student_version(binder):
    status, out = call(binder, "POST", "/assignments/validate",
                       {"path": "solutions/journey/journey.ipynb"})
    assert status == 200, out
    result = json.loads(out)
    # nbgrader's Validator answers {} when nothing failed and no graded cell was changed
    assert result["success"] and result["value"] == {}, result
    status, out = call(binder, "POST", "/assignments/validate",
                       {"path": "labs/journey/journey.ipynb"})
    result = json.loads(out)
    assert result["success"], result
    failed = result["value"].get("failed", [])
    assert len(failed) >= 8 and "changed" not in result["value"], result
    assert any("NotImplementedError" in str(f) for f in failed)
