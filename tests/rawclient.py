"""A tiny line-based client for tests that speak a protocol by hand, as learners do."""

import socket


class Raw:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def line(self) -> str:
        got = self.file.readline()
        if not got:
            raise ConnectionError("server closed the connection")
        return got.decode("utf-8", "replace").rstrip("\r\n")

    def smtp_reply(self) -> tuple[int, list[str]]:
        """Read one (possibly multi-line) SMTP reply."""
        lines = []
        while True:
            text = self.line()
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return int(text[:3]), lines

    def cmd(self, line: str) -> tuple[int, list[str]]:
        self.send(line + "\r\n")
        return self.smtp_reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
