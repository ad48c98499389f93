"""maillab: a complete little mail system that runs inside a Jupyter kernel, for teaching."""

__version__ = "0.1.0"

from .lab import DEFAULT_ACCOUNTS, LabAccount, MailLab, start  # noqa: E402

__all__ = ["start", "MailLab", "LabAccount", "DEFAULT_ACCOUNTS", "__version__"]
