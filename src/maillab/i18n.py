"""One translation function for every learner-facing string (a Greek edition will follow).

Protocol text (commands, reply codes, status words) is never translated; hints and labels are.
Today ``_`` returns its argument; a gettext catalogue can be plugged in here later.
"""

from __future__ import annotations


def _(text: str) -> str:
    return text
