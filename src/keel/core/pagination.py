"""Opaque, signed keyset cursors: clients can pass them back, not forge or edit them."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from datetime import datetime
from uuid import UUID

from keel.core.errors import BadRequest

_SIGNATURE_BYTES = 12
MAX_CURSOR_LENGTH = 512


class InvalidCursor(BadRequest):
    slug, title = "invalid-cursor", "Invalid Cursor"


class CursorCodec:
    """Encodes a keyset position (a timestamp and an id) as an HMAC-signed token."""

    def __init__(self, secret: str, *, purpose: str) -> None:
        self._key = hmac.new(secret.encode(), f"keel/cursor/{purpose}".encode(), "sha256").digest()

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]

    def encode(self, created_at: datetime, item_id: UUID) -> str:
        payload = json.dumps([created_at.isoformat(), str(item_id)], separators=(",", ":"))
        raw = payload.encode()
        return base64.urlsafe_b64encode(self._sign(raw) + raw).rstrip(b"=").decode()

    def decode(self, cursor: str) -> tuple[datetime, UUID]:
        """The position in `cursor`; InvalidCursor (400) if malformed or tampered with."""
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise InvalidCursor("The cursor is too long.")
        try:
            blob = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError) as exc:
            raise InvalidCursor("The cursor is malformed.") from exc
        signature, raw = blob[:_SIGNATURE_BYTES], blob[_SIGNATURE_BYTES:]
        if not hmac.compare_digest(signature, self._sign(raw)):
            raise InvalidCursor("The cursor is not one this server issued.")
        try:
            created_at, item_id = json.loads(raw)
            return datetime.fromisoformat(created_at), UUID(item_id)
        except (ValueError, TypeError) as exc:  # signed but unreadable: a key/format change
            raise InvalidCursor("The cursor is malformed.") from exc
