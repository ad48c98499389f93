"""The lab's webmail: mail in the browser over HTTP, speaking IMAP and SMTP like Roundcube.

``maillab.start()`` serves it on the lab's loop (port 8025 when free); ``lab.webmail_url`` is its
address (through jupyter-server-proxy inside a notebook) and ``lab.show_webmail()`` embeds it.
"""

from .app import Backend, Webmail, WebmailServer, start_webmail
from .location import webmail_url

__all__ = ["Backend", "Webmail", "WebmailServer", "start_webmail", "webmail_url"]
