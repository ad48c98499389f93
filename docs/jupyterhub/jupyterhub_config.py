# JupyterHub for a class on one machine: maillab's courses with nbgrader's exchange.
#
# Every student and the teacher have a Unix account on this machine; the hub (run as root)
# starts each one's own JupyterLab as that user. A student's mail lab runs inside their own
# kernel and admits only their own programs (maillab.privacy), so students cannot reach each
# other's labs. docs/jupyterhub.md explains every step; tests/test_hub.py runs this very file.
#
# Settings come from environment variables (or the defaults below), so that one file serves a
# school and the test:
#   MAILLAB_TEACHER          the teacher's user name (default: teacher)
#   MAILLAB_STUDENTS         student user names, separated by spaces; or a file students.txt
#                            beside this one, one name a line
#   MAILLAB_COURSES          course ids and folders, "maillab=/home/teacher/maillab ..." (default:
#                            maillab and maillab-el in the teacher's home, those that exist)
#   MAILLAB_EXCHANGE         nbgrader's exchange folder (default /srv/nbgrader/exchange, mode 0777)
#   MAILLAB_HUB_PORT         the port people open (default 8000); the hub's own ports follow it:
#                            +81 the hub's API, +1 the proxy's API, +90... one per course's grader
#   MAILLAB_SHARED_PASSWORD  one password for everyone (a workshop); unset: Unix passwords (PAM)
#   MAILLAB_HUB_API_TOKEN    a token for the teacher's scripts (start every server before class)
import os
import sys
from pathlib import Path

c = get_config()  # noqa: F821 (JupyterHub provides get_config)

HERE = Path(__file__).resolve().parent
ENV = os.environ
BIN = Path(sys.prefix) / "bin"  # the environment the hub runs in: students' servers use it too

TEACHER = ENV.get("MAILLAB_TEACHER", "teacher")
_students_file = HERE / "students.txt"
STUDENTS = ENV.get("MAILLAB_STUDENTS", "").split() or (
    _students_file.read_text().split() if _students_file.exists() else [])
EXCHANGE = ENV.get("MAILLAB_EXCHANGE", "/srv/nbgrader/exchange")
PORT = int(ENV.get("MAILLAB_HUB_PORT", "8000"))


def _courses() -> dict[str, str]:
    if "MAILLAB_COURSES" in ENV:
        return dict(pair.split("=", 1) for pair in ENV["MAILLAB_COURSES"].split())
    home = Path(os.path.expanduser("~" + TEACHER))  # unchanged (not a folder) if no such user
    found = {course: str(home / course) for course in ("maillab", "maillab-el")}
    return {course: folder for course, folder in found.items() if Path(folder).is_dir()}


COURSES = _courses()

# ---- Where people connect ----------------------------------------------------------------
# Behind the school's TLS proxy, or set c.JupyterHub.ssl_cert / ssl_key here: passwords must
# not cross the school network in clear text (the course's own lesson).
c.JupyterHub.bind_url = ENV.get("MAILLAB_HUB_URL", f"http://:{PORT}")
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{PORT + 81}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{PORT + 1}"
c.JupyterHub.cleanup_servers = True  # stopping the hub stops every student's server

# ---- Who may log in ----------------------------------------------------------------------
if ENV.get("MAILLAB_SHARED_PASSWORD"):
    c.JupyterHub.authenticator_class = "shared-password"
    c.SharedPasswordAuthenticator.user_password = ENV["MAILLAB_SHARED_PASSWORD"]  # >= 8 chars
else:
    c.JupyterHub.authenticator_class = "pam"  # the accounts' own Unix passwords
c.Authenticator.allowed_users = set(STUDENTS) | {TEACHER}
c.Authenticator.admin_users = {TEACHER}

# ---- Each person's own JupyterLab, as their own Unix user ---------------------------------
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [str(BIN / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"  # homes must be mode 0700: students must not read each other's work
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.Spawner.environment = {"MAILLAB_EXCHANGE": EXCHANGE}
# Measured (docs/jupyterhub.md, "Sizing"): a student's server, kernel and lab need about
# 300 MiB. LocalProcessSpawner only announces these; systemdspawner or Kubernetes enforce them.
c.Spawner.mem_limit = "1G"
c.Spawner.cpu_limit = 1.0

# ---- Courses: nbgrader's groups, roles and one grading service per course ------------------
# nbgrader reads membership from groups: nbgrader-<course> (takes the course) and
# formgrade-<course> (grades it). The global nbgrader_config.py beside this file sets the
# exchange and turns on JupyterHub's groups (JupyterHubAuthPlugin).
c.JupyterHub.load_groups = {}
roles = [
    # A user's server may read its own user's groups (nbgrader's course list needs them).
    {"name": "server", "scopes": ["inherit"]},
]
services = []
for index, (course, folder) in enumerate(sorted(COURSES.items())):
    c.JupyterHub.load_groups[f"nbgrader-{course}"] = {"users": sorted(STUDENTS) + [TEACHER]}
    c.JupyterHub.load_groups[f"formgrade-{course}"] = {"users": [TEACHER]}
    roles.append({"name": f"formgrade-{course}", "groups": [f"formgrade-{course}"],
                  "scopes": [f"access:services!service={course}"]})
    roles.append({"name": f"nbgrader-{course}", "groups": [f"nbgrader-{course}"],
                  "scopes": ["list:services", f"read:services!service={course}"]})
    # The formgrader of this course: a JupyterLab run as the teacher in the course folder,
    # reached at /services/<course>/.
    services.append({
        "name": course,
        "url": f"http://127.0.0.1:{PORT + 90 + index}",
        "command": [str(BIN / "jupyterhub-singleuser")],
        "user": TEACHER,
        "cwd": folder,
        "environment": {"JUPYTERHUB_DEFAULT_URL": "/lab", "MAILLAB_EXCHANGE": EXCHANGE},
        "oauth_no_confirm": True,
    })

# ---- Idle servers are stopped after an hour (their kernels and labs with them) -------------
services.append({"name": "idle-culler",
                 "command": [sys.executable, "-m", "jupyterhub_idle_culler", "--timeout=3600"]})
roles.append({"name": "idle-culler", "services": ["idle-culler"],
              "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"]})

# ---- The teacher's scripts (optional) ------------------------------------------------------
if ENV.get("MAILLAB_HUB_API_TOKEN"):
    services.append({"name": "teacher-scripts", "api_token": ENV["MAILLAB_HUB_API_TOKEN"]})
    roles.append({"name": "teacher-scripts", "services": ["teacher-scripts"],
                  "scopes": ["admin:users", "admin:servers", "access:servers", "list:users",
                             "read:users", "admin:groups", "tokens"]})

c.JupyterHub.services = services
c.JupyterHub.load_roles = roles
