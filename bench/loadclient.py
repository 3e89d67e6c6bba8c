"""A minimal HTTP/1.1 keep-alive client for the benchmarks' load generators.

The load generator shares the machine's two cores with the service under test, so whatever CPU it
spends per request is billed to the measured throughput: httpx spends about 2 ms per request, asyncio
streams (``open_connection``) about 0.1 ms; this, a bare ``asyncio.Protocol`` that parses the answer
in ``data_received``, a little less (docs/issuer.md, benchmark method). It is real HTTP on loopback
all the same: every request goes through uvicorn and the whole app.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


class _ResponseReader(asyncio.Protocol):
    """Collects one response at a time (no pipelining) and hands it to the waiting request."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.head_end = -1  # where the body starts, once the header block is complete
        self.status = 0
        self.length = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.head_end < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head_end = end + 4
            self._parse_head(bytes(self.buffer[:end]))
        if len(self.buffer) - self.head_end < self.length:
            return
        body = bytes(self.buffer[self.head_end:self.head_end + self.length])
        del self.buffer[:self.head_end + self.length]
        self.head_end = -1
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.status, body))

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split(b" ", 2)[1])
        self.length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                self.length = int(value)
            elif name == b"transfer-encoding":
                self._fail(RuntimeError("chunked responses are not expected here"))

    def _fail(self, error: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(exc or ConnectionError("the server closed the connection before answering"))


class Connection:
    """One keep-alive connection (one per simulated wallet)."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._reader: _ResponseReader | None = None

    async def request(self, method: str, url: str, *, body: bytes = b"", content_type: str | None = None,
                      headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        reader = self._reader
        if reader is None or reader.transport is None:
            _, reader = await loop.create_connection(_ResponseReader, self.host, self.port)
            self._reader = reader
        parts = urlsplit(url)
        lines = [f"{method} {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1",
                 f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
        reader.waiter = loop.create_future()
        assert reader.transport is not None
        reader.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return await reader.waiter

    async def close(self) -> None:
        if self._reader is not None and self._reader.transport is not None:
            self._reader.transport.close()
        self._reader = None
