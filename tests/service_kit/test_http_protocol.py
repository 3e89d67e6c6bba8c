"""service_kit.http_protocol: one send per response, and HTTP otherwise exactly as uvicorn's."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from service_kit.http_protocol import FLUSH_BYTES, GatheringTransport
from tests.support.servers import serve


class _Recorder:
    """Stands for the real socket transport (uvloop's): records what it is given, call by call."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.calls.append(bytes(data))

    def writelines(self, lines: list[bytes]) -> None:
        self.calls.append(b"".join(lines))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def write_eof(self) -> None:
        self.calls.append(b"<eof>")

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def test_writes_of_one_turn_go_out_together_in_order() -> None:
    async def scenario() -> tuple[list[bytes], list[bytes], list[bytes]]:
        real = _Recorder()
        transport = GatheringTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b"")
        transport.write(b'{"a":1}')
        before_turn = list(real.calls)
        await asyncio.sleep(0)  # the end of the turn flushes what nobody flushed
        after_turn = list(real.calls)
        transport.write(b"x" * (FLUSH_BYTES + 1))  # large: out at once, for flow control
        return before_turn, after_turn, real.calls

    before_turn, after_turn, calls = asyncio.run(scenario())
    assert before_turn == []
    assert after_turn == [b'HTTP/1.1 200 OK\r\n\r\n{"a":1}']
    assert calls[1] == b"x" * (FLUSH_BYTES + 1)


def test_close_and_eof_send_what_is_pending_and_abort_drops_it() -> None:
    async def scenario() -> tuple[_Recorder, _Recorder]:
        loop = asyncio.get_running_loop()
        closing = _Recorder()
        transport = GatheringTransport(closing, loop)  # type: ignore[arg-type]
        transport.write(b"last words")
        transport.write_eof()
        transport.close()
        aborting = _Recorder()
        transport = GatheringTransport(aborting, loop)  # type: ignore[arg-type]
        transport.write(b"never sent")
        transport.abort()
        await asyncio.sleep(0)
        return closing, aborting

    closing, aborting = asyncio.run(scenario())
    assert closing.calls == [b"last words", b"<eof>"] and closing.closed
    assert aborting.calls == [] and aborting.aborted
    # Anything else is the real transport's.
    assert GatheringTransport(_Recorder(), None).get_extra_info("peername") == ("127.0.0.1", 1)  # type: ignore[arg-type]


async def _json(_: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def _empty(_: Request) -> Response:
    return Response(status_code=204)


async def _stream(_: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(40):
            yield bytes([65 + i % 26]) * 10_000
            if i % 10 == 0:
                await asyncio.sleep(0)

    return StreamingResponse(chunks(), media_type="application/octet-stream")


async def _close(_: Request) -> Response:
    return Response(b"bye", headers={"Connection": "close"})


APP = Starlette(routes=[Route("/json", _json), Route("/empty", _empty, methods=["GET", "DELETE"]),
                        Route("/stream", _stream), Route("/close", _close)])


def _recv_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.fixture(scope="module")
def base_url() -> Any:
    with serve(APP, ready_path="/json") as url:
        yield url


def test_keep_alive_streaming_empty_and_head_responses_are_whole(base_url: str) -> None:
    with httpx.Client(base_url=base_url) as client:
        for _ in range(20):  # one connection, many responses
            assert client.get("/json").json() == {"ok": True}
        empty = client.delete("/empty")
        assert empty.status_code == 204 and empty.content == b""
        head = client.head("/json")
        assert head.status_code in (200, 405) and head.content == b""
        streamed = client.get("/stream")  # chunked, 400 KB: past the flush threshold, in pieces
        assert streamed.content == b"".join(bytes([65 + i % 26]) * 10_000 for i in range(40))
        assert client.get("/json").json() == {"ok": True}


def test_pipelined_requests_and_connection_close_lose_nothing(base_url: str) -> None:
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        request = f"GET /json HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        sock.sendall(request * 3 + f"GET /close HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        data = _recv_until_closed(sock)  # the server closes after the fourth answer
    assert data.count(b"HTTP/1.1 200 OK") == 4
    assert data.count(b'{"ok":true}') == 3
    assert data.endswith(b"bye")
