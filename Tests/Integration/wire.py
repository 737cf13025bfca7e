"""A raw PostgreSQL v3 client for the proxy suites: exact bytes in, exact messages out, so a test can send what
no driver would (bad lengths, garbage, truncated messages) and read the SQLSTATE of what comes back."""

from __future__ import annotations

import socket
import struct
import time

import harness

PROTOCOL_3_0 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102


def message(kind: bytes, payload: bytes = b"") -> bytes:
    """A frontend message: type byte, Int32 length (itself included), payload."""
    return kind + struct.pack("!I", len(payload) + 4) + payload


def startup_packet(user: str, database: str, **params: str) -> bytes:
    body = struct.pack("!I", PROTOCOL_3_0)
    for key, value in {"user": user, "database": database, **params}.items():
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def query(sql: str) -> bytes:
    return message(b"Q", sql.encode() + b"\0")


def error_fields(payload: bytes) -> dict[str, str]:
    """The fields of an ErrorResponse/NoticeResponse body: {'S': severity, 'C': sqlstate, 'M': message, ...}."""
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


class Closed(Exception):
    """The server closed the connection."""


class RawClient:
    """One TCP connection speaking raw protocol bytes."""

    def __init__(self, port: int, timeout: float = 5.0, host: str = harness.LOOPBACK):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buffer = b""
        self.key: tuple[int, int] | None = None  # BackendKeyData (pid, secret)
        self.parameters: dict[str, str] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, n: int) -> None:
        while len(self.buffer) < n:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise Closed(f"connection closed with {len(self.buffer)} bytes buffered")
            self.buffer += chunk

    def read_byte(self) -> bytes:
        self._fill(1)
        b, self.buffer = self.buffer[:1], self.buffer[1:]
        return b

    def read_message(self) -> tuple[bytes, bytes]:
        """(type, payload) of the next backend message; raises Closed at EOF, socket.timeout when nothing comes."""
        self._fill(5)
        kind = self.buffer[:1]
        (length,) = struct.unpack("!I", self.buffer[1:5])
        if length < 4:
            raise AssertionError(f"backend sent a message {kind!r} with length {length}")
        self._fill(1 + length)
        payload = self.buffer[5 : 1 + length]
        self.buffer = self.buffer[1 + length :]
        return kind, payload

    def read_until(self, kinds: bytes = b"Z") -> list[tuple[bytes, bytes]]:
        """Messages up to and including the first whose type is in kinds, or up to EOF (then the last is
        (b'', b'') so the caller can tell)."""
        out = []
        while True:
            try:
                kind, payload = self.read_message()
            except Closed:
                out.append((b"", b""))
                return out
            out.append((kind, payload))
            if kind in kinds and kind != b"":
                return out

    def startup(self, user: str = "app", database: str = "appdb", **params: str) -> list[tuple[bytes, bytes]]:
        """Sends the startup packet; reads up to ReadyForQuery or an ErrorResponse. Only trust authentication."""
        self.send(startup_packet(user, database, **params))
        messages = []
        while True:
            try:
                kind, payload = self.read_message()
            except Closed:
                messages.append((b"", b""))
                return messages
            messages.append((kind, payload))
            if kind == b"R":
                (code,) = struct.unpack("!I", payload[:4])
                if code != 0:
                    raise AssertionError(f"raw client: authentication request {code} (only trust is supported)")
            elif kind == b"K":
                self.key = struct.unpack("!II", payload[:8])
            elif kind == b"S":
                name, value = payload.split(b"\0")[:2]
                self.parameters[name.decode()] = value.decode()
            elif kind in (b"Z", b"E"):
                return messages

    def simple_query(self, sql: str) -> list[tuple[bytes, bytes]]:
        self.send(query(sql))
        return self.read_until(b"Z")

    def terminate(self) -> None:
        try:
            self.send(message(b"X"))
        except OSError:
            pass
        self.close()

    def wait_closed(self, timeout: float = 5.0) -> list[tuple[bytes, bytes]]:
        """Reads whatever comes until the server closes; fails if it stays open for timeout."""
        deadline = time.monotonic() + timeout
        out = []
        while time.monotonic() < deadline:
            try:
                out.append(self.read_message())
            except Closed:
                return out
            except socket.timeout:
                continue
        raise AssertionError(f"server kept the connection open for {timeout:g}s; got {out}")


def errors(messages: list[tuple[bytes, bytes]]) -> list[dict[str, str]]:
    return [error_fields(p) for k, p in messages if k == b"E"]


def rows(messages: list[tuple[bytes, bytes]]) -> list[list[str | None]]:
    """The DataRow values (text format) among messages."""
    out = []
    for kind, payload in messages:
        if kind != b"D":
            continue
        (n,) = struct.unpack("!H", payload[:2])
        pos, row = 2, []
        for _ in range(n):
            (length,) = struct.unpack("!i", payload[pos : pos + 4])
            pos += 4
            if length < 0:
                row.append(None)
            else:
                row.append(payload[pos : pos + length].decode())
                pos += length
        out.append(row)
    return out


def cancel_request(port: int, pid: int, secret: int) -> None:
    with socket.create_connection((harness.LOOPBACK, port), timeout=5) as s:
        s.sendall(struct.pack("!IIII", 16, CANCEL_REQUEST, pid, secret))
        s.settimeout(5)
        try:
            s.recv(1)
        except OSError:
            pass
