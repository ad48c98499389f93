"""A class on one JupyterHub host, for real: docs/jupyterhub/jupyterhub_config.py, run by the test.

JupyterHub 6 with configurable-http-proxy (npm) and LocalProcessSpawner; one teacher and three
students as real Unix users made by the test; every student's JupyterLab started through the
hub's REST API; the smtp lab fetched, worked on (a correct, a partial and an untouched
submission from tests/lab_corpus/) and run in each student's own kernel; then submit, collect,
autograde, feedback and fetch feedback, all through nbgrader's exchange; and each student's
mail lab checked unreachable from the other students' kernels.

The hub's environment (a venv with JupyterHub and this checkout's maillab, and the proxy from
npm) is kept in /opt/maillab-hub-test (MAILLAB_HUB_CACHE), so later runs only reinstall maillab.
Users, processes and folders are removed at the end, also when the test fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from conftest import require_tool
from unixusers import UnixUser, require_root, shared_python, unique_name

pytestmark = pytest.mark.timeout(900)  # the first run installs JupyterHub: minutes

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "docs" / "jupyterhub" / "jupyterhub_config.py"
GLOBAL_NBGRADER = ROOT / "docs" / "jupyterhub" / "nbgrader_config.py"
CACHE = Path(os.environ.get("MAILLAB_HUB_CACHE", "/opt/maillab-hub-test"))
HUB_PACKAGES = ["jupyterhub==6.1.1", "jupyterhub-idle-culler==2.0.0", "ipykernel>=6.29",
                "setuptools>=77", "requests"]
PROXY_PACKAGE = "configurable-http-proxy@5.3.0"  # needs Node.js 20; Debian 12's is 18:
PROXY_PACKAGE_NODE18 = "configurable-http-proxy@4.6.3"
REPO2DOCKER = "jupyter-repo2docker==2026.4.0"  # builds Binder's images; here it only writes one
LAB = "smtp"
CORPUS = ROOT / "tests" / "lab_corpus" / LAB
EXPECTED = json.loads((ROOT / "tests" / "lab_corpus" / "expected.json").read_text())[LAB]
WORK = {"a": "correct", "b": "partial", "c": "unchanged"}  # student -> what they hand in
TIMINGS = ROOT / "test-artifacts" / "hub-timings.json"


# ---------------------------------------------------------------- the hub's environment

def _run(args, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, **kw)
    if result.returncode:
        raise AssertionError(f"{args[:4]} failed ({result.returncode}):\n{result.stdout[-3000:]}"
                             f"\n{result.stderr[-3000:]}")
    return result


def cached_venv(name: str, packages: list[str]) -> Path:
    """A venv under the cache with these packages, made once (again only when the list changes).
    Made from the system's Python, so that every user can run it."""
    CACHE.mkdir(parents=True, exist_ok=True)
    os.chmod(CACHE, 0o755)
    venv = CACHE / name
    wanted = hashlib.sha256(json.dumps([packages, shared_python()]).encode()).hexdigest()
    stamp = venv / ".maillab-hub-test"
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once share one cache
        if not stamp.exists() or stamp.read_text() != wanted:
            shutil.rmtree(venv, ignore_errors=True)
            _run([shared_python(), "-m", "venv", str(venv)], timeout=120)
            _run([str(venv / "bin" / "pip"), "install", "-q", *packages], timeout=900)
            stamp.write_text(wanted)
    return venv


def hub_environment() -> tuple[Path, Path]:
    """(venv, proxy program): JupyterHub and maillab's dependencies installed once, this
    checkout's maillab reinstalled every run. Under /opt: every user must be able to run it."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    venv = cached_venv("venv", HUB_PACKAGES + deps)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # This checkout's package, copied in (an editable install would point into a folder
        # students may not be able to enter).
        with tempfile.TemporaryDirectory() as build:
            for name in ("pyproject.toml", "README.md", "LICENSE"):
                shutil.copy(ROOT / name, Path(build) / name)
            shutil.copytree(ROOT / "src", Path(build) / "src",
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            _run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "--force-reinstall",
                  "--no-build-isolation", build], timeout=300)
        node = _run([require_tool("node"), "--version"]).stdout.strip()  # "v20.20.2"
        package = PROXY_PACKAGE if int(node.lstrip("v").split(".")[0]) >= 20 else PROXY_PACKAGE_NODE18
        proxy_dir = CACHE / package.replace("@", "-")
        proxy = proxy_dir / "node_modules" / ".bin" / "configurable-http-proxy"
        if not proxy.exists():
            _run([require_tool("npm"), "install", "--prefix", str(proxy_dir), "--no-save",
                  "--no-audit", "--no-fund", package], timeout=600)
    return venv, proxy


def free_base_port() -> int:
    """A port p with p, p+1, p+81, p+90 and p+91 free (the hub config derives its ports so),
    below the ephemeral range, where other programs' port-0 sockets do not land."""
    import random

    for _ in range(200):
        base = random.randrange(20000, 29000)
        ok = True
        for port in (base, base + 1, base + 81, base + 90, base + 91):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
        if ok:
            return base
    raise RuntimeError("no free ports")


# ---------------------------------------------------------------- the hub

class Hub:
    def __init__(self, url: str, token: str):
        self.url = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {token}"

    def api(self, method: str, path: str, **kw) -> requests.Response:
        response = self.session.request(method, self.url + path, timeout=120, **kw)
        assert response.status_code < 400, (method, path, response.status_code, response.text[:500])
        return response

    def start_server(self, user: str) -> None:
        self.api("POST", f"/hub/api/users/{user}/server")

    def wait_ready(self, user: str, timeout: float = 120) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            servers = self.api("GET", f"/hub/api/users/{user}").json().get("servers", {})
            if servers.get("", {}).get("ready"):
                return
            time.sleep(0.5)
        raise AssertionError(f"{user}'s server did not start in {timeout} s")

    def assignments(self, user: str, action: str, course: str = "maillab") -> list:
        """nbgrader's Assignments tab, as the student's JupyterLab calls it."""
        params = {"course_id": course, "assignment_id": LAB}
        if action == "list":
            return self.api("GET", f"/user/{user}/assignments", params={"course_id": course}).json()
        result = self.api("POST", f"/user/{user}/assignments/{action}", params=params).json()
        assert not (isinstance(result, dict) and result.get("success") is False), result
        return result

    def put_notebook(self, user: str, path: str, notebook: dict) -> None:
        self.api("PUT", f"/user/{user}/api/contents/{path}",
                 json={"type": "notebook", "format": "json", "content": notebook})

    def get(self, user: str, path: str) -> dict:
        return self.api("GET", f"/user/{user}/api/contents/{path}").json()


class Kernel:
    """A kernel in a student's own JupyterLab (their Unix user), driven over its websocket."""

    def __init__(self, hub: Hub, user: str):
        import websocket

        self.hub, self.user = hub, user
        self.id = hub.api("POST", f"/user/{user}/api/kernels", json={"name": "python3"}).json()["id"]
        ws_url = hub.url.replace("http", "ws", 1) + f"/user/{user}/api/kernels/{self.id}/channels"
        self.ws = websocket.create_connection(
            ws_url, header=[f"Authorization: {hub.session.headers['Authorization']}"], timeout=120)
        self.session = uuid.uuid4().hex

    def run(self, code: str) -> list[dict]:
        """Execute code; its outputs as nbformat output dicts."""
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": self.user, "session": self.session,
                       "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": False}}))
        outputs, replied, idle = [], False, False
        while not (replied and idle):
            msg = json.loads(self.ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "execute_reply":
                replied = True
            elif kind == "status":
                idle = content["execution_state"] == "idle"
            elif kind == "stream":
                outputs.append({"output_type": "stream", "name": content["name"], "text": content["text"]})
            elif kind in ("execute_result", "display_data"):
                outputs.append({"output_type": kind, "data": content["data"], "metadata": {},
                                **({"execution_count": content["execution_count"]}
                                   if kind == "execute_result" else {})})
            elif kind == "error":
                outputs.append({"output_type": "error", "ename": content["ename"],
                                "evalue": content["evalue"], "traceback": content["traceback"]})
        return outputs

    def text(self, code: str) -> str:
        outputs = self.run(code)
        errors = [o for o in outputs if o["output_type"] == "error"]
        assert not errors, errors
        return "".join(o.get("text", "") for o in outputs)

    def run_notebook(self, notebook: dict) -> dict:
        """Every code cell in order (going on after errors, as a learner would), outputs kept."""
        for count, cell in enumerate((c for c in notebook["cells"] if c["cell_type"] == "code"), 1):
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            cell["outputs"] = self.run(source)
            cell["execution_count"] = count
        return notebook

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
            self.hub.api("DELETE", f"/user/{self.user}/api/kernels/{self.id}")


@pytest.fixture(scope="module")
def hub():
    require_root()
    require_tool("node")
    require_tool("npm")
    timings = {}
    start = time.perf_counter()
    venv, proxy = hub_environment()
    timings["environment"] = time.perf_counter() - start
    work = Path(tempfile.mkdtemp(prefix="maillab-hub-"))
    os.chmod(work, 0o755)
    (work / "home").mkdir(mode=0o755)
    exchange = work / "exchange"
    exchange.mkdir()
    os.chmod(exchange, 0o777)  # exactly: nbgrader checks
    state = work / "state"
    state.mkdir(mode=0o700)
    users: list[UnixUser] = []
    process = None
    try:
        teacher = UnixUser(unique_name("mlteach"), home=str(work / "home" / "teacher"))
        users.append(teacher)
        students = {}
        for key in WORK:
            name = unique_name(f"mlstu{key}")
            students[key] = UnixUser(name, home=str(work / "home" / name))
            users.append(students[key])
        for user in users:
            os.chmod(user.home, 0o700)  # nobody reads anyone else's work
        courses = {"maillab": Path(teacher.home) / "maillab", "maillab-el": Path(teacher.home) / "maillab-el"}
        for course, folder in courses.items():
            shutil.copytree(ROOT / "solutions" / LAB, folder / "solutions" / LAB)
            config = (ROOT / "nbgrader_config.py").read_text()
            if course != "maillab":  # the Greek course's folder says which course it is
                config += f'\nc.CourseDirectory.course_id = "{course}"\n'
            (folder / "nbgrader_config.py").write_text(config)
            _run(["chown", "-R", f"{teacher.name}:{teacher.name}", str(folder)])
            os.chmod(folder, 0o700)
        etc = venv / "etc" / "jupyter"
        etc.mkdir(parents=True, exist_ok=True)
        shutil.copy(GLOBAL_NBGRADER, etc / "nbgrader_config.py")

        token = secrets.token_hex(32)
        for attempt in range(3):  # a port taken meanwhile by another program: try other ports
            port = free_base_port()
            env = {"PATH": f"{proxy.parent}:{venv / 'bin'}:/usr/bin:/bin:/usr/sbin:/sbin",
                   "HOME": str(state), "LANG": "C.UTF-8",
                   "MAILLAB_TEACHER": teacher.name,
                   "MAILLAB_STUDENTS": " ".join(s.name for s in students.values()),
                   "MAILLAB_COURSES": " ".join(f"{c}={f}" for c, f in courses.items()),
                   "MAILLAB_EXCHANGE": str(exchange), "MAILLAB_HUB_PORT": str(port),
                   "MAILLAB_HUB_API_TOKEN": token}
            log = open(work / "hub.log", "w")
            process = subprocess.Popen([str(venv / "bin" / "jupyterhub"), "-f", str(CONFIG)],
                                       cwd=state, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            hub = Hub(f"http://127.0.0.1:{port}", token)
            if wait_for_hub(hub, process):
                break
            stop_hub(process, state)
            if "Address already in use" not in (work / "hub.log").read_text() or attempt == 2:
                raise AssertionError("the hub did not start:\n" + (work / "hub.log").read_text()[-5000:])
        timings["hub_start"] = time.perf_counter() - start - timings["environment"]
        hub.teacher, hub.students, hub.courses = teacher, students, courses
        hub.venv, hub.exchange, hub.work, hub.port, hub.timings = venv, exchange, work, port, timings
        yield hub
    finally:
        if process is not None:
            stop_hub(process, state)
        for user in users:
            user.remove()
        if process is not None and os.environ.get("MAILLAB_KEEP_HUB_LOG"):
            shutil.copy(work / "hub.log", os.environ["MAILLAB_KEEP_HUB_LOG"])
        shutil.rmtree(work, ignore_errors=True)


# Tried from a kernel: every port of a lab, with a TLS handshake on the implicit-TLS ones and an
# HTTP request to the webmail; what each port answered first.
PROBE = """
import json, socket, ssl
tls = ssl.create_default_context()
tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
out = {}
for port, protocol in %r:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=3)
        if protocol in ("smtps", "pop3s", "imaps"):
            s = tls.wrap_socket(s)
        if protocol == "webmail":
            s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        out[port] = repr(s.recv(20))
        s.close()
    except OSError as e:
        out[port] = type(e).__name__
print(json.dumps(out))
"""
REFUSED = {"b''", "ConnectionResetError", "SSLEOFError", "SSLZeroReturnError"}


def memory_by_role(hub) -> dict[str, list[float]]:
    """RSS (MiB) of the hub's processes: hub, proxy, and each student's server and kernels."""
    students = {u.uid for u in hub.students.values()}
    found: dict[str, list[float]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        except OSError:
            continue
        uid = int(status["Uid"].split()[0])
        role = ("hub" if b"bin/jupyterhub\0" in cmd else
                "proxy" if b"configurable-http-proxy" in cmd else
                "student server" if b"jupyterhub-singleuser" in cmd and uid in students else
                "student kernel" if b"ipykernel_launcher" in cmd and uid in students else None)
        if role:
            found.setdefault(role, []).append(round(int(status["VmRSS"].split()[0]) / 1024, 1))
    return found


def wait_for_hub(hub: Hub, process: subprocess.Popen, timeout: float = 60) -> bool:
    """True once the hub answers; False if it ended (or never answered)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and process.poll() is None:
        try:
            if hub.session.get(hub.url + "/hub/api/", timeout=2).ok:
                return True
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    return False


def stop_hub(process: subprocess.Popen, state: Path) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)  # the hub stops the servers it started
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    # A hub that crashed leaves its proxy running (in a session of its own): its pid file.
    with contextlib.suppress(OSError, ValueError):
        pid = int((state / "jupyterhub-proxy.pid").read_text())
        if b"configurable-http-proxy" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)


def teacher_runs(hub, *args: str, course: str = "maillab") -> subprocess.CompletedProcess:
    """A command in the teacher's course folder, as in a terminal of the teacher's JupyterLab
    (same user, same hub variables; the token is the teacher's own)."""
    if not hasattr(hub, "teacher_token"):
        hub.teacher_token = hub.api("POST", f"/hub/api/users/{hub.teacher.name}/tokens",
                                    json={"note": "terminal"}).json()["token"]
    env = hub.teacher.env(PATH=f"{hub.venv / 'bin'}:/usr/bin:/bin",
                          JUPYTERHUB_API_URL=f"http://127.0.0.1:{hub.port + 81}/hub/api",
                          JUPYTERHUB_USER=hub.teacher.name, JUPYTERHUB_API_TOKEN=hub.teacher_token,
                          MAILLAB_EXCHANGE=str(hub.exchange))
    return _run(hub.teacher.command([str(hub.venv / "bin" / "python"), "-m", *args]), env=env,
                cwd=hub.courses[course], timeout=600)


def test_a_class_on_one_hub(hub):
    t0 = time.perf_counter()
    names = {key: user.name for key, user in hub.students.items()}
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(hub.start_server, [hub.teacher.name, *names.values()]))
        list(pool.map(hub.wait_ready, [hub.teacher.name, *names.values()]))
    # Every server runs as its own Unix user.
    for key, name in names.items():
        whoami = Kernel(hub, name)
        try:
            assert whoami.text("import getpass; print(getpass.getuser())").strip() == name
        finally:
            whoami.close()
    hub.timings["servers"] = time.perf_counter() - t0

    # The teacher hands out the lab in both courses (the Greek one is the same lab for now).
    t = time.perf_counter()
    for course in hub.courses:
        teacher_runs(hub, "nbgrader", "generate_assignment", LAB, "--force", course=course)
        teacher_runs(hub, "nbgrader", "release_assignment", LAB, course=course)
    hub.timings["release"] = time.perf_counter() - t

    # Each student sees both courses, fetches, works, and runs the lab in their own kernel.
    t = time.perf_counter()
    kernels = {}

    def work(key: str) -> None:
        name = names[key]
        listed = hub.assignments(name, "list", "maillab-el")
        assert [a["assignment_id"] for a in listed["value"]] == [LAB]
        hub.assignments(name, "fetch")
        path = f"maillab/{LAB}/{LAB}.ipynb"  # fetched into <home>/<course>/<lab>/
        assert hub.get(name, path)["type"] == "notebook"
        kernel = kernels[key] = Kernel(hub, name)
        notebook = kernel.run_notebook(json.loads((CORPUS / f"{WORK[key]}.ipynb").read_text()))
        hub.put_notebook(name, path, notebook)

    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(work, WORK))
    hub.timings["work"] = time.perf_counter() - t
    hub.memory = memory_by_role(hub)  # for docs/jupyterhub.md's sizing, not asserted

    try:
        # Each student's lab is theirs alone: a lab (all its ports, TLS ones too) in every
        # student's kernel, tried from the others' kernels.
        for kernel in kernels.values():
            kernel.text("import maillab\nlab = maillab.start(ports='any')")
        for key, kernel in kernels.items():
            ports = json.loads(kernel.text(
                "import json\nprint(json.dumps([[s.port, s.protocol] for s in lab.services]))"))
            assert len(ports) == 15
            own = json.loads(kernel.text(PROBE % ports))
            assert all(v[:6] in ("b'220 ", "b'+OK ", "b'* OK", "b'HTTP") for v in own.values()), own
            for other_key, other in kernels.items():
                if other_key != key:
                    seen = json.loads(other.text(PROBE % ports))
                    assert set(seen.values()) <= REFUSED, (key, other_key, seen)
            refusals = kernel.text("print(sum('refused a connection from another user' in l.text "
                                   "for l in lab.transcript()))")
            assert int(refusals) == 2 * len(ports)
    finally:
        for kernel in kernels.values():
            kernel.close()

    # Submit, collect, grade, feedback, all through the exchange.
    t = time.perf_counter()
    for name in names.values():
        hub.assignments(name, "submit")
    teacher_runs(hub, "nbgrader", "collect", LAB)
    hub.timings["submit_collect"] = time.perf_counter() - t
    t = time.perf_counter()
    # The sealed grader (docs/instructor.md): the school's administrator runs it with sudo in
    # the teacher's course folder; the folder is the teacher's again afterwards.
    course = hub.courses["maillab"]
    graded = subprocess.run([str(hub.venv / "bin" / "python"), "-m", "maillab", "grade", LAB,
                             "--quiet"], cwd=course, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PATH": f"{hub.venv / 'bin'}:/usr/bin:/bin:/usr/sbin:/sbin"})
    assert graded.returncode == 0, graded.stdout[-3000:] + graded.stderr[-3000:]
    _run(["chown", "-R", f"{hub.teacher.name}:{hub.teacher.name}", str(course)])
    hub.timings["grade"] = time.perf_counter() - t
    t = time.perf_counter()
    teacher_runs(hub, "nbgrader", "generate_feedback", LAB)
    teacher_runs(hub, "nbgrader", "release_feedback", LAB)
    for key, name in names.items():
        hub.assignments(name, "fetch_feedback")
        folder = hub.get(name, f"maillab/{LAB}/feedback")["content"]  # one folder per release
        assert len(folder) == 1, folder
        html = hub.get(name, f"{folder[0]['path']}/{LAB}.html")["content"]
        score = EXPECTED[WORK[key]]["score"]
        assert f"Score: {score:.1f}" in html or f"{score:.1f} / " in html, html[:2000]
    hub.timings["feedback"] = time.perf_counter() - t

    # The gradebook has exactly the corpus's scores.
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{hub.courses['maillab'] / 'gradebook.db'}") as gb:
        for key, name in names.items():
            got = gb.find_submission(LAB, name).score
            assert got == EXPECTED[WORK[key]]["score"], (key, got)

    # The course's grading service runs as the teacher, in the course folder.
    status = requests.get(f"http://127.0.0.1:{hub.port + 90}/services/maillab/api", timeout=10)
    assert status.ok and "version" in status.json()
    hub.timings["total_after_environment"] = time.perf_counter() - t0 + hub.timings["hub_start"]
    TIMINGS.parent.mkdir(exist_ok=True)
    TIMINGS.write_text(json.dumps({"seconds": {k: round(v, 1) for k, v in hub.timings.items()},
                                   "rss_mib": hub.memory}, indent=1))


# ---------------------------------------------------------------- files checked without a hub

def load_hub_config(**env: str):
    """docs/jupyterhub/jupyterhub_config.py read as JupyterHub reads it, with these variables."""
    from traitlets.config.loader import PyFileConfigLoader

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return PyFileConfigLoader(CONFIG.name, path=str(CONFIG.parent)).load_config()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_hub_config_lists_the_class_and_its_courses(tmp_path):
    (tmp_path / "en").mkdir()
    c = load_hub_config(MAILLAB_TEACHER="ms-papadopoulou", MAILLAB_STUDENTS="eleni nikos",
                        MAILLAB_COURSES=f"maillab={tmp_path / 'en'} maillab-el={tmp_path / 'el'}",
                        MAILLAB_HUB_PORT="9000")
    assert c.Authenticator.allowed_users == {"eleni", "nikos", "ms-papadopoulou"}
    assert c.Authenticator.admin_users == {"ms-papadopoulou"}
    assert c.JupyterHub.authenticator_class == "pam"
    assert c.JupyterHub.load_groups["nbgrader-maillab"] == {"users": ["eleni", "nikos", "ms-papadopoulou"]}
    services = {s["name"]: s for s in c.JupyterHub.services}
    assert services["maillab"]["user"] == "ms-papadopoulou"
    assert services["maillab"]["cwd"] == str(tmp_path / "en")
    assert services["maillab-el"]["url"] == "http://127.0.0.1:9091"
    assert "idle-culler" in services and "teacher-scripts" not in services
    shared = load_hub_config(MAILLAB_SHARED_PASSWORD="a-workshop-password")
    assert shared.JupyterHub.authenticator_class == "shared-password"


def values() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "docs" / "jupyterhub" / "kubernetes" / "values.yaml").read_text())


def test_helm_values_parse_and_size_each_student_from_the_measurements():
    v = values()
    single = v["singleuser"]
    # bench/bench_student.py: 300 MiB budgeted per student (docs/jupyterhub.md, Sizing).
    assert single["memory"] == {"guarantee": "400M", "limit": "1G"}
    assert single["cpu"]["limit"] == 1
    assert single["storage"]["type"] == "dynamic"
    mount = single["storage"]["extraVolumeMounts"][0]["mountPath"]
    assert single["extraEnv"]["MAILLAB_EXCHANGE"] == mount == "/srv/nbgrader/exchange"
    assert v["cull"] == {"enabled": True, "timeout": 3600, "every": 300}
    # The Python pieces at least compile (Helm passes them on as text).
    for name, code in v["hub"]["extraConfig"].items():
        compile(code, name, "exec")
    compile(single["extraFiles"]["nbgrader-config"]["stringData"], "nbgrader_config.py", "exec")


def test_global_nbgrader_config_is_the_same_on_one_machine_and_on_kubernetes():
    import ast

    def settings(code: str) -> set[str]:
        return {ast.unparse(node) for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Assign)}

    on_kubernetes = settings(values()["singleuser"]["extraFiles"]["nbgrader-config"]["stringData"])
    one_machine = settings(GLOBAL_NBGRADER.read_text())
    # The Greek course's title is added on Kubernetes when that course is deployed there.
    assert on_kubernetes - {s for s in on_kubernetes if s.startswith("c.NbGrader.course_titles")} \
        == one_machine - {s for s in one_machine if s.startswith("c.NbGrader.course_titles")}


def test_the_image_is_binders_environment_built_by_repo2docker():
    """repo2docker (what Binder builds with) writes the image's Dockerfile without building it:
    environment.yml with Python 3.11, then postBuild, as an unprivileged user. No Docker engine
    runs here: the build itself is not run."""
    if not os.access(CACHE.parent, os.W_OK) and not os.access(CACHE, os.W_OK):
        require_root()
    venv = cached_venv("repo2docker", [REPO2DOCKER])
    result = _run([str(venv / "bin" / "jupyter-repo2docker"), "--no-build", "--no-run", "--debug",
                   str(ROOT)], timeout=300)
    dockerfile = result.stdout + result.stderr
    assert "Building conda environment for python=3.11" in dockerfile
    assert 'env update -p ${NB_PYTHON_PREFIX} --file "environment.yml"' in dockerfile
    after_user = dockerfile[dockerfile.rindex("USER ${NB_USER}"):]
    assert "./postBuild" in after_user  # postBuild runs as the notebook user, not root
