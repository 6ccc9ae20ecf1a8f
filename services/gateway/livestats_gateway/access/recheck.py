"""Open streams re-check their credential: revoking a token (in Redis, in a token file, by
expiry) or ending a browser session (logout, expiry, its token revoked) closes its WebSockets
and SSE streams within `auth_recheck_s`.

One loop per process over every open connection, each distinct credential looked up once per
round, instead of a sleeping task per connection: an idle connection costs no task, and a
thousand sockets sharing a token cost one lookup.
"""

from __future__ import annotations

import asyncio
import logging
import time

from livestats_shared.auth import TokenStore
from livestats_shared.redis_client import UNAVAILABLE
from livestats_shared.sessions import SessionStore

from ..fanout.hub import Hub
from ..fanout.subscriber import Subscriber
from ..fanout.wire import CloseCode
from ..ops.background import BackgroundTasks
from .auth import is_session, resolve

log = logging.getLogger("livestats.gateway.recheck")
_CONCURRENT_LOOKUPS = 32  # tokens looked up at once: bounds the connections a round opens


class TokenRecheck:
    def __init__(self, interval_s: float, tokens: TokenStore, sessions: SessionStore, hub: Hub) -> None:
        self.interval_s = interval_s
        self.tokens = tokens
        self.sessions = sessions
        self.hub = hub
        self._tasks = BackgroundTasks(log, "revoked tokens keep their open streams")

    async def __aenter__(self) -> TokenRecheck:
        self._tasks.start(self._loop(), "token-recheck")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._tasks.stop()

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            # A socket opened just after a round is checked at the next one: within interval_s.
            await asyncio.sleep(self.interval_s)
            await self.check(self.hub.connections)
            log.debug("token re-check took %.3f s", time.monotonic() - started - self.interval_s)

    async def check(self, connections: set[Subscriber]) -> None:
        """Close every connection whose token or session no longer stands."""
        by_token: dict[str, list[Subscriber]] = {}
        for sub in list(connections):
            if sub.token is not None and sub.closed is None:
                by_token.setdefault(sub.token, []).append(sub)
        tokens = list(by_token)
        for i in range(0, len(tokens), _CONCURRENT_LOOKUPS):
            chunk = tokens[i : i + _CONCURRENT_LOOKUPS]
            # An answer half a round old is fresh enough; a revocation is seen within a round.
            answers = await asyncio.gather(
                *(resolve(self.tokens, self.sessions, t, max_age_s=self.interval_s / 2) for t in chunk),
                return_exceptions=True,
            )
            for token, answer in zip(chunk, answers, strict=True):
                if isinstance(answer, UNAVAILABLE):
                    # An outage is not a revocation; the hub tells clients about outages itself.
                    log.info("credential re-check skipped, Redis unavailable: %s", answer)
                elif isinstance(answer, BaseException):
                    # A bug, not a verdict on the token: said loudly, and the next round tries again.
                    log.error("credential re-check failed", exc_info=answer)
                elif answer is None:
                    why = "session ended" if is_session(token) else "token revoked"
                    for sub in by_token[token]:
                        sub.close(CloseCode.UNAUTHORIZED, why)
