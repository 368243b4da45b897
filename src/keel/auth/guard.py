"""Password checks under failure limits, per account and per client IP (OWASP).

Every password a user types (sign-in, password change, email change) is checked
through a `PasswordGuard`, so they all spend one budget per account:

- failures count per **account**: the account id, whichever spelling reached it
  (username or email, any case); an unknown login counts under a hash of its
  lower-cased text, so it locks exactly like a real one;
- failures also count per **client IP**, against a much higher limit
  (`RATE_LIMIT_LOGIN_IP`): it slows one client spraying many accounts, while many
  users behind one proxy can still sign in;
- a success clears the account's count and never counts against the IP.

An account out of failures is refused (429) before its password is checked, whether
the password is right or not: a guesser learns nothing once the budget is spent. The
price is that anyone can keep an account locked by failing on purpose; see the
README's security section for that trade-off.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated, Final
from uuid import UUID

from fastapi import Depends, Request

from keel.core.deps import ServicesDep, client_ip
from keel.core.passwords import PasswordHasher
from keel.core.ratelimit import RateLimiter, too_many_requests

ACCOUNT_SCOPE: Final = "password-failures-account"
IP_SCOPE: Final = "password-failures-ip"


def account_key(user_id: UUID | None, login: str) -> str:
    """The account's failure counter: its id, or a hash of an unknown login's normalized text.

    (Hashed, so what strangers type never lands in Redis as it was typed.)
    """
    if user_id is not None:
        return str(user_id)
    return "login:" + hashlib.sha256(login.strip().lower().encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class PasswordGuard:
    """Checks passwords for one client, counting failures per account and per IP."""

    limiter: RateLimiter
    account_limit: str
    ip_limit: str
    ip: str

    async def verify(
        self, passwords: PasswordHasher, account: str, password: str, hashed: str | None
    ) -> tuple[bool, str | None]:
        """`(valid, new_hash)` of `password` against `hashed`, or TooManyRequests.

        `hashed=None` (no such account) costs a dummy verification and is a failure.
        """
        ip_budget = await self.limiter.check(self.ip_limit, IP_SCOPE, self.ip)
        if not ip_budget.allowed:
            raise too_many_requests(ip_budget)
        # The attempt counts before the check, so concurrent guesses can't all slip in
        # under the limit; a success takes it back below.
        attempt = await self.limiter.hit(self.account_limit, ACCOUNT_SCOPE, account)
        if not attempt.allowed:
            raise too_many_requests(attempt)
        if hashed is None:
            await passwords.verify_dummy(password)
            valid, new_hash = False, None
        else:
            valid, new_hash = await passwords.verify(password, hashed)
        if valid:
            await self.clear_failures(account)
        else:
            await self.limiter.hit(self.ip_limit, IP_SCOPE, self.ip)
        return valid, new_hash

    async def clear_failures(self, account: str) -> None:
        """Give the account its full budget back (it proved itself, e.g. by a reset)."""
        await self.limiter.clear(self.account_limit, ACCOUNT_SCOPE, account)


async def get_password_guard(request: Request, services: ServicesDep) -> PasswordGuard:
    settings = services.settings
    return PasswordGuard(
        services.ratelimiter,
        settings.rate_limit_login,
        settings.rate_limit_login_ip,
        client_ip(request),
    )


PasswordGuardDep = Annotated[PasswordGuard, Depends(get_password_guard)]
