"""HttpEmbedder against a real OpenAI-style server on 127.0.0.1, run in a thread."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import pytest

from keel.embeddings import EmbeddingError, HttpEmbedder

DIMENSION = 3
API_KEY = "test-key"


class RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), EmbeddingsHandler)
        self.requests: list[tuple[str, dict[str, str], Any]] = []


def fake_vector(text: str, dimension: int) -> list[float]:
    """Not unit length on purpose; distinct per text length."""
    return [float(len(text) + 1), 2.0, *([0.0] * (dimension - 2))]


class EmbeddingsHandler(BaseHTTPRequestHandler):
    """POST /<mode>/embeddings; mode picks the behaviour: ok, wrong-dim, fail, garbage, slow."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = cast(RecordingServer, self.server)
        server.requests.append((self.path, dict(self.headers), body))
        mode = self.path.strip("/").split("/")[0]
        if mode == "fail":
            self._reply(500, b"upstream exploded")
            return
        if mode == "garbage":
            self._reply(200, b"<html>not json</html>")
            return
        if mode == "slow":
            time.sleep(1.0)
        dimension = DIMENSION + 1 if mode == "wrong-dim" else DIMENSION
        data = [
            {"object": "embedding", "index": i, "embedding": fake_vector(text, dimension)}
            for i, text in enumerate(body["input"])
        ]
        data.reverse()  # servers may answer out of order; `index` says where each goes
        payload = {"object": "list", "data": data, "model": body["model"]}
        self._reply(200, json.dumps(payload).encode())

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest's output clean


@pytest.fixture(scope="module")
def server() -> Iterator[RecordingServer]:
    httpd = RecordingServer()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def base_url(server: RecordingServer, mode: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/{mode}"


async def test_returns_unit_vectors_in_input_order(server: RecordingServer) -> None:
    texts = ["a", "bbb", "cc", "", "dddd"]
    server.requests.clear()
    async with HttpEmbedder(
        base_url(server, "ok") + "/", "tiny", dimension=DIMENSION, api_key=API_KEY, batch_size=2
    ) as embedder:
        vectors = await embedder.embed(texts)
    assert len(vectors) == len(texts)
    for text, vector in zip(texts, vectors, strict=True):
        raw = fake_vector(text, DIMENSION)
        norm = math.hypot(*raw)
        assert vector == pytest.approx([v / norm for v in raw])
    # Five texts in batches of two: three requests, each authorised, in order.
    assert [body["input"] for _, _, body in server.requests] == [["a", "bbb"], ["cc", ""], ["dddd"]]
    for path, headers, body in server.requests:
        assert path == "/ok/embeddings"
        assert headers["Authorization"] == f"Bearer {API_KEY}"
        assert body["model"] == "tiny"


async def test_no_request_for_no_texts(server: RecordingServer) -> None:
    server.requests.clear()
    async with HttpEmbedder(base_url(server, "ok"), "tiny", dimension=DIMENSION) as embedder:
        assert await embedder.embed([]) == []
    assert server.requests == []


async def test_wrong_dimension_is_an_error(server: RecordingServer) -> None:
    async with HttpEmbedder(base_url(server, "wrong-dim"), "tiny", dimension=DIMENSION) as e:
        with pytest.raises(EmbeddingError, match="dimension 4, expected 3"):
            await e.embed(["hello"])


async def test_http_500_is_an_error(server: RecordingServer) -> None:
    async with HttpEmbedder(base_url(server, "fail"), "tiny", dimension=DIMENSION) as e:
        with pytest.raises(EmbeddingError, match="HTTP 500") as caught:
            await e.embed(["hello"])
    # Clients get a generic 502; the upstream's reply is only in the message, for logs.
    assert caught.value.status_code == 502
    assert caught.value.detail is not None
    assert "exploded" not in caught.value.detail
    assert "upstream exploded" in str(caught.value)


async def test_invalid_json_is_an_error(server: RecordingServer) -> None:
    async with HttpEmbedder(base_url(server, "garbage"), "tiny", dimension=DIMENSION) as e:
        with pytest.raises(EmbeddingError, match="invalid JSON"):
            await e.embed(["hello"])


async def test_timeout_is_an_error(server: RecordingServer) -> None:
    async with HttpEmbedder(
        base_url(server, "slow"), "tiny", dimension=DIMENSION, timeout=0.2
    ) as embedder:
        with pytest.raises(EmbeddingError, match="Timeout"):
            await embedder.embed(["hello"])


async def test_unreachable_server_is_an_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nothing listens there
    async with HttpEmbedder(f"http://127.0.0.1:{port}", "tiny", dimension=DIMENSION) as e:
        with pytest.raises(EmbeddingError, match="ConnectError"):
            await e.embed(["hello"])


async def test_rejects_one_string_and_bad_sizes(server: RecordingServer) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        HttpEmbedder(base_url(server, "ok"), "tiny", dimension=0)
    async with HttpEmbedder(base_url(server, "ok"), "tiny", dimension=DIMENSION) as e:
        with pytest.raises(TypeError):
            await e.embed("hello")
