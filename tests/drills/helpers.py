"""What the drills share: a signed-in client of a real server, and concurrent writers."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from tests.test_cli import KeelServer

PASSWORD = "correct horse battery staple"
_serial = itertools.count(1)


def sign_up(server: KeelServer, name: str | None = None) -> dict[str, str]:
    """A new account on the server; the Authorization header of a session of it."""
    name = name or f"drill{next(_serial)}"
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        created = http.post(
            "/api/v1/auth/signup",
            json={"email": f"{name}@example.com", "username": name, "password": PASSWORD},
        )
        assert created.status_code == 201, created.text
        tokens = http.post("/api/v1/auth/login", data={"username": name, "password": PASSWORD})
        assert tokens.status_code == 200, tokens.text
    return {"Authorization": f"Bearer {tokens.json()['access_token']}"}


def org_path(server: KeelServer, headers: dict[str, str]) -> str:
    """`/api/v1/orgs/<id>`: the personal organization of the account behind `headers`."""
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as http:
        me = http.get("/api/v1/users/me")
        assert me.status_code == 200, me.text
    return f"/api/v1/orgs/{me.json()['id']}"  # a personal organization has its owner's id


@dataclass
class Writers:
    """Threads creating posts as fast as the server answers, recording every outcome."""

    server: KeelServer
    headers: dict[str, str]
    count: int = 8
    statuses: Counter[int | str] = field(default_factory=Counter)
    acknowledged: list[str] = field(default_factory=list)  # ids of posts answered 201
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Writers:
        for n in range(self.count):
            thread = threading.Thread(target=self._write, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _write(self, writer: int) -> None:
        posts = org_path(self.server, self.headers) + "/posts"
        with httpx.Client(base_url=self.server.base_url, headers=self.headers) as http:
            for n in itertools.count():
                if self._stop.is_set():
                    return
                body = {"title": f"writer {writer} post {n}", "content": "drill"}
                try:
                    response = http.post(posts, json=body, timeout=30)
                except httpx.TransportError as exc:
                    outcome: int | str = type(exc).__name__
                    created = None
                else:
                    outcome = response.status_code
                    created = response.json()["id"] if outcome == 201 else None
                with self._lock:
                    self.statuses[outcome] += 1
                    if created is not None:
                        self.acknowledged.append(created)
                if outcome != 201:
                    time.sleep(0.05)  # a client backing off, as Retry-After asks

    def acks(self) -> int:
        with self._lock:
            return len(self.acknowledged)

    def wait_for_acks(self, more: int, timeout: float) -> None:
        target = self.acks() + more
        deadline = time.monotonic() + timeout
        while self.acks() < target:
            assert time.monotonic() < deadline, f"writes stalled: {dict(self.statuses)}"
            time.sleep(0.02)


class SlowUpload:
    """An upload over a raw socket whose body the test sends when it likes (or never).

    `Expect: 100-continue` makes the wait deterministic: uvicorn sends `100 Continue` when
    the endpoint first asks for the body, so after `start()` the request is in flight.
    """

    def __init__(self, server: KeelServer, path: str, headers: dict[str, str], body: bytes) -> None:
        self.server, self.path, self.headers, self.body = server, path, headers, body
        self.sock: socket.socket | None = None
        self.early: bytes = b""  # a final answer sent instead of 100 Continue
        self._sent = 0
        self._dripper: threading.Thread | None = None
        self._stop_trickle = threading.Event()

    def start(self, first_bytes: int = 1) -> bool:
        """Send the head and the first bytes of the body; True if the server is reading it."""
        head = [f"POST {self.path} HTTP/1.1", "Host: 127.0.0.1", "Expect: 100-continue"]
        head += [f"Content-Length: {len(self.body)}"]
        head += [f"{name}: {value}" for name, value in self.headers.items()]
        self.sock = socket.create_connection(("127.0.0.1", self.server.port), timeout=120)
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        reply = _read_head(self.sock)
        if not reply.startswith(b"HTTP/1.1 100 "):
            self.early = reply
            return False
        self.sock.sendall(self.body[:first_bytes])
        self._sent = first_bytes
        return True

    def trickle(self, every: float) -> None:
        """Keep sending one byte every `every` seconds (a slow client) until `finish()`."""
        self._stop_trickle = threading.Event()

        def drip() -> None:
            assert self.sock is not None
            while not self._stop_trickle.wait(every) and self._sent < len(self.body) - 1:
                self.sock.sendall(self.body[self._sent : self._sent + 1])
                self._sent += 1

        self._dripper = threading.Thread(target=drip, daemon=True)
        self._dripper.start()

    def finish(self) -> None:
        """Send the rest of the body at once."""
        assert self.sock is not None
        if self._dripper is not None:
            self._stop_trickle.set()
            self._dripper.join()
        self.sock.sendall(self.body[self._sent :])

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """The final response: status, headers (lower-case names), body."""
        raw = self.early
        if not raw:
            assert self.sock is not None
            raw = _read_head(self.sock)
        head, _, rest = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length and self.sock is not None:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return int(status_line.split()[1]), headers, rest

    def close(self) -> None:
        self._stop_trickle.set()
        if self.sock is not None:
            self.sock.close()


def _read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data
