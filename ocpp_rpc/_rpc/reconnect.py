"""Reconnect policy: `Backoff` (exponential with jitter) as a tenacity wait,
and which connection failures are worth retrying."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from tenacity import RetryCallState
from tenacity.wait import wait_base

from ..errors import ConnectError


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: ``initial * factor ** (attempt - 1)``, capped at
    `maximum`, then stretched by a random fraction up to `jitter` (0.25 = up to
    25 % longer) so that many clients do not reconnect in lockstep."""

    initial: float = 1.0
    maximum: float = 10.0
    factor: float = 2.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0 or self.factor < 1 or self.jitter < 0:
            raise ValueError(f"invalid {self!r}")

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before reconnect attempt number `attempt` (from 1)."""
        try:
            base = self.initial * self.factor ** max(attempt - 1, 0)
        except OverflowError:
            base = self.maximum
        return min(base, self.maximum) * (1.0 + self.jitter * rand())


DEFAULT_BACKOFF = Backoff()


class BackoffWait(wait_base):
    """A tenacity wait that reads the backoff anew for every attempt, so that
    `reconfigure(backoff=...)` applies to a reconnect loop already running."""

    def __init__(self, current: Callable[[], Backoff]) -> None:
        self._current = current

    def __call__(self, retry_state: RetryCallState) -> float:
        # The first reconnect attempt already waited delay(1) (see the client).
        return self._current().delay(retry_state.attempt_number + 1)


class NotRetryable(ConnectError):
    """A failure that reconnecting cannot cure (e.g. the server no longer
    agrees to the pinned subprotocol)."""


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed reconnect attempt should be tried again."""
    return isinstance(exc, OSError | TimeoutError) and not isinstance(exc, NotRetryable)
