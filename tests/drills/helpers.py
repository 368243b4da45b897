"""What the drills share: a signed-in client of a real server, and concurrent writers."""

from __future__ import annotations

import itertools
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
        with httpx.Client(base_url=self.server.base_url, headers=self.headers) as http:
            for n in itertools.count():
                if self._stop.is_set():
                    return
                body = {"title": f"writer {writer} post {n}", "content": "drill"}
                try:
                    response = http.post("/api/v1/posts", json=body, timeout=30)
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
