"""Mail programs set themselves up from the lab: Thunderbird's autoconfig file, served by the webmail.

A mail program's account window asks only for a name, an address and a password; it finds the
servers by fetching a small XML file (``config-v1.1.xml``, format "clientConfig 1.1") from the
provider's web server. Thunderbird asks, in this order of preference:

- ``https://autoconfig.<domain>/mail/config-v1.1.xml?emailaddress=<address>``
- ``https://<domain>/.well-known/autoconfig/mail/config-v1.1.xml``
- the same two over ``http://``, then its own database (the pref ``mailnews.auto_config_url``,
  to which it appends the domain: ``https://live.thunderbird.net/autoconfig/v1.1/<domain>``).

The webmail answers all three paths: ``/mail/config-v1.1.xml``,
``/.well-known/autoconfig/mail/config-v1.1.xml`` and ``/autoconfig/v1.1/<domain>``. The lab's
names (example.com, ...) are not in the DNS, so a mail program on this computer is pointed at the
webmail's address by the last one (``mailnews.auto_config_url`` set to
``http://localhost:8025/autoconfig/v1.1/``); the first two work for a program that reaches the
webmail under the domain's names. The domain is the emailaddress's, else the path's, else the
Host header's (``autoconfig.example.com`` or ``example.com``).

The file names the lab's real ports of that domain (mnemonic or not), each with the TLS it
speaks: IMAP and POP3 with TLS from the first byte ("SSL") and with STARTTLS, SMTP submission on
the ports standing for 465 ("SSL") and 587 (STARTTLS). Passwords travel in clear inside TLS
("password-cleartext"); the user name is the whole address, which every server of the lab takes
as a login as well as the short one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable
from xml.etree import ElementTree

from aiohttp import web

from ..i18n import _

__all__ = ["MailServer", "client_config", "add_routes", "PATHS"]

# Where mail programs look (see the module's text); the last one takes the domain after it.
PATHS = ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml",
         "/autoconfig/v1.1/{domain}")

# socketType as the format spells it: TLS from the first byte, upgraded by STARTTLS, or none.
SOCKET_TYPES = ("SSL", "STARTTLS", "plain")


@dataclass(frozen=True)
class MailServer:
    """One server entry of the file: incoming ("imap", "pop3") or outgoing ("smtp")."""

    protocol: str
    hostname: str
    port: int
    socket_type: str  # one of SOCKET_TYPES

    @property
    def incoming(self) -> bool:
        return self.protocol != "smtp"


def client_config(domain: str, servers: list[MailServer], display_name: str) -> bytes:
    """The clientConfig 1.1 document for one domain, in the order given (first = preferred)."""
    root = ElementTree.Element("clientConfig", version="1.1")
    provider = ElementTree.SubElement(root, "emailProvider", id=domain)
    for tag, text in (("domain", domain), ("displayName", display_name),
                      ("displayShortName", domain)):
        ElementTree.SubElement(provider, tag).text = text
    # The format wants every incoming server before the outgoing ones.
    for server in sorted(servers, key=lambda s: not s.incoming):
        tag = "incomingServer" if server.incoming else "outgoingServer"
        entry = ElementTree.SubElement(provider, tag, type=server.protocol)
        for field, text in (("hostname", server.hostname), ("port", str(server.port)),
                            ("socketType", server.socket_type), ("username", "%EMAILADDRESS%"),
                            ("authentication", "password-cleartext")):
            ElementTree.SubElement(entry, field).text = text
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def domain_asked(request: web.Request) -> str:
    """The mail domain a request asks about (lower case; "" if it names none)."""
    address = request.query.get("emailaddress", "")
    if "@" in address:
        return address.rpartition("@")[2].strip().lower()
    if "domain" in request.match_info:
        return request.match_info["domain"].strip().lower()
    host = (request.host or "").lower()
    if host.startswith("["):  # an IPv6 literal names no domain
        return ""
    host = host.rpartition(":")[0] if ":" in host else host
    return host.removeprefix("autoconfig.")


def add_routes(router: web.UrlDispatcher, servers_of: Callable[[str], list[MailServer] | None],
               display_name: str = "maillab") -> None:
    """Serve the autoconfig file at every path of ``PATHS``. ``servers_of(domain)`` lists a
    domain's servers, or returns None for a domain that is not the lab's."""

    async def config(request: web.Request) -> web.Response:
        domain = domain_asked(request)
        servers = servers_of(domain) if domain else None
        if not servers:
            return web.Response(status=404, content_type="text/plain", charset="utf-8", text=_(
                "No mail settings for {0!r}: ask with ?emailaddress=you@DOMAIN, where DOMAIN is "
                "one of the lab's mail domains.").format(domain[:100]) + "\n")
        return web.Response(body=client_config(domain, servers, display_name),
                            content_type="application/xml", charset="utf-8")

    for path in PATHS:
        router.add_get(path, config)
