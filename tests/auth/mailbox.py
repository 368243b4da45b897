"""Read the mails Keel sent: without SMTP_HOST, each one is a `mail.outbox` log event."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

_TOKEN = re.compile(r"\n\n(\S+)\n\n")


def mails(logs: Sequence[Mapping[str, Any]], to: str | None = None) -> list[Mapping[str, Any]]:
    """The mails in `logs`, oldest first; only those to `to` (any case) if given."""
    sent = [entry for entry in logs if entry["event"] == "mail.outbox"]
    if to is not None:
        sent = [entry for entry in sent if str(entry["to"]).lower() == to.lower()]
    return sent


def token_in(mail: Mapping[str, Any]) -> str:
    """The token a mail carries, on a line of its own."""
    match = _TOKEN.search(str(mail["body"]))
    assert match, mail["body"]
    return match.group(1)
