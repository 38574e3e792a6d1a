"""The cluster's own exceptions."""

from __future__ import annotations

__all__ = ("ClusterUnavailable", "NotConnected")


class ClusterUnavailable(OSError):
    """Redis cannot be reached (or refused us): joining the cluster failed, or a
    call, lookup or registration could not go through Redis.

    A call that raises it was not retried; it was delivered only in the rare
    case where Redis failed at the very moment the call was being sent.
    """


class NotConnected(LookupError):
    """The charger `identity` is connected nowhere in the cluster (or, for a
    single server, not to this server): the call was not delivered."""

    def __init__(self, identity: str) -> None:
        self.identity = identity
        super().__init__(f"{identity!r} is not connected")

    def __reduce__(self) -> tuple[type[NotConnected], tuple[str]]:
        return type(self), (self.identity,)
