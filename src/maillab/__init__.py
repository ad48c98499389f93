"""maillab: a complete little mail system that runs inside a Jupyter kernel, for teaching."""

__version__ = "0.1.0"

import sys  # noqa: E402

from .lab import DEFAULT_ACCOUNTS, LabAccount, MailLab, start  # noqa: E402

__all__ = ["start", "MailLab", "LabAccount", "DEFAULT_ACCOUNTS", "load_ipython_extension",
           "__version__"]

_SESSION_MAGICS = ("smtp", "pop3", "imap", "http")


def load_ipython_extension(ipython) -> None:
    """``%load_ext maillab``: the session cell magics ``%%smtp``, ``%%pop3``, ``%%imap``, ``%%http``.

    The magics' code (maillab.magics) is imported when the first session cell runs, so that
    ``import maillab`` stays quick.
    """
    for protocol in _SESSION_MAGICS:
        # line_cell: "%imap --help" and "%imap --session box --close" work on one line too.
        ipython.register_magic_function(_session_magic(protocol), "line_cell", protocol)


def _session_magic(protocol: str):
    def magic(line: str, cell: str | None = None) -> None:
        from .magics import session_cell
        session_cell(protocol, line, cell)
    magic.__name__ = protocol
    magic.__doc__ = (f"%%{protocol} [DOMAIN] [options]: the cell's lines are a {protocol.upper()} "
                     f"session typed by hand. %%{protocol} --help lists the options; "
                     "see maillab.magics.")
    return magic


def _register_in_ipython() -> None:
    """Inside IPython (a notebook's kernel), ``import maillab`` is enough for the magics."""
    if "IPython" not in sys.modules:  # not in IPython: importing it would cost time for nothing
        return
    try:
        from IPython import get_ipython
        ipython = get_ipython()
        if ipython is not None:
            load_ipython_extension(ipython)
    except Exception:  # an odd IPython must never break `import maillab`
        pass


_register_in_ipython()
