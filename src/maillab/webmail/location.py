"""Where the learner's browser finds the webmail: through Jupyter, or at its own port.

In a notebook the browser usually cannot reach the kernel's loopback ports (Binder, a class
JupyterHub); jupyter-server-proxy serves any local port at ``<base_url>proxy/<port>/`` on the
Jupyter server's own origin, behind its login. So, inside a Jupyter kernel the webmail's address
is that path; anywhere else it is ``http://127.0.0.1:<port>/``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

__all__ = ["in_jupyter_kernel", "jupyter_base_url", "webmail_url"]


def in_jupyter_kernel() -> bool:
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _proxy_installed() -> bool:
    return importlib.util.find_spec("jupyter_server_proxy") is not None


def jupyter_base_url(*, environ=None, servers=None, parent_pid: int | None = None) -> str | None:
    """The base URL path of the Jupyter server that runs this kernel, e.g. ``/user/ana/``.

    A JupyterHub (Binder too) tells its single-user servers their prefix in
    ``JUPYTERHUB_SERVICE_PREFIX``. Otherwise the running servers' list is read and the one that
    started this kernel (our parent process) is taken, or the only one there is.
    """
    environ = os.environ if environ is None else environ
    prefix = environ.get("JUPYTERHUB_SERVICE_PREFIX")
    if prefix:
        return "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
    if servers is None:
        servers = running_servers()
    if not servers:
        return None
    parent_pid = os.getppid() if parent_pid is None else parent_pid
    chosen = next((s for s in servers if s.get("pid") == parent_pid), None)
    if chosen is None and len(servers) == 1:
        chosen = servers[0]
    if chosen is None:
        return None
    base = chosen.get("base_url") or "/"
    return "/" + base.strip("/") + "/" if base.strip("/") else "/"


def running_servers() -> list[dict]:
    """The running Jupyter servers, from their ``jpserver-<pid>.json`` files.

    This is what ``jupyter_server.serverapp.list_running_servers`` reads, without importing
    jupyter_server (seconds on a slow machine) into the learner's kernel.
    """
    try:
        from jupyter_core.paths import jupyter_runtime_dir
        folder = jupyter_runtime_dir()
        names = [n for n in os.listdir(folder) if n.startswith("jpserver-") and n.endswith(".json")]
    except Exception:  # no jupyter_core, or no runtime folder
        return []
    servers = []
    for name in names:
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                info = json.load(f)
            os.kill(int(info["pid"]), 0)  # still running?
        except PermissionError:
            pass  # running, as another user
        except (OSError, ValueError, KeyError, TypeError):
            continue
        servers.append(info)
    return servers


def webmail_url(port: int, host: str = "127.0.0.1", *, kernel: bool | None = None, **kwargs) -> str:
    """The proxy path inside a Jupyter kernel (when jupyter-server-proxy is there), else a URL."""
    kernel = in_jupyter_kernel() if kernel is None else kernel
    if kernel and _proxy_installed():
        base = jupyter_base_url(**kwargs)
        if base is not None:
            return f"{base}proxy/{port}/"
    return f"http://{host}:{port}/"
