"""The HTTP/1.1 protocol `keel serve` runs: uvicorn's httptools protocol with header caps.

llhttp (under httptools) sets no limit on a request's head, and uvicorn buffers a header
field of any size: a 16 MB header was accepted. This protocol counts the request line
and the header fields as the parser reports them, and answers 431 and closes the
connection once they pass `MAX_HEADER_BYTES` or `MAX_HEADER_COUNT`. A field still being
buffered is bounded too: bytes that arrive while the head stays incomplete are counted.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import structlog
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from keel.config import get_settings

log = structlog.get_logger(__name__)


class HeadersTooLarge(Exception):
    """Raised from a parser callback to stop parsing; the protocol answers 431."""


class HeaderLimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering 431 to an oversized or overfull head."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = get_settings()  # cached; workers read the same environment
        self.max_head_bytes = settings.max_header_bytes
        self.max_header_count = settings.max_header_count
        self._head_open = False  # between the first byte of a request and its blank line
        self._head_bytes = 0  # request target and header fields parsed so far
        self._buffered_head_bytes = 0  # bytes received while the head stayed incomplete
        self._refused = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = True
        self._head_bytes = self._buffered_head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= self.max_header_count:
            self._refuse_from_parser()
        self._count(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        continuing = self._head_open
        super().data_received(data)
        if continuing and self._head_open and not self._refused:
            # The whole chunk went into a head that is still open, e.g. one endless field
            # the parser buffers before reporting it.
            self._buffered_head_bytes += len(data)
            if self._buffered_head_bytes > self.max_head_bytes:
                self._refuse()

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers every parser error with a 400; ours was a refused head.
        if self._refused:
            self._send_431()
        else:
            super().send_400_response(msg)

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.max_head_bytes:
            self._refuse_from_parser()

    def _refuse_from_parser(self) -> None:
        self._refused = True
        raise HeadersTooLarge  # stops the parser; uvicorn calls send_400_response

    def _refuse(self) -> None:
        self._refused = True
        self._send_431()

    def _send_431(self) -> None:
        log.info(
            "http.headers_too_large",
            max_header_bytes=self.max_head_bytes,
            max_header_count=self.max_header_count,
        )
        body = orjson.dumps(
            {
                "type": "about:blank",
                "title": "Request Header Fields Too Large",
                "status": 431,
                "detail": f"The request line and headers may take at most {self.max_head_bytes}"
                f" bytes in at most {self.max_header_count} header fields.",
            }
        )
        head = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: application/problem+json\r\n")
        head.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self.transport.close()
