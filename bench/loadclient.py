"""A minimal HTTP/1.1 keep-alive client for the benchmarks' load generators.

The load generator shares the machine's two cores with the service under test: httpx spends about
2 ms of CPU per request, which would be billed to the measured throughput; this spends about 0.1 ms.
It is real HTTP on loopback all the same: every request goes through uvicorn and the whole app.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


class Connection:
    """One keep-alive connection (one per simulated wallet)."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, url: str, *, body: bytes = b"", content_type: str | None = None,
                      headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        parts = urlsplit(url)
        lines = [f"{method} {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1",
                 f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"transfer-encoding":
                raise RuntimeError("chunked responses are not expected here")
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
