"""uvicorn's HTTP/1.1 protocol (httptools) with one send per response instead of two.

uvicorn writes a response's status line and headers when the app sends ``http.response.start`` and
the body when it sends ``http.response.body``: two ``send()`` system calls for every small JSON
answer, and on loopback or a LAN each one also wakes the peer. A profile of the issuer under load
showed the socket writes among its largest costs. Here the transport given to uvicorn gathers what
is written and hands it to the real transport once: when the response is complete, or at the end of
the event-loop turn for anything else (a streamed body's chunks, uvicorn's own error answers), or as
soon as it reaches :data:`FLUSH_BYTES`, so that a large body still meets the real transport's flow
control. Nothing else changes: same parser, same ASGI behaviour.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Pending output larger than this goes out at once, without waiting for the end of the turn.
FLUSH_BYTES = 64 * 1024


class GatheringTransport:
    """A transport proxy that sends the writes of one event-loop turn together, in order.

    ``close()`` and ``write_eof()`` send what is pending first; ``abort()`` drops it, as the real
    transport drops its own buffer. Everything else is the real transport's.
    """

    __slots__ = ("_transport", "_loop", "_pending", "_size")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None
        self._size = 0

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._pending is None:
            self._pending = [data]
            self._size = len(data)
            self._loop.call_soon(self.flush)
        else:
            self._pending.append(data)
            self._size += len(data)
        if self._size >= FLUSH_BYTES:
            self.flush()

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Hand what is pending to the real transport (one write; uvloop sends it with one call)."""
        pending = self._pending
        if not pending:
            return
        self._pending = None
        self._size = 0
        if self._transport.is_closing():
            return  # the real transport would only warn and drop it
        if len(pending) == 1:
            self._transport.write(pending[0])
        else:
            self._transport.writelines(pending)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending = None
        self._size = 0
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._size + self._transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GatheringHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a :class:`GatheringTransport`, flushed as each response ends."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._gathering = GatheringTransport(transport, self.loop)
        super().connection_made(self._gathering)  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        # Not at the end of the loop turn: other connections' work may run first, adding latency.
        self._gathering.flush()
        super().on_response_complete()
