"""Staying within the server's limits: its flood limits (a token bucket per
connection, and a count of bad messages), and its one-login-per-time-step
TOTP rule.

The server closes a connection (1008 ``flooding``) and ends its session
when it sends more than ``message_burst`` messages at once or more than
``messages_per_second`` sustained (defaults 100 and 50), or when more than
20 of its messages within 10 seconds are refused as ``access-denied``,
``malformed`` or ``bad-frame``. :class:`RateLimit` keeps a client below
both, with some headroom for the network's jitter.

The server accepts a TOTP code only for a time step later than the last
one it accepted for that user, so two logins within one 30-second step
cannot both succeed. :class:`TotpSteps` hands out steps so that logins of
this process never reuse one, waiting for the next step when needed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Final

#: The server's defaults (``messages_per_second``, ``message_burst`` in
#: ``organism.toml``; the bad-message limit and window are fixed).
SERVER_MESSAGES_PER_SECOND: Final = 50.0
SERVER_MESSAGE_BURST: Final = 100.0
SERVER_MAX_BAD_MESSAGES: Final = 20
SERVER_BAD_WINDOW: Final = 10.0

#: The RFC 6238 step the server uses, seconds.
TOTP_STEP_SECONDS: Final = 30


@dataclass(frozen=True)
class RateLimit:
    """How fast a client sends, per connection.

    The defaults are the server's defaults less 10%: a burst of 90, then
    45 messages a second; at most 18 refused-as-bad messages within 10
    seconds, counting those whose verdict may still be on its way: a
    message that started a thread until its first frame arrives, and a
    continuation whose root tag is not in the catalog for
    ``verdict_seconds``.

    Attributes:
        messages_per_second: sustained rate.
        burst: messages that may go at once after a quiet spell.
        max_bad_messages: bad messages (``access-denied``, ``malformed``,
            ``bad-frame``) allowed within ``bad_window``.
        bad_window: seconds bad messages are counted over.
        verdict_seconds: how long a continuation of a thread whose root tag
            is not in the catalog counts as possibly bad (the server does
            not acknowledge a continuation, so the client assumes that a
            refusal would have arrived by then).
    """

    messages_per_second: float = SERVER_MESSAGES_PER_SECOND * 0.9
    burst: float = SERVER_MESSAGE_BURST * 0.9
    max_bad_messages: int = SERVER_MAX_BAD_MESSAGES - 2
    bad_window: float = SERVER_BAD_WINDOW
    verdict_seconds: float = 1.0

    @classmethod
    def for_server(
        cls,
        messages_per_second: float = SERVER_MESSAGES_PER_SECOND,
        message_burst: float = SERVER_MESSAGE_BURST,
        *,
        headroom: float = 0.9,
    ) -> RateLimit:
        """The limit for a server configured with ``messages_per_second``
        and ``message_burst``, keeping ``headroom`` of each."""
        return cls(messages_per_second * headroom, max(1.0, message_burst * headroom))


class _Limiter:
    """The state of a :class:`RateLimit` on one connection."""

    __slots__ = ("limit", "tokens", "refilled", "bad", "continuations", "clock")

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.clock = clock
        self.tokens = limit.burst
        self.refilled = clock()
        self.bad: deque[float] = deque()
        self.continuations: deque[float] = deque()

    def reset(self) -> None:
        """A new connection: the server starts it with a full bucket and no
        bad messages counted."""
        self.tokens = self.limit.burst
        self.refilled = self.clock()
        self.bad.clear()
        self.continuations.clear()

    def record_bad(self) -> None:
        """The server refused a message as bad."""
        self.bad.append(self.clock())

    def record_continuation(self) -> None:
        """A continuation that might be refused as bad was sent."""
        self.continuations.append(self.clock())

    def delay(self, unresolved: int) -> float:
        """Seconds to wait before the next message may go; 0 takes its
        token. ``unresolved``: messages sent whose verdict is not known yet
        (besides recent continuations)."""
        now = self.clock()
        limit = self.limit
        tokens = self.tokens + (now - self.refilled) * limit.messages_per_second
        if tokens > limit.burst:
            tokens = limit.burst
        self.tokens = tokens
        self.refilled = now
        if tokens >= 1.0 and not self.bad and not self.continuations and unresolved + 1 <= limit.max_bad_messages:
            self.tokens = tokens - 1.0
            return 0.0
        return self._slow_delay(now, unresolved)

    def _slow_delay(self, now: float, unresolved: int) -> float:
        limit = self.limit
        while self.bad and now - self.bad[0] >= limit.bad_window:
            self.bad.popleft()
        while self.continuations and now - self.continuations[0] >= limit.verdict_seconds:
            self.continuations.popleft()
        wait = 0.0
        if self.tokens < 1.0:
            wait = (1.0 - self.tokens) / limit.messages_per_second
        possibly_bad = len(self.bad) + len(self.continuations) + unresolved
        if possibly_bad + 1 > limit.max_bad_messages:
            # Wait until enough of what counts ages out of its window.
            ages = sorted(
                [limit.bad_window - (now - at) for at in self.bad]
                + [limit.verdict_seconds - (now - at) for at in self.continuations]
            )
            excess = possibly_bad + 1 - limit.max_bad_messages
            if excess <= len(ages):
                wait = max(wait, ages[excess - 1], 0.001)
            else:
                # Only unresolved messages are in the way: their verdicts
                # will come.
                wait = max(wait, 0.05)
        if wait > 0.0:
            return wait
        self.tokens -= 1.0
        return 0.0

    async def acquire(self, deadline: float | None, unresolved: Callable[[], int]) -> bool:
        """Waits until a message may go, and takes its token; ``False``
        when that would be after ``deadline`` (a :func:`time.monotonic`
        instant)."""
        while True:
            wait = self.delay(unresolved())
            if wait == 0.0:
                return True
            if deadline is not None and self.clock() + wait > deadline:
                return False
            await asyncio.sleep(wait)


class TotpSteps:
    """The TOTP time steps logins of this process have used, per server and
    user, so that no step is used twice (the server would refuse the second
    login as a replay).

    One instance, :data:`TOTP_STEPS`, is shared by every client of the
    process; a client can be given its own.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], int] = {}

    def reserve(self, server: str, user: str) -> tuple[int, float]:
        """Claims the next step for a login of ``user`` at ``server``: the
        current one if unused, else the one after the last used. Returns the
        step and how many seconds to wait until it begins (0 for the current
        step)."""
        with self._lock:
            now = self._clock()
            current = int(now // TOTP_STEP_SECONDS)
            step = max(current, self._last.get((server, user), current - 1) + 1)
            self._last[(server, user)] = step
            return step, max(0.0, step * TOTP_STEP_SECONDS - now)

    def used(self, server: str, user: str) -> int | None:
        """The last step claimed for ``user`` at ``server``."""
        with self._lock:
            return self._last.get((server, user))


#: The steps every client of this process shares by default.
TOTP_STEPS: Final = TotpSteps()
