"""Values that cross between the grader and a learner's answer process, as plain data.

Only exact built-in types travel by value: ``None``, ``bool``, ``int``, ``float``, ``str``,
``bytes``, ``bytearray``, ``list``, ``tuple``, ``dict``, ``set`` and ``frozenset``, nested. Any
other object (a socket, a file, an instance of the learner's own class, a subclass of ``str``
or an object whose ``__eq__`` always says yes) stays in the answer process and crosses as a
*handle*: the grader can call its methods there, but a handle equals nothing but itself, so it
can never pass a comparison in a check.

The wire format is JSON: plain values as themselves (lists as lists), everything else as a
one-key object with a ``$`` tag. Decoding builds genuine built-in objects only.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct

MAX_DEPTH = 40  # nesting deeper than this is a handle (a learner's cyclic or absurd value)
MAX_MESSAGE = 32 * 1024 * 1024  # bytes in one framed message


class CodecError(ValueError):
    """A message that is not what the protocol allows."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode(value, other=None, depth: int = 0):
    """A JSON-able form of ``value``; ``other(obj)`` gives the form of an object that is not
    data (a handle, say); without it such an object is an error."""
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return value
    if kind is float:
        return value if value == value and value not in (float("inf"), float("-inf")) \
            else {"$f": repr(value)}
    if depth < MAX_DEPTH:
        if kind is bytes:
            return {"$b": _b64(value)}
        if kind is bytearray:
            return {"$ba": _b64(bytes(value))}
        if kind is list:
            return [encode(v, other, depth + 1) for v in value]
        if kind is tuple:
            return {"$t": [encode(v, other, depth + 1) for v in value]}
        if kind in (set, frozenset):
            return {"$s" if kind is set else "$fs": [encode(v, other, depth + 1) for v in value]}
        if kind is dict:
            return {"$d": [[encode(k, other, depth + 1), encode(v, other, depth + 1)]
                           for k, v in value.items()]}
    if other is None:
        raise CodecError(f"cannot send a {kind.__name__} by value")
    return other(value)


def decode(data, handle=None, extra=None, depth: int = 0):
    """Plain objects from :func:`encode`'s form. ``handle(id, type)`` makes a handle, and
    ``extra(tag, body)`` decodes tags of one side's own (return ``NotImplemented`` if unknown)."""
    if data is None or type(data) in (bool, int, float, str):
        return data
    if depth > MAX_DEPTH + 2:
        raise CodecError("too deeply nested")
    if type(data) is list:
        return [decode(v, handle, extra, depth + 1) for v in data]
    if type(data) is not dict or not data:
        raise CodecError(f"unexpected {type(data).__name__}")
    tag = next(iter(data))
    body = data[tag]
    items = lambda: [decode(v, handle, extra, depth + 1) for v in _list(body)]  # noqa: E731
    if tag == "$b":
        return _bytes(body)
    if tag == "$ba":
        return bytearray(_bytes(body))
    if tag == "$f":
        if body not in ("nan", "inf", "-inf"):
            raise CodecError("bad float")
        return float(body)
    if tag == "$t":
        return tuple(items())
    if tag in ("$s", "$fs", "$d"):
        if tag == "$d":
            made = [(decode(k, handle, extra, depth + 1), decode(v, handle, extra, depth + 1))
                    for k, v in (_pair(p) for p in _list(body))]
        else:
            made = items()
        try:  # a list as a set member or a key: the other side broke the protocol
            return {"$s": set, "$fs": frozenset, "$d": dict}[tag](made)
        except TypeError as e:
            raise CodecError(f"unhashable member: {e}") from None
    if tag == "$h" and handle is not None:
        if type(body) is not int:
            raise CodecError("bad handle")
        return handle(body, str(data.get("type", "?"))[:200])
    if extra is not None:
        value = extra(tag, body)
        if value is not NotImplemented:
            return value
    raise CodecError(f"unknown tag {tag[:20]!r}")


def _list(body) -> list:
    if type(body) is not list:
        raise CodecError("expected a list")
    return body


def _bytes(body) -> bytes:
    try:
        return base64.b64decode(_str(body), validate=True)
    except binascii.Error:
        raise CodecError("bad base64") from None


def _str(body) -> str:
    if type(body) is not str:
        raise CodecError("expected a string")
    return body


def _pair(p) -> tuple:
    if type(p) is not list or len(p) != 2:
        raise CodecError("expected a pair")
    return p[0], p[1]


# ---------------------------------------------------------------------------- framing

_HEADER = struct.Struct("!I")


def frame(message: dict) -> bytes:
    """One message as bytes on a stream: a 4-byte length, then JSON."""
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_MESSAGE:
        raise CodecError(f"message of {len(body)} bytes is over the limit")
    return _HEADER.pack(len(body)) + body


def read_frame(recv, fds: list | None = None) -> dict:
    """Read one framed message with ``recv(n) -> (bytes, [fds])``; file descriptors that came
    with it are appended to ``fds``. Raises EOFError when the other side is gone."""
    head = _read_exactly(recv, _HEADER.size, fds)
    (size,) = _HEADER.unpack(head)
    if size > MAX_MESSAGE:
        raise CodecError(f"message of {size} bytes is over the limit")
    body = _read_exactly(recv, size, fds)
    try:
        message = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise CodecError(f"not JSON: {e}") from None
    if type(message) is not dict:
        raise CodecError("a message is a JSON object")
    return message


def _read_exactly(recv, n: int, fds) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk, new_fds = recv(min(n - got, 1 << 20))
        if fds is not None:
            fds.extend(new_fds)
        else:
            for fd in new_fds:
                _close(fd)
        if not chunk:
            raise EOFError("the other side closed the channel")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _close(fd: int) -> None:
    import os
    try:
        os.close(fd)
    except OSError:
        pass
