"""Widgets for the course notebooks (ipywidgets 8).

* :class:`TranscriptViewer` - what clients and servers said, live, with replies explained;
* :class:`Console` - type commands to any service by hand (telnet without telnet);
* :class:`JourneyView` - one message's trip hop by hop (the lecture's worked example);
* :class:`MailboxView` - the server's side of a mailbox: folders, Maildir files, flags, sizes;
* :class:`Quiz` and :class:`Question` - self-checks with instant feedback;
* :func:`reveal` and :func:`check_answers` - a learner's prediction beside what happened;
* :class:`Wiretap` - what a network observer sees of a session (clear text or TLS);
* :func:`bar_chart` - a small SVG bar chart (no plotting library needed);
* :func:`explain` - what a server reply means, in plain words.
"""

from .chart import bar_chart
from .console import Console
from .journey import Hop, Journey, JourneyView
from .mailbox_view import MailboxView
from .predict import check_answers, reveal
from .quiz import Question, Quiz
from ..explain import explain
from .transcript_view import TranscriptViewer
from .wiretap import Wiretap

__all__ = ["TranscriptViewer", "Console", "Journey", "JourneyView", "Hop", "MailboxView",
           "Quiz", "Question", "Wiretap", "bar_chart", "explain", "reveal", "check_answers"]
