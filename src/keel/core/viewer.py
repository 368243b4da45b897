"""Who is calling: the `Viewer`, and the per-process cache that `LISTEN/NOTIFY` keeps honest.

Authorization needs a few facts about a signed-in caller, not their whole account
row: who, which session, the platform flags, and their role in each organization
they belong to. A `Viewer` carries those facts; domains take it instead of the ORM `User`.

Resolving a viewer means a database lookup (is the session open, is the account
active?). `ViewerCache` keeps the answer per (user, token family) so a hot read
costs no extra round trip. It stays correct because:
- migration 0006's triggers `NOTIFY keel_viewer` when a session is revoked or an
  account is deactivated, deleted, or changes role or password (and 0012's when a
  membership is added, changed or removed), and
  `InvalidationListener` evicts the matching entries in every worker;
- the request that revokes also evicts locally, before it answers;
- while the listening connection is down nothing is cached (the listener clears
  the cache and reports it unusable), so a missed notification can't leave a
  stale entry;
- every entry expires after a TTL ceiling regardless.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final
from uuid import UUID

import asyncpg
import structlog
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

INVALIDATION_CHANNEL: Final = "keel_viewer"
RECONNECT_SECONDS: Final = 1.0
SESSION_INFO_KEY: Final = "viewer_cache"  # where write sessions carry the process's cache

log = structlog.get_logger(__name__)


class Role(StrEnum):
    """A member's role in an organization, strongest first (see `keel.orgs.permissions`)."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"

    @property
    def rank(self) -> int:
        """Higher is stronger: owner 3 ... viewer 0."""
        return _ROLE_RANK[self]


_ROLE_RANK: Final = {Role.OWNER: 3, Role.ADMIN: 2, Role.MEMBER: 1, Role.VIEWER: 0}
NO_MEMBERSHIPS: Final[Mapping[UUID, Role]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Viewer:
    """What authorization needs to know about the caller."""

    user_id: UUID
    family_id: UUID
    is_superuser: bool
    is_active: bool
    # organization id -> the caller's role there; loaded with the rest, in one statement.
    memberships: Mapping[UUID, Role] = field(default=NO_MEMBERSHIPS)

    def role_in(self, organization_id: UUID) -> Role | None:
        return self.memberships.get(organization_id)


type ViewerKey = tuple[UUID, UUID]


class ViewerCache:
    """Bounded (user, family) → Viewer map with a TTL ceiling, usable only while listening."""

    def __init__(self, *, max_entries: int, ttl_seconds: float) -> None:
        self._entries: OrderedDict[ViewerKey, tuple[Viewer, float]] = OrderedDict()
        self._max_entries = max_entries
        self._ttl = ttl_seconds
        self._generation = 0  # bumped by every eviction: a lookup that straddles one is not kept
        self.usable = False  # set by the listener while its connection is up

    @property
    def generation(self) -> int:
        """Read before a database lookup; pass to `put` so a lookup older than an eviction
        is never cached."""
        return self._generation

    def get(self, user_id: UUID, family_id: UUID) -> Viewer | None:
        if not self.usable:
            return None
        entry = self._entries.get((user_id, family_id))
        if entry is None:
            return None
        viewer, expires = entry
        if time.monotonic() >= expires:
            self._entries.pop((user_id, family_id), None)
            return None
        return viewer

    def put(self, viewer: Viewer, generation: int) -> None:
        if not self.usable or self._max_entries <= 0 or generation != self._generation:
            return
        key = (viewer.user_id, viewer.family_id)
        self._entries[key] = (viewer, time.monotonic() + self._ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def evict_user(self, user_id: UUID) -> None:
        self._generation += 1
        for key in [key for key in self._entries if key[0] == user_id]:
            del self._entries[key]

    def evict_family(self, family_id: UUID) -> None:
        self._generation += 1
        for key in [key for key in self._entries if key[1] == family_id]:
            del self._entries[key]

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()

    def apply(self, payload: str) -> None:
        """Act on one notification: `user:<uuid>` or `family:<uuid>`; anything else clears."""
        kind, _, value = payload.partition(":")
        try:
            target = UUID(value)
        except ValueError:
            self.clear()
            return
        if kind == "user":
            self.evict_user(target)
        elif kind == "family":
            self.evict_family(target)
        else:
            self.clear()

    def __len__(self) -> int:
        return len(self._entries)


def evict_after_commit(
    session: AsyncSession, *, user_id: UUID | None = None, family_id: UUID | None = None
) -> None:
    """Evict from this process's cache once `session` commits, ahead of the NOTIFY.

    The NOTIFY reaches every worker, this one included, within milliseconds; evicting
    here as well means the caller's very next request can't beat it.
    """
    cache = session.info.get(SESSION_INFO_KEY)
    if not isinstance(cache, ViewerCache):
        return

    def evict(_: object) -> None:
        if user_id is not None:
            cache.evict_user(user_id)
        if family_id is not None:
            cache.evict_family(family_id)

    event.listen(session.sync_session, "after_commit", evict, once=True)


class InvalidationListener:
    """One dedicated connection that LISTENs for invalidations and reconnects when lost."""

    def __init__(
        self,
        dsn: str,
        cache: ViewerCache,
        *,
        connect_timeout: float = 5.0,
        on_lost: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._dsn = dsn
        self._cache = cache
        self.on_lost = on_lost
        self._connect_timeout = connect_timeout
        self._connection: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()

    @property
    def listening(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    async def start(self) -> None:
        """Listen now if the database answers; keep retrying in the background either way."""
        with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
            await self._connect()
        self._task = asyncio.create_task(self._supervise(), name="viewer-invalidation")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._go_deaf()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close(timeout=1)
            self._connection = None

    async def _connect(self) -> None:
        connection = await asyncpg.connect(
            self._dsn,
            timeout=self._connect_timeout,
            server_settings={"application_name": "keel-viewer-listener"},
        )
        connection.add_termination_listener(self._on_terminated)
        await connection.add_listener(INVALIDATION_CHANNEL, self._on_notify)
        self._connection = connection
        self._lost.clear()
        # Anything cached before this point may have missed a notification.
        self._cache.clear()
        self._cache.usable = True
        log.info("viewer_cache.listening")

    async def _supervise(self) -> None:
        while True:
            if self.listening:
                await self._lost.wait()
                if self.on_lost is not None:
                    # The server likely restarted: the pools' idle connections are dead too.
                    await self.on_lost()
            self._go_deaf()
            try:
                await self._connect()
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.debug("viewer_cache.reconnect_failed", error=type(exc).__name__)
                await asyncio.sleep(RECONNECT_SECONDS)

    def _go_deaf(self) -> None:
        if self._cache.usable:
            log.warning("viewer_cache.listener_lost")
        self._cache.usable = False
        self._cache.clear()

    def _on_terminated(self, connection: Any) -> None:
        if connection is self._connection:
            self._connection = None
            self._go_deaf()
            self._lost.set()

    def _on_notify(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        self._cache.apply(payload)
